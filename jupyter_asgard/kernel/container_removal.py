"""The user's named containers, listed with the kernels in them, and removed from the nodes they are on.

What a user installed in a named container stays in one node's enroot storage until someone removes it, and
the nodes' disks fill up with containers nobody uses. enroot removes a container only on its node and as its
user, so a removal is a short Slurm job of its own on each node the container is recorded on
(container_steps.container_job_argv: it fails rather than wait in the queue where the node has no room) that
runs ``enroot remove --force pyxis_NAME``; the record goes with it (container_places.py). A container gone from
the node already (removed by hand, the node reinstalled) is forgotten, and said so: that is what was asked.

Refused: a container one of the server's kernels runs in on that node (its files would go from under it), and
one a kernel is starting in there (container_starts.py). The job runs with the environment of a kernel's step,
so that enroot looks where Pyxis made the container.

No server imports: GET/DELETE /asgard/api/containers (server/handlers.py) and `jupyter asgard containers`
without a server (cli/containers.py) both call it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..containers.container_starts import CONTAINER_STARTS, ContainerStarts
from ..containers.container_steps import (
    CONTAINER_JOB_WAIT,
    ENROOT_NAME_PREFIX,
    NOTHING_MADE,
    container_job_argv,
    container_name_problem,
    remove_container_command,
)
from ..containers.step_failures import summarize
from ..errors import AsgardError, BadRequest, Conflict, NotFound, SlurmError
from ..slurm.slurm_client import CommandResult, SlurmClient
from ..slurm.slurm_commands import holder_comment, job_name, scancel_named_argv
from .container_places import ContainerPlace, ContainerPlaces, grouped
from .kernel_env import step_environment

JOB_PREFIX = "remove-"  # the job is job_name(JOB_PREFIX + id): an Asgard job, swept with its holder's death
REMOVAL_MINUTES = 10  # the job's time limit: a container of many files on a slow disk takes minutes to delete
REMOVAL_TIMEOUT = CONTAINER_JOB_WAIT + REMOVAL_MINUTES * 60 + 30  # seconds for srun: room, the job, its end
LISTED = "`jupyter asgard containers` lists your containers and their nodes"
# What srun says when the job cannot run, and what to do about it (the first that matches; {node}, {partition}
# and {name} filled in).
REMOVAL_HINTS = {
    "Requested nodes are busy": "{node} has no room for the short removal job now (other jobs hold all of its "
    "CPUs or memory): try again later",
    "Invalid partition name": "the partition its kernel ran in ({partition}) is gone: remove the container by "
    f"hand with: srun -w {{node}} enroot remove --force {ENROOT_NAME_PREFIX}{{name}}",
    "Requested node configuration is not available": "{node} is down, or not in the partition its kernel ran in "
    "({partition}): see sinfo -n {node}",
    "authentication": "Slurm did not accept this host's credentials (munge): ask your site's admins",
    "Permission denied": "some of the container's files are not yours to delete (made as root inside it with "
    "--container-remap-root): ask your site's admins to remove it",
}
# srun's words for a node Slurm no longer has: its containers went with it.
NODE_GONE = "Invalid node name specified"


@dataclass(frozen=True)
class ContainerKernel:
    """A kernel of the server that runs in a named container on a node."""

    kernel_id: str
    container: str
    node: str

    def to_json(self) -> dict[str, str]:
        return {"kernel_id": self.kernel_id, "node": self.node}


Kernels = Callable[[], list[ContainerKernel]]  # the kernels running at the moment it is called


def listing(places: list[ContainerPlace], kernels: list[ContainerKernel]) -> list[dict[str, Any]]:
    """One entry per container (container_places.grouped), each with "kernels": [{"kernel_id", "node"}], the
    kernels that run in it: what the side panel and `jupyter asgard containers` show."""
    return [
        {**entry, "kernels": [kernel.to_json() for kernel in kernels if kernel.container == entry["name"]]}
        for entry in grouped(places)
    ]


GONE_FROM_STORAGE = "removed from the node's storage before"
NODE_LEFT = "Slurm has no such node any more"


@dataclass(frozen=True)
class Removal:
    """The container's removal from one node."""

    node: str
    gone_already: bool  # nothing of it was there: it had been removed before (or the node is gone), forgotten
    why_gone: str = GONE_FROM_STORAGE

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "gone_already": self.gone_already}

    def words(self, name: str) -> str:
        if self.gone_already:
            return f"{name} was no longer on {self.node} ({self.why_gone}): forgotten"
        return f"removed {name} from {self.node}"


