"""A kernel's docker:// image, imported once: the user's cache of squashfs images, one per manifest digest.

Pyxis imports a registry image at every new container, on every node: minutes for an NGC image. Instead, at each
start of a kernel whose image is a registry URI, a step of the kernel's own allocation looks the tag up
(`enroot digest`: a moved tag is followed), and the kernel starts from c.PyxisProvisioner.image_cache_dir's
sha256-HEX.sqsh; the first start of a digest imports it there (`enroot import` of the URI pinned to that
digest, a step beside), which the kernel row shows as the phase of its start. Starts of one digest in one
process import it once; two processes that import it at once each publish it atomically, and the second finds
it there.

The directory must be the user's alone (image_dir.usable_dir): the kernels run what is in it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from collections.abc import Mapping
from typing import Any

from ..errors import ImageRefused, KernelStartError
from ..node.importer import pinned
from ..slurm.slurm_client import SlurmClient
from .container_steps import digest_step_argv, import_step_argv
from .image_dir import configured_dir, now, private_staging, publish, usable_dir, write_manifest
from .image_import_progress import DOCKER, ImportProgress, cache_file_name
from .image_imports import run_importer

STAGING_PREFIX = ".importing-"
SETTING = "image_cache_dir"
_importing: dict[str, asyncio.Task[None]] = {}  # path of the cached image -> its import, in this process


def is_registry_image(image: str) -> bool:
    """Whether Pyxis would pull the image from a registry with enroot's docker:// (anything not a path that
    names no other scheme, see the Pyxis reference): what the cache imports. dockerd:// needs the node's
    Docker daemon, and is left to Pyxis."""
    return bool(image) and not image.startswith(("/", ".")) and (image.startswith(DOCKER) or "://" not in image)


def enroot_uri(image: str) -> str:
    """The image as enroot takes it: Pyxis puts docker:// in front of a registry image that has none."""
    return image if image.startswith(DOCKER) else DOCKER + image


def cached_file(path: str) -> bool:
    """Blocking: a complete cached image: a regular file of the user's (publish put it there)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


class ImageCache:
    """The cache of one provisioner's settings; the work of a start runs in the kernel's allocation."""

    def __init__(self, client: SlurmClient, configured: str, python: str, env: Mapping[str, str]) -> None:
        self.client, self.configured, self.python = client, configured, python
        self.env = env  # the steps' environment (kernel_env.import_environment)

    async def image_for(self, job_id: str, node: str, uri: str, progress: ImportProgress) -> str:
        """The cached squashfs of the image uri names now, imported first if it is not there; KernelStartError
        in the user's words if the registry or the node refuses."""
        uri = enroot_uri(uri)
        try:
            directory = configured_dir(SETTING, self.configured)
            await asyncio.to_thread(usable_dir, directory, SETTING)
        except ImageRefused as error:
            raise KernelStartError(f"the kernel's image cannot be imported: {error.message}") from None
        digest = await self._digest(job_id, node, uri, progress)
        path = os.path.join(directory, cache_file_name(digest))
        if await asyncio.to_thread(cached_file, path):
            return path
        task = _importing.get(path)
        if task is None:
            task = asyncio.ensure_future(self._import(job_id, node, pinned(uri, digest), digest, path, progress))
            _importing[path] = task
            task.add_done_callback(lambda _task: _importing.pop(path, None))
        await asyncio.shield(task)
        if not await asyncio.to_thread(cached_file, path):  # something else has the name: not an image to run
            raise KernelStartError(
                f"the kernel's image cannot be imported: {path} is in the way, and is no image file of yours",
                f"remove {path}; the next start imports the image again",
            )
        return path

    async def _digest(self, job_id: str, node: str, uri: str, progress: ImportProgress) -> str:
        argv = digest_step_argv(job_id, node, uri, python=self.python, srun=self.client.command("srun"))
        status, stderr = await run_importer(self.client, argv, progress, self.env)
        if status != 0 or not progress.digest:
            message, hint = progress.failure(uri, stderr)
            raise KernelStartError(f"the kernel's image {uri} cannot be used: {message}", hint)
        return progress.digest

    async def _import(self, job_id: str, node: str, uri: str, digest: str, path: str, progress: ImportProgress) -> None:
        try:
            staging = await asyncio.to_thread(private_staging, os.path.dirname(path), path, SETTING, STAGING_PREFIX)
        except ImageRefused as error:
            if error.status == 409:  # published meanwhile by another process
                return
            raise KernelStartError(f"the kernel's image cannot be imported: {error.message}") from None
        staged = os.path.join(staging, os.path.basename(path))
        try:
            argv = import_step_argv(job_id, node, staged, uri, python=self.python, srun=self.client.command("srun"))
            status, stderr = await run_importer(self.client, argv, progress, self.env)
            if status != 0 or not await asyncio.to_thread(os.path.isfile, staged):
                message, hint = progress.failure(uri, stderr)
                raise KernelStartError(f"importing the kernel's image {uri} failed: {message}", hint)
            size = await asyncio.to_thread(os.path.getsize, staged)
            await asyncio.to_thread(write_manifest, staged, _manifest(uri, digest, path, size, job_id, node))
            try:
                await asyncio.to_thread(publish, staged, path)
            except FileExistsError:
                pass  # another process published the same digest meanwhile: the same image
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)


def _manifest(uri: str, digest: str, path: str, size: int, job_id: str, node: str) -> dict[str, Any]:
    return {
        "image": path,
        "source_uri": uri,
        "digest": digest,
        "imported": now(),
        "size": size,
        "job_id": job_id,
        "node": node,
    }
