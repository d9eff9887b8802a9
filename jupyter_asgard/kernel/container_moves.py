"""'Bring it here': the user's container, with what they installed in it, copied to the node their kernel runs on.

A kernel that could not start where its container is runs elsewhere in a fresh copy of the image (placement).
Bringing the container over takes two steps. First a short job of its own on the container's node exports the
container's filesystem (Pyxis's ``--container-save``, the container started without an image: it must be
there) to a private directory in the user's image directory, which both nodes see. Then the kernel restarts
(what is in its memory is lost; the user is told before) and its start removes the fresh copy on its node and
makes the container anew from the saved one (PyxisProvisioner.container_source). The saved file goes once the
kernel runs, or the move failed; a failure is told in Pyxis's and Slurm's words.
"""

from __future__ import annotations

import asyncio
import math
import os
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

from ..containers.container_steps import (
    CONTAINER_JOB_WAIT,
    container_job_argv,
    container_problem,
    save_container_command,
)
from ..containers.image_dir import configured_dir, usable_dir
from ..containers.step_failures import summarize
from ..errors import Conflict, SlurmError
from ..slurm.slurm_client import SlurmClient
from ..slurm.slurm_commands import holder_comment, job_name, scancel_named_argv
from .container_places import ContainerPlaces

STAGING_PREFIX = ".moving-"  # the private directory Pyxis exports the container to: never listed as an image
JOB_PREFIX = "move-"
GONE = "does not exist, and --container-image is not set"  # Pyxis: no container of that name on the node


@dataclass
class ContainerMove:
    """One kernel's move, as its row's container_move shows it."""

    state: str  # saving, restarting, done or failed
    message: str
    from_node: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


Restart = Callable[[], Awaitable[Any]]


class ContainerMoves:
    """The server's moves under way, one per kernel; each runs as a task of its own."""

    def __init__(self, client: SlurmClient, places: ContainerPlaces | None = None) -> None:
        self.client = client
        self.places = places or ContainerPlaces()
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self, provisioner: Any, restart: Restart) -> ContainerMove:
        """Checks, then starts the move and returns at once; Conflict or ImageRefused for anything in the way."""
        if problem := container_problem(provisioner, "brought here"):
            raise Conflict(problem)
        home = provisioner.container_home
        if not home:
            raise Conflict(
                f"kernel {provisioner.kernel_id} runs where its container {provisioner.container} is: there is "
                "nothing to bring here"
            )
        running = self._tasks.get(provisioner.kernel_id)
        if running is not None and not running.done():
            raise Conflict("this kernel's container is being brought here already: wait for that move to end")
        directory = configured_dir("saved_images_dir", provisioner.saved_images_dir)
        await asyncio.to_thread(usable_dir, directory, "saved_images_dir")
        staging = await asyncio.to_thread(tempfile.mkdtemp, prefix=STAGING_PREFIX, dir=directory)
        move = ContainerMove("saving", f"saving {provisioner.container} on {home}", home)
        provisioner.container_move = move.to_json()
        task = asyncio.create_task(self._run(move, provisioner, restart, staging))
        self._tasks[provisioner.kernel_id] = task
        return move

    async def cancel_all(self) -> None:
        """Every move under way cancelled (the server stops: nobody would see it end)."""
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _run(self, move: ContainerMove, provisioner: Any, restart: Restart, staging: str) -> None:
        """The move, ended as done or failed whatever happens, the saved copy gone."""
        try:
            saved = await self._save(move, provisioner, staging)
            self._tell(move, provisioner, "restarting", f"restarting the kernel on {provisioner.node} with the copy")
            provisioner.container_source = saved
            await restart()
            if provisioner.container_source:  # the restart did not reach a start that used it
                raise SlurmError("the kernel was not started again: restart it to bring the container here")
            self._tell(
                move,
                provisioner,
                "done",
                f"{provisioner.container} is on {provisioner.node} now, with what was installed in it on "
                f"{move.from_node}",
            )
        except Exception as error:  # Slurm's, Pyxis's, a full disk, a restart that failed: the move must end
            self._tell(move, provisioner, "failed", f"bringing the container here failed: {error}")
        finally:
            provisioner.container_source = ""
            await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
        provisioner.log.info("Kernel %s: %s", provisioner.kernel_id, move.message)

    @staticmethod
    def _tell(move: ContainerMove, provisioner: Any, state: str, message: str) -> None:
        move.state, move.message = state, message
        provisioner.container_move = move.to_json()

    async def _save(self, move: ContainerMove, provisioner: Any, staging: str) -> str:
        """The container exported on its node into staging; the squashfs's path. SlurmError says why not."""
        container, node = provisioner.container, move.from_node
        places = await asyncio.to_thread(self.places.places, container)
        partition = next((place.partition for place in places if place.node == node), "")
        saved = os.path.join(staging, container + ".sqsh")
        name = job_name(JOB_PREFIX + provisioner.kernel_id)
        argv = container_job_argv(
            name,
            holder_comment(socket.gethostname(), os.getpid()),
            node,
            partition,
            math.ceil(provisioner.save_timeout / 60),
            save_container_command(container, saved),
            srun=self.client.command("srun"),
        )
        try:
            result = await self.client.run(argv, timeout=provisioner.save_timeout + CONTAINER_JOB_WAIT)
        finally:
            await self.client.run(scancel_named_argv(name))  # a save srun gave up on (timeout, cancel) ends too
        lines = result.stderr.splitlines() + result.stdout.splitlines()
        if gone := next((line for line in lines if GONE in line), ""):
            await asyncio.to_thread(self.places.forget, container, node)
            raise SlurmError(
                f"{container} is no longer on {node} (removed from the node's storage; {gone.strip()}): there is "
                "nothing to bring, and it is forgotten there"
            )
        if result.returncode != 0 or not await asyncio.to_thread(os.path.isfile, saved):
            text, hint = summarize(lines)
            raise SlurmError(f"saving {container} on {node} failed: {text}" + (f". {hint}" if hint else ""))
        return saved