def removal_json(name: str, removals: list[Removal]) -> dict[str, Any]:
    """DELETE's answer: {"name", "removed": [{"node", "gone_already"}], "message"}."""
    return {
        "name": name,
        "removed": [removal.to_json() for removal in removals],
        "message": "; ".join(removal.words(name) for removal in removals),
    }


def recorded_on(name: str, node: str | None, places: list[ContainerPlace]) -> list[ContainerPlace]:
    """The places of name to remove it from: on node, or on every node it is recorded on; NotFound where none."""
    if not places:
        raise NotFound(
            f"no container {name!r} of yours is recorded on any node: {LISTED}",
            hint="a container is recorded once a kernel of yours has run in it; remove one made otherwise on its "
            f"node with: srun -w NODE enroot remove --force {ENROOT_NAME_PREFIX}{name}",
        )
    found = [place for place in places if node in (None, place.node)]
    if not found:
        nodes = ", ".join(place.node for place in places)
        raise NotFound(f"your container {name} is not recorded on {node}: it is on {nodes}")
    return found


def in_use(name: str, kernels: list[ContainerKernel]) -> Conflict:
    """The refusal to remove a container kernels run in, naming them."""
    running = ", ".join(f"{kernel.kernel_id} on {kernel.node}" for kernel in kernels)
    one = len(kernels) == 1
    which, runs, them = ("kernel", "runs", "it") if one else ("kernels", "run", "them")
    return Conflict(
        f"your container {name} is in use: {which} {running} {runs} in it; removing the container now would "
        f"delete its files from under {them}",
        hint=f"shut the {which} down first (the notebook's Kernel menu, or the side panel), then remove the "
        "container; what was installed in it goes with it",
    )


def kernels_in(name: str, nodes: set[str], kernels: list[ContainerKernel]) -> list[ContainerKernel]:
    return [kernel for kernel in kernels if kernel.container == name and kernel.node in nodes]


def gone_already(lines: list[str], name: str) -> bool:
    """Whether enroot said it has no such container (not srun finding no enroot, which says the same words)."""
    path_end = "/" + ENROOT_NAME_PREFIX + name
    return any(NOTHING_MADE in line and line.rstrip().endswith(path_end) for line in lines)


def removal_failure(place: ContainerPlace, result: CommandResult) -> SlurmError:
    """The failed removal from one node, in srun's and enroot's words, with what to do."""
    # step_failures' hints are a kernel start's, not this job's: its words only.
    text, _start_hint = summarize(result.stderr.splitlines() + result.stdout.splitlines())
    hint = next((hint for needle, hint in REMOVAL_HINTS.items() if needle in text), "") or (
        "see whether {node} is up (sinfo -n {node}) and try again, or remove the container by hand: "
        f"srun -w {{node}} enroot remove --force {ENROOT_NAME_PREFIX}{{name}}"
    )
    return SlurmError(
        f"removing {place.name} from {place.node} failed: {text or f'srun exited with {result.returncode}'}",
        hint=hint.format(node=place.node, partition=place.partition or "Slurm's default", name=place.name),
    )


