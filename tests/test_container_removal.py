"""Listing and removing the user's named containers (kernel/container_removal.py) without a cluster: srun is
replaced by a fake that answers as srun and enroot do on a node (their words taken from the real ones). The
real removals, by a server and by the command, and another user's attempts, are in
tests/test_container_removal_jobs.py; the command's own checks and table in tests/test_cli_containers.py."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import cast

import pytest

from jupyter_asgard.containers.container_starts import ContainerStarts
from jupyter_asgard.errors import AsgardError, BadRequest, Conflict, NotFound, SlurmError
from jupyter_asgard.kernel.container_places import ContainerPlace, ContainerPlaces
from jupyter_asgard.kernel.container_removal import (
    REMOVAL_TIMEOUT,
    ContainerKernel,
    ContainerRemoval,
    gone_already,
    listing,
    removal_json,
)
from jupyter_asgard.slurm.slurm_client import CommandResult, SlurmClient

REMOVED = CommandResult(0, "", "", "srun")
# enroot remove's own words for a container it has no files of, as srun relays them.
NOT_THERE = CommandResult(
    1,
    "",
    "[ERROR] No such file or directory: /var/lib/enroot/data/user-1000/pyxis_env\n"
    "srun: error: gpu01: task 0: Exited with exit code 1\n",
    "srun",
)
NO_ENROOT = CommandResult(
    2,
    "",
    "slurmstepd: error: execve(): enroot: No such file or directory\n"
    "srun: error: gpu01: task 0: Exited with exit code 2\n",
    "srun",
)
NO_ROOM = CommandResult(
    1,
    "",
    "srun: job 3 queued and waiting for resources\n"
    "srun: error: Unable to allocate resources: Requested nodes are busy\n",
    "srun",
)
NO_NODE = CommandResult(1, "", "srun: error: Unable to allocate resources: Invalid node name specified\n", "srun")
NO_MUNGE = CommandResult(
    1,
    "",
    'srun: error: Munge encode failed: Failed to access "/run/munge/munge.socket.2": Permission denied\n'
    "srun: error: Unable to allocate resources: Protocol authentication error\n",
    "srun",
)


class FakeSrun:
    """Answers each removal job as srun would on its node (an answer, or an exception raised); records every
    command line with its environment, and waits on `hold` where a test keeps a job running."""

    def __init__(self, answers: dict[str, CommandResult | Exception]) -> None:
        self.answers = answers
        self.calls: list[tuple[list[str], dict[str, str] | None]] = []
        self.hold: asyncio.Event | None = None
        self.running = asyncio.Event()  # a removal job has started
        self.ended = 0  # removal jobs that have ended

    @staticmethod
    def command(name: str) -> str:
        return f"/opt/slurm/bin/{name}"

    async def run(
        self, argv: list[str], timeout: float | None = None, env: dict[str, str] | None = None
    ) -> CommandResult:
        self.calls.append((argv, env))
        if argv[0].endswith("scancel"):
            return CommandResult(0, "", "", "scancel")
        assert timeout == REMOVAL_TIMEOUT
        self.running.set()
        if self.hold is not None:
            await self.hold.wait()
        self.ended += 1
        answer = self.answers[next(arg for arg in argv if arg.startswith("--nodelist=")).split("=")[1]]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def nodes(self) -> list[str]:
        """The nodes removal jobs ran on, in order."""
        return [arg.split("=")[1] for argv, _env in self.calls for arg in argv if arg.startswith("--nodelist=")]

    def cancelled(self) -> list[str]:
        return [argv[-1] for argv, _env in self.calls if argv[0].endswith("scancel")]


@pytest.fixture
def places(tmp_path: Path) -> ContainerPlaces:
    """The user's record, holding env on gpu01 and gpu02 (newest) and other on gpu01."""
    record = ContainerPlaces(lambda: tmp_path / "containers")
    record.seen(ContainerPlace("env", "gpu01", "/enroot/pt.sqsh", True, "gpu"), False)
    record.seen(ContainerPlace("other", "gpu01", "/enroot/pt.sqsh", None, ""), False)
    record.seen(ContainerPlace("env", "gpu02", "/enroot/pt.sqsh", True, "gpu"), False)
    return record


def removal(places: ContainerPlaces, srun: FakeSrun, tmp_path: Path) -> ContainerRemoval:
    return ContainerRemoval(
        cast(SlurmClient, srun), places, ContainerStarts(lambda: tmp_path / "starts"), env={"PATH": "/usr/bin"}
    )


def none() -> list[ContainerKernel]:
    return []


