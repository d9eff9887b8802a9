"""'Save environment as image': a running kernel's container written as a squashfs image of the user's own.

Pyxis exports the container's filesystem (``--container-save``) from a step that attaches to the running
container beside the kernel (container_steps.save_argv), so the kernel goes on undisturbed. The step also
lists the container's Python packages; they go into a manifest beside the image (NAME.sqsh.json) with where
it came from. Every refusal is found before Slurm is asked; a save Pyxis fails names Pyxis's reason.

Pyxis writes into a private directory in the user's image directory (image_dir), and the finished image and
manifest are renamed into place, so an image is listed only complete.
Whatever ends a save (Slurm, the timeout, a full disk) ends it as failed, the step gone before its files are.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import ImageRefused, SlurmError, SlurmNotFound
from ..slurm.slurm_client import SlurmClient
from ..slurm.slurm_commands import job_steps_argv, named_steps
from .container_steps import (
    SAVE_STEP_NAME,
    container_problem,
    image_name_problem,
    packages_of,
    save_argv,
    saved_image_path,
)
from .image_dir import configured_dir, now, private_staging, publish, write_manifest
from .step_failures import summarize

STAGING_PREFIX = ".saving-"  # the private directory Pyxis writes in: not NAME.sqsh, so never listed
STEP_END_PATIENCE = 60.0  # seconds a cancelled save step may take to end before its files are left alone


@dataclass
class ImageSave:
    """One save of a kernel's container, as the panel and GET .../save-image show it."""

    kernel_id: str
    name: str
    path: str
    state: str = "saving"  # saving, saved or failed
    message: str = ""
    started: str = field(default_factory=now)
    finished: str = ""
    packages: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class ImageSaves:
    """The server's saves, the latest per kernel; each runs as a task of its own. images_changed is told when a
    save ends (an image written, or a half-written one removed), so that a cached image listing is made anew."""

    def __init__(self, client: SlurmClient, images_changed: Callable[[], None] = lambda: None) -> None:
        self.client = client
        self.images_changed = images_changed
        self.latest: dict[str, ImageSave] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, provisioner: Any, name: str, images_dir: str, timeout: float) -> ImageSave:
        """Checks, then starts the save and returns at once; ImageRefused for anything in the way."""
        if problem := image_name_problem(name):
            raise ImageRefused(400, problem)
        if problem := container_problem(provisioner, "saved"):
            raise ImageRefused(409, problem)
        running = self.latest.get(provisioner.kernel_id)
        if running and running.state == "saving":
            raise ImageRefused(409, f"this kernel's container is being saved as {running.path}: wait for that save")
        directory = configured_dir("saved_images_dir", images_dir)
        save = ImageSave(provisioner.kernel_id, name, saved_image_path(directory, name))
        if any(other.state == "saving" and other.path == save.path for other in self.latest.values()):
            raise ImageRefused(409, f"another kernel's container is being saved as {save.path}: choose another name")
        self.latest[provisioner.kernel_id] = save  # claimed before the first await: a second request is refused
        try:
            staging = await asyncio.to_thread(private_staging, directory, save.path, "saved_images_dir", STAGING_PREFIX)
        except ImageRefused:
            self.latest.pop(provisioner.kernel_id)
            if running:
                self.latest[provisioner.kernel_id] = running
            raise
        task = asyncio.create_task(self._run(save, provisioner, timeout, staging))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _task: self.images_changed())
        return save

    async def _run(self, save: ImageSave, provisioner: Any, timeout: float, staging: str) -> None:
        """The save, ended as saved or failed whatever happens; a failed one's private directory is removed once
        no save step of the kernel runs any more (Pyxis may still be writing after srun was given up on)."""
        staged = saved_image_path(staging, save.name)
        try:
            message = await self._export(save, provisioner, timeout, staged)
        except Exception as error:  # a full disk, a quota, an srun that cannot start: the save must end
            message = f"saving the container failed: {error}"
        if message and not await self._steps_ended(provisioner.job_id):
            message += f"; its save step did not end, so its files stay in {staging}: remove them later"
        else:
            await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
        save.state, save.message, save.finished = ("failed" if message else "saved"), message, now()

    async def _export(self, save: ImageSave, provisioner: Any, timeout: float, staged: str) -> str:
        """Runs the save step and puts the image in place; "" when saved, else why not."""
        argv = save_argv(provisioner.job_id, provisioner.node, provisioner.container, staged)
        try:
            result = await self.client.run(argv, timeout=timeout)
        except SlurmNotFound:
            raise
        except SlurmError as error:  # it did not answer in time
            return f"{error} (the site's c.PyxisProvisioner.save_timeout)"
        if result.returncode != 0 or not await asyncio.to_thread(os.path.isfile, staged):
            text, hint = summarize(result.stderr.splitlines() + result.stdout.splitlines())
            return f"saving the container failed: {text}" + (f". {hint}" if hint else "")
        packages = packages_of(result.stdout)
        await asyncio.to_thread(write_manifest, staged, self._manifest(save, provisioner, packages))
        await asyncio.to_thread(publish, staged, save.path)
        save.packages = len(packages)
        return ""

    async def _steps_ended(self, job_id: str) -> bool:
        """Whether the job's save steps have all ended, cancelled and waited for (srun, given up on, may leave
        its step writing); False if they outlast STEP_END_PATIENCE or Slurm cannot tell."""
        deadline = asyncio.get_running_loop().time() + STEP_END_PATIENCE
        try:
            while steps := await self._save_steps(job_id):
                if asyncio.get_running_loop().time() > deadline:
                    return False
                for step in steps:
                    await self.client.scancel(job_id, step)
                await asyncio.sleep(0.5)
        except (SlurmError, OSError):
            return False
        return True

    async def _save_steps(self, job_id: str) -> list[str]:
        """The job's running save steps; none once Slurm no longer knows the job."""
        listed = (await self.client.run(job_steps_argv(job_id))).checked(tolerated=("Invalid job id",))
        return named_steps(listed.stdout, SAVE_STEP_NAME)

    @staticmethod
    def _manifest(save: ImageSave, provisioner: Any, packages: list[str]) -> dict[str, Any]:
        kernel_manager = provisioner.parent
        return {
            "name": save.name,
            "image": save.path,
            "source_image": provisioner.launch.image if provisioner.launch else "",
            "created": now(),
            "kernel": {
                "id": provisioner.kernel_id,
                "kernelspec": getattr(kernel_manager, "kernel_name", ""),
                "display_name": getattr(provisioner.kernel_spec, "display_name", ""),
            },
            "container_name": provisioner.container,
            "node": provisioner.node,
            "job_id": provisioner.job_id,
            "packages": packages,
        }