def outcome(place: ContainerPlace, result: CommandResult) -> Removal:
    """What the removal job did on its node; the failure raised where it did not remove the container."""
    lines = result.stderr.splitlines() + result.stdout.splitlines()
    if result.returncode == 0:
        return Removal(place.node, False)
    if gone_already(lines, place.name):
        return Removal(place.node, True)
    if any(NODE_GONE in line for line in lines):
        return Removal(place.node, True, NODE_LEFT)
    raise removal_failure(place, result)


def combined(name: str, removals: list[Removal], failures: list[AsgardError]) -> AsgardError:
    """One refusal for a removal from several nodes of which some failed: each failure, and what did go."""
    if len(failures) == 1 and not removals:
        return failures[0]
    done = [removal.words(name) for removal in removals]
    problems = [failure.message for failure in failures] + done
    return AsgardError(
        "; ".join(problems), problems=problems, hint=failures[0].hint, status=max(f.status for f in failures)
    )


class ContainerRemoval:
    """The user's containers as recorded (container_places.py), and their removal with the client's Slurm."""

    def __init__(
        self,
        client: SlurmClient,
        places: ContainerPlaces | None = None,
        starts: ContainerStarts = CONTAINER_STARTS,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.places = places or ContainerPlaces()
        self.starts = starts  # the process's container starts: none may be under way, and new ones wait
        self.env = dict(env) if env is not None else step_environment(os.environ, {}, {})

    async def listing(self, kernels: list[ContainerKernel]) -> list[dict[str, Any]]:
        return listing(await asyncio.to_thread(self.places.places), kernels)

    async def remove(self, name: str, node: str | None, kernels: Kernels) -> list[Removal]:
        """name removed from node (None: from every node it is recorded on), on all of them at once. BadRequest,
        NotFound, Conflict before anything is done; where some nodes failed, an error saying which and why
        (and which were removed)."""
        if problem := container_name_problem(name):
            raise BadRequest(problem)
        places = recorded_on(name, node, await asyncio.to_thread(self.places.places, name))
        if busy := kernels_in(name, {place.node for place in places}, kernels()):
            raise in_use(name, busy)
        outcomes = await asyncio.gather(*(self._remove(place, kernels) for place in places), return_exceptions=True)
        removals = [outcome for outcome in outcomes if isinstance(outcome, Removal)]
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if unexpected := [failure for failure in failures if not isinstance(failure, AsgardError)]:
            raise unexpected[0]
        if failures:
            raise combined(name, removals, [failure for failure in failures if isinstance(failure, AsgardError)])
        return removals

    async def _remove(self, place: ContainerPlace, kernels: Kernels) -> Removal:
        """The removal from one node, under the node's start locks until it is forgotten: a start that made the
        container anew right after would be recorded, and must not be forgotten with the removed one."""
        async with self.starts.removing(place.node, place.name):
            if busy := kernels_in(place.name, {place.node}, kernels()):  # one started since remove() looked
                raise in_use(place.name, busy)
            removal = outcome(place, await self._job(place))
            await asyncio.to_thread(self.places.forget, place.name, place.node)
        return removal

    async def _job(self, place: ContainerPlace) -> CommandResult:
        """enroot remove as the user, in a job of its own on the container's node; its srun's result."""
        name = job_name(JOB_PREFIX + uuid.uuid4().hex[:12])
        argv = container_job_argv(
            name,
            holder_comment(socket.gethostname(), os.getpid()),
            place.node,
            place.partition,
            REMOVAL_MINUTES,
            remove_container_command(place.name),
            srun=self.client.command("srun"),
        )
        try:
            return await self.client.run(argv, timeout=REMOVAL_TIMEOUT, env=self.env)
        except SlurmError as error:  # srun did not end in time and was killed: its job must end too
            await self.client.run(scancel_named_argv(name))
            raise SlurmError(f"removing {place.name} from {place.node} failed: {error}") from None
        except asyncio.CancelledError:
            await self.client.run(scancel_named_argv(name))
            raise