def nodes_of(places: ContainerPlaces, name: str) -> list[str]:
    return sorted(place.node for place in places.places(name))


async def test_a_container_goes_from_every_node_it_is_recorded_on_each_by_a_job_of_its_own(
    places: ContainerPlaces, tmp_path: Path
) -> None:
    srun = FakeSrun({"gpu01": REMOVED, "gpu02": REMOVED})
    removals = await removal(places, srun, tmp_path).remove("env", None, none)
    assert removal_json("env", removals) == {
        "name": "env",
        "removed": [{"node": "gpu02", "gone_already": False}, {"node": "gpu01", "gone_already": False}],
        "message": "removed env from gpu02; removed env from gpu01",
    }
    assert sorted(srun.nodes()) == ["gpu01", "gpu02"]
    argv, env = srun.calls[0]
    assert argv[0] == "/opt/slurm/bin/srun" and argv[1].startswith("--job-name=jupyter-asgard-remove-")
    assert "--partition=gpu" in argv and argv[-4:] == ["enroot", "remove", "--force", "pyxis_env"]
    assert env == {"PATH": "/usr/bin"}  # a kernel step's: enroot looks where Pyxis made the container
    assert len({argv[1] for argv, _env in srun.calls}) == 2  # a job name each: a cancel names one job
    assert nodes_of(places, "env") == [] and nodes_of(places, "other") == ["gpu01"]
    assert srun.cancelled() == []  # both ended on their own


async def test_node_removes_it_from_that_node_alone(places: ContainerPlaces, tmp_path: Path) -> None:
    srun = FakeSrun({"gpu01": REMOVED})
    removals = await removal(places, srun, tmp_path).remove("env", "gpu01", none)
    assert [(found.node, found.gone_already) for found in removals] == [("gpu01", False)]
    assert srun.nodes() == ["gpu01"] and nodes_of(places, "env") == ["gpu02"]


async def test_a_container_enroot_finds_no_more_is_forgotten_and_said_to_be_gone_already(
    places: ContainerPlaces, tmp_path: Path
) -> None:
    srun = FakeSrun({"gpu01": NOT_THERE})
    removals = await removal(places, srun, tmp_path).remove("env", "gpu01", none)
    assert removal_json("env", removals)["removed"] == [{"node": "gpu01", "gone_already": True}]
    assert "env was no longer on gpu01" in removal_json("env", removals)["message"]
    assert nodes_of(places, "env") == ["gpu02"]


def test_only_enroot_s_own_words_about_that_container_mean_it_is_gone() -> None:
    assert gone_already(NOT_THERE.stderr.splitlines(), "env")
    assert not gone_already(NOT_THERE.stderr.splitlines(), "en")  # another container's path
    assert not gone_already(NO_ENROOT.stderr.splitlines(), "env")  # srun found no enroot on the node


async def test_a_node_without_enroot_is_a_failure_in_slurm_s_words_and_the_record_stays(
    places: ContainerPlaces, tmp_path: Path
) -> None:
    srun = FakeSrun({"gpu01": NO_ENROOT})
    with pytest.raises(SlurmError) as failed:
        await removal(places, srun, tmp_path).remove("env", "gpu01", none)
    assert failed.value.message.startswith("removing env from gpu01 failed: slurmstepd: error: execve(): enroot")
    assert "srun -w gpu01 enroot remove --force pyxis_env" in failed.value.hint
    assert nodes_of(places, "env") == ["gpu01", "gpu02"]


@pytest.mark.parametrize(
    ("answer", "words", "hint"),
    [
        (NO_ROOM, "Unable to allocate resources: Requested nodes are busy", "gpu01 has no room for the short"),
        (NO_MUNGE, "Protocol authentication error", "Slurm did not accept this host's credentials (munge)"),
    ],
)
async def test_a_job_slurm_does_not_run_is_said_in_its_words_with_what_to_do(
    places: ContainerPlaces, tmp_path: Path, answer: CommandResult, words: str, hint: str
) -> None:
    srun = FakeSrun({"gpu01": answer})
    with pytest.raises(SlurmError) as failed:
        await removal(places, srun, tmp_path).remove("env", "gpu01", none)
    assert failed.value.message.startswith("removing env from gpu01 failed: ") and words in failed.value.message
    assert failed.value.hint.startswith(hint)
    assert nodes_of(places, "env") == ["gpu01", "gpu02"]


