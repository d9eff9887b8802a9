"""'Save environment as image': a running kernel's container written as a squashfs image of the user's own.

Pyxis exports the container's filesystem (``--container-save``) from a step that attaches to the running
container beside the kernel (container_steps.save_argv), so the kernel goes on undisturbed. The step also
lists the container's Python packages; they go into a manifest beside the image (NAME.sqsh.json) with where
it came from. Every refusal is found before Slurm is asked; a save Pyxis fails names Pyxis's reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..errors import SaveRefused, SlurmError
from ..launch.launch_config import default_environ, expand_variables
from ..slurm.slurm_client import SlurmClient
from .container_steps import (
    container_problem,
    image_name_problem,
    manifest_path,
    packages_of,
    save_argv,
    saved_image_path,
)
from .step_failures import summarize


@dataclass
class ImageSave:
    """One save of a kernel's container, as the panel and GET .../save-image show it."""

    kernel_id: str
    name: str
    path: str
    state: str = "saving"  # saving, saved or failed
    message: str = ""
    started: str = field(default_factory=lambda: _now())
    finished: str = ""
    packages: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def saved_images_dir(configured: str) -> str:
    """The configured directory with $USER, $HOME and ~ expanded; SaveRefused names a variable not set."""
    problems: list[str] = []
    directory = expand_variables("saved_images_dir", configured, default_environ(), problems)
    if problems:
        raise SaveRefused(500, f"the site's c.PyxisProvisioner.saved_images_dir cannot be used: {problems[0]}")
    return directory


def _writable_target(directory: str, path: str) -> None:
    """Blocking (run in a thread): the directory is made if missing; SaveRefused says what is in the way."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as error:
        raise SaveRefused(
            400,
            f"cannot create the image directory {directory}: {error.strerror}; the site sets it as "
            "c.PyxisProvisioner.saved_images_dir",
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SaveRefused(
            400,
            f"cannot write to the image directory {directory}: permission denied; choose another with "
            "c.PyxisProvisioner.saved_images_dir, or ask for write access to it",
        )
    if os.path.lexists(path):
        raise SaveRefused(409, f"an image {path} exists already: choose another name, or delete that file first")


def _write_manifest(path: str, manifest: dict[str, Any]) -> None:
    """Blocking: written to a temporary file and renamed, so a reader never sees half of it."""
    directory = os.path.dirname(path)
    handle, temporary = tempfile.mkstemp(prefix=".manifest-", dir=directory)
    with os.fdopen(handle, "w") as out:
        json.dump(manifest, out, indent=1)
    os.chmod(temporary, 0o644)
    os.replace(temporary, manifest_path(path))


def _remove_file(path: str) -> None:
    if os.path.isfile(path):
        os.unlink(path)


class ImageSaves:
    """The server's saves, the latest per kernel; each runs as a task of its own. images_changed is told when a
    save ends (an image written, or a half-written one removed), so that a cached image listing is made anew."""

    def __init__(self, client: SlurmClient, images_changed: Callable[[], None] = lambda: None) -> None:
        self.client = client
        self.images_changed = images_changed
        self.latest: dict[str, ImageSave] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self, provisioner: Any, name: str, configured_dir: str, timeout: float) -> ImageSave:
        """Checks, then starts the save and returns at once; SaveRefused for anything in the way."""
        if problem := image_name_problem(name):
            raise SaveRefused(400, problem)
        if problem := container_problem(provisioner, "saved"):
            raise SaveRefused(409, problem)
        running = self.latest.get(provisioner.kernel_id)
        if running and running.state == "saving":
            raise SaveRefused(409, f"this kernel's container is being saved as {running.path}: wait for that save")
        directory = saved_images_dir(configured_dir)
        save = ImageSave(provisioner.kernel_id, name, saved_image_path(directory, name))
        if any(other.state == "saving" and other.path == save.path for other in self.latest.values()):
            raise SaveRefused(409, f"another kernel's container is being saved as {save.path}: choose another name")
        self.latest[provisioner.kernel_id] = save  # claimed before the first await: a second request is refused
        try:
            await asyncio.to_thread(_writable_target, directory, save.path)
        except SaveRefused:
            self.latest.pop(provisioner.kernel_id)
            if running:
                self.latest[provisioner.kernel_id] = running
            raise
        task = asyncio.create_task(self._run(save, provisioner, timeout))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _task: self.images_changed())
        return save

    async def _run(self, save: ImageSave, provisioner: Any, timeout: float) -> None:
        argv = save_argv(provisioner.job_id, provisioner.node, provisioner.container, save.path)
        try:
            result = await self.client.run(argv, timeout=timeout)
        except SlurmError as error:
            await self._failed(save, f"{error} (the site's c.PyxisProvisioner.save_timeout)")
            return
        if result.returncode != 0 or not await asyncio.to_thread(os.path.isfile, save.path):
            text, hint = summarize(result.stderr.splitlines() + result.stdout.splitlines())
            await self._failed(save, f"saving the container failed: {text}" + (f". {hint}" if hint else ""))
            return
        packages = packages_of(result.stdout)
        await asyncio.to_thread(_write_manifest, save.path, self._manifest(save, provisioner, packages))
        save.state, save.packages, save.finished = "saved", len(packages), _now()

    async def _failed(self, save: ImageSave, message: str) -> None:
        """A failed save leaves no half-written image behind (the path was free when it started)."""
        await asyncio.to_thread(_remove_file, save.path)
        save.state, save.message, save.finished = "failed", message, _now()

    @staticmethod
    def _manifest(save: ImageSave, provisioner: Any, packages: list[str]) -> dict[str, Any]:
        kernel_manager = provisioner.parent
        return {
            "name": save.name,
            "image": save.path,
            "source_image": provisioner.launch.image if provisioner.launch else "",
            "created": _now(),
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