async def test_a_node_slurm_no_longer_has_is_forgotten_with_its_containers(
    places: ContainerPlaces, tmp_path: Path
) -> None:
    srun = FakeSrun({"gpu01": NO_NODE})
    removals = await removal(places, srun, tmp_path).remove("env", "gpu01", none)
    assert removal_json("env", removals)["message"] == (
        "env was no longer on gpu01 (Slurm has no such node any more): forgotten"
    )
    assert nodes_of(places, "env") == ["gpu02"]


async def test_one_node_failing_says_so_and_what_went_from_the_other(places: ContainerPlaces, tmp_path: Path) -> None:
    srun = FakeSrun({"gpu01": NO_ROOM, "gpu02": REMOVED})
    with pytest.raises(AsgardError) as failed:
        await removal(places, srun, tmp_path).remove("env", None, none)
    assert failed.value.problems[0].startswith("removing env from gpu01 failed:")
    assert failed.value.problems[1:] == ["removed env from gpu02"]
    assert failed.value.status == 503 and failed.value.hint.startswith("gpu01 has no room")
    assert nodes_of(places, "env") == ["gpu01"]


async def test_an_srun_that_does_not_end_has_its_job_cancelled(places: ContainerPlaces, tmp_path: Path) -> None:
    srun = FakeSrun({"gpu01": SlurmError("`srun ...` did not answer within 690s")})
    with pytest.raises(SlurmError) as failed:
        await removal(places, srun, tmp_path).remove("env", "gpu01", none)
    assert failed.value.message == "removing env from gpu01 failed: `srun ...` did not answer within 690s"
    job_name = srun.calls[0][0][1].removeprefix("--job-name=")
    assert srun.cancelled() == [f"--name={job_name}"]
    assert nodes_of(places, "env") == ["gpu01", "gpu02"]


@pytest.mark.parametrize(
    ("name", "node", "refusal", "words"),
    [
        ("env:no_exec", None, BadRequest, "'env:no_exec' is not a container's name"),
        ("../../x", None, BadRequest, "is not a container's name"),
        ("nothing", None, NotFound, "no container 'nothing' of yours is recorded on any node"),
        ("env", "gpu03", NotFound, "your container env is not recorded on gpu03: it is on gpu02, gpu01"),
    ],
)
async def test_names_and_nodes_that_are_not_recorded_containers_are_refused_before_any_job(
    places: ContainerPlaces, tmp_path: Path, name: str, node: str | None, refusal: type[AsgardError], words: str
) -> None:
    srun = FakeSrun({})
    with pytest.raises(refusal) as refused:
        await removal(places, srun, tmp_path).remove(name, node, none)
    assert words in refused.value.message
    assert srun.calls == []


async def test_a_container_a_kernel_runs_in_there_is_refused_naming_the_kernel(
    places: ContainerPlaces, tmp_path: Path
) -> None:
    kernel = ContainerKernel("5f1c-kernel", "env", "gpu02")
    srun = FakeSrun({"gpu01": REMOVED})
    with pytest.raises(Conflict) as refused:
        await removal(places, srun, tmp_path).remove("env", None, lambda: [kernel])
    assert refused.value.message == (
        "your container env is in use: kernel 5f1c-kernel on gpu02 runs in it; removing the container now would "
        "delete its files from under it"
    )
    assert refused.value.hint.startswith("shut the kernel down first")
    assert srun.calls == [] and nodes_of(places, "env") == ["gpu01", "gpu02"]
    # Its copy on the other node is no kernel's: that one can go.
    await removal(places, srun, tmp_path).remove("env", "gpu01", lambda: [kernel])
    assert nodes_of(places, "env") == ["gpu02"]


async def test_a_start_of_the_container_on_the_node_under_way_refuses_its_removal(
    places: ContainerPlaces, tmp_path: Path
) -> None:
    starts = ContainerStarts(lambda: tmp_path / "starts")
    srun = FakeSrun({"gpu01": REMOVED, "gpu02": REMOVED})
    remover = ContainerRemoval(cast(SlurmClient, srun), places, starts, env={})
    async with starts.starting("gpu02", "env"):
        with pytest.raises(Conflict) as refused:
            await remover.remove("env", "gpu02", none)
        assert "a kernel of yours is starting in the container env on gpu02" in refused.value.message
    assert srun.calls == []
    await remover.remove("env", "gpu02", none)  # once the start is over (and that kernel shut down)
    assert nodes_of(places, "env") == ["gpu01"]


async def test_another_process_s_first_start_refuses_it_too(places: ContainerPlaces, tmp_path: Path) -> None:
    """JupyterLab starting the container while the command removes it: the lock file they share says so."""
    server, command = ContainerStarts(lambda: tmp_path), ContainerStarts(lambda: tmp_path)
    srun = FakeSrun({"gpu02": REMOVED})
    async with server.starting("gpu02", "env"):
        with pytest.raises(Conflict):
            await ContainerRemoval(cast(SlurmClient, srun), places, command, env={}).remove("env", "gpu02", none)
    assert srun.calls == []


async def test_a_start_that_comes_during_a_removal_waits_for_its_job_and_is_a_first_start_again(
    places: ContainerPlaces, tmp_path: Path
) -> None:
    starts = ContainerStarts(lambda: tmp_path / "starts")
    async with starts.starting("gpu02", "env"):
        pass  # the container ran on gpu02: later starts there no longer wait for each other
    srun = FakeSrun({"gpu02": REMOVED})
    srun.hold = asyncio.Event()
    remover = ContainerRemoval(cast(SlurmClient, srun), places, starts, env={})
    removing = asyncio.ensure_future(remover.remove("env", "gpu02", none))
    jobs_ended_at_start: list[int] = []
    inside: list[int] = []
    overlaps: list[int] = []

    async def start() -> None:
        async with starts.starting("gpu02", "env"):
            jobs_ended_at_start.append(srun.ended)
            inside.append(1)
            overlaps.append(len(inside))
            await asyncio.sleep(0.05)
            inside.pop()

    await srun.running.wait()
    starting = [asyncio.ensure_future(start()) for _ in range(2)]
    await asyncio.sleep(0.05)
    assert jobs_ended_at_start == []  # the starts wait for the removal
    srun.hold.set()
    await asyncio.gather(removing, *starting)
    assert jobs_ended_at_start == [1, 1]
    assert overlaps == [1, 1]  # Pyxis makes the container anew: one start at a time until it has


async def test_the_record_is_forgotten_before_a_start_waiting_for_the_removal_may_make_the_container_anew(
    tmp_path: Path,
) -> None:
    """A start that came while the job ran records the container it makes afresh: the removal must not forget
    that record after it, so it forgets its own before the start goes on."""
    starts = ContainerStarts(lambda: tmp_path / "starts")
    entered: list[str] = []
    forgotten_with_start_inside: list[bool] = []

    class Record(ContainerPlaces):
        def forget(self, name: str, node: str | None = None) -> list[ContainerPlace]:
            time.sleep(0.2)  # a slow disk: time enough for a start that is free to go on to get in
            forgotten_with_start_inside.append(bool(entered))
            return super().forget(name, node)

    record = Record(lambda: tmp_path / "containers")
    record.seen(ContainerPlace("env", "gpu02"), False)

    async def start() -> None:
        async with starts.starting("gpu02", "env"):
            entered.append("start")

    class StartingMeanwhile(FakeSrun):
        async def run(
            self, argv: list[str], timeout: float | None = None, env: dict[str, str] | None = None
        ) -> CommandResult:
            self.later = asyncio.ensure_future(start())  # comes while the job runs
            await asyncio.sleep(0.05)
            return await super().run(argv, timeout, env)

    srun = StartingMeanwhile({"gpu02": REMOVED})
    await ContainerRemoval(cast(SlurmClient, srun), record, starts, env={}).remove("env", "gpu02", none)
    await srun.later
    assert forgotten_with_start_inside == [False] and entered == ["start"]


async def test_a_kernel_that_started_meanwhile_is_seen_once_the_node_is_locked(
    places: ContainerPlaces, tmp_path: Path
) -> None:
    """remove() looks at the kernels first, then again under the node's lock: a start that ended in between is
    caught by the second look."""
    looks: list[int] = []

    def kernels() -> list[ContainerKernel]:
        looks.append(1)
        return [] if len(looks) == 1 else [ContainerKernel("k", "env", "gpu02")]

    srun = FakeSrun({"gpu02": REMOVED})
    with pytest.raises(Conflict):
        await removal(places, srun, tmp_path).remove("env", "gpu02", kernels)
    assert len(looks) == 2 and srun.calls == []


def test_the_listing_gives_each_container_the_kernels_running_in_it(places: ContainerPlaces) -> None:
    kernels = [ContainerKernel("a", "env", "gpu02"), ContainerKernel("b", "env", "gpu01")]
    entries = listing(places.places(), kernels)
    assert [(entry["name"], entry["nodes"], entry["kernels"]) for entry in entries] == [
        ("env", ["gpu02", "gpu01"], [{"kernel_id": "a", "node": "gpu02"}, {"kernel_id": "b", "node": "gpu01"}]),
        ("other", ["gpu01"], []),
    ]
    assert set(entries[0]) == {"name", "nodes", "image", "writable", "last_use", "places", "kernels"}
