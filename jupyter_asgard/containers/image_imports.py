"""'Import image': a registry image imported with enroot into the user's image directory, as a Slurm job.

Login nodes may have no enroot, and an NGC image takes minutes and many GB to convert, so the import runs on a
compute node, as a job of its own with the site's import settings (c.PyxisProvisioner.import_*). The node's
Python runs the importer (node/importer.py), which gives enroot a terminal for its progress and reports it line
by line; the import's state is what the panel, the side panel, GET /asgard/api/images/import and
`jupyter asgard import` show.

enroot writes into a private directory in the image directory (image_dir), and the image and its manifest
(source URI, resolved digest, date, size) are renamed into place only when complete, so the image list never
shows half an image. A cancelled or failed import leaves neither a file nor a job behind. Two imports of one
URI at once are one import: the second request is answered with the first.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import Conflict, ImageRefused, NotFound, SlurmError
from ..slurm.slurm_client import SlurmClient
from ..slurm.slurm_commands import holder_comment, job_name, own_job_argv, srun_job_id
from .container_steps import image_name_problem, importer_command, saved_image_path
from .image_dir import configured_dir, now, private_staging, publish, write_manifest
from .image_import_progress import ImportProgress, valid_uri_problem
from .images import parse_image_uri

STAGING_PREFIX = ".importing-"  # the private directory enroot writes in: not NAME.sqsh, so never listed
JOB_PREFIX = "import-"  # the job is job_name(JOB_PREFIX + id): an Asgard job, swept with its holder's death
RUNNING = ("queued", "importing")
END_PATIENCE = 30.0  # seconds a cancelled import's srun may take to end before it is killed


@dataclass
class ImageImport:
    """One import, as the UI and the REST API show it."""

    id: str
    uri: str
    name: str
    path: str
    state: str = "queued"  # queued, importing, imported, failed or cancelled
    progress: ImportProgress = field(default_factory=ImportProgress)
    message: str = ""
    hint: str = ""
    job_id: str = ""
    size: int = 0
    started: str = field(default_factory=now)
    finished: str = ""

    @property
    def running(self) -> bool:
        return self.state in RUNNING

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "uri": self.uri,
            "name": self.name,
            "path": self.path,
            "state": self.state,
            "status": self.status(),
            "progress": self.progress.to_json(),
            "message": self.message,
            "hint": self.hint,
            "job_id": self.job_id,
            "size": self.size,
            "started": self.started,
            "finished": self.finished,
        }

    def status(self) -> str:
        """One line for a status bar: where the import is, or how it ended."""
        if self.state == "queued":
            return f"waiting in the Slurm queue (job {self.job_id})" if self.job_id else "submitting the import job"
        if self.state == "importing":
            return self.progress.describe() or "starting enroot on the node"
        if self.state == "imported":
            return f"imported as {self.path}"
        return self.message or self.state


def default_name(uri: str) -> str:
    """The image's name when the user gives none: the site's naming (nvcr.io_nvidia_pytorch_24.05-py3), which
    the image list reads back as the same registry, repository and tag."""
    _user, image = parse_image_uri(uri)
    fields = [image.registry.replace(":", "-")] if image.registry else []
    return "_".join([*fields, *image.repository.split("/"), image.tag or "latest"])


class ImageImports:
    """The imports of one process (a Jupyter server, the panel's kernel, `jupyter asgard import`); each runs as a
    task of its own. images_changed is told when one ends, so that a cached image listing is made anew."""

    def __init__(
        self,
        client: SlurmClient,
        policy: Any,
        images_changed: Callable[[], None] = lambda: None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.client = client
        self.policy = policy  # a SitePolicy: saved_images_dir, import_* and keeper_python
        self.env = env  # srun's environment (kernel_env.import_environment)
        self.images_changed = images_changed
        self.imports: dict[str, ImageImport] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def get(self, import_id: str) -> ImageImport:
        found = self.imports.get(import_id)
        if found is None:
            raise NotFound(f"no import {import_id!r} on this server: GET /asgard/api/images/import lists them")
        return found

    def listing(self) -> list[dict[str, Any]]:
        return [found.to_json() for found in self.imports.values()]

    async def start(self, uri: str, name: str = "") -> tuple[ImageImport, bool]:
        """Checks, then starts the import and returns at once with it, and True; an import of the same URI that
        runs already is returned instead, with False. ImageRefused for anything in the way."""
        uri = uri.strip()
        if problem := valid_uri_problem(uri):
            raise ImageRefused(400, problem)
        if (running := self._running(uri)) is not None:
            return running, False
        name = name.strip() or default_name(uri)
        if problem := image_name_problem(name):
            raise ImageRefused(400, problem + ("" if name else "; give the image a name"))
        directory = configured_dir("saved_images_dir", self.policy.saved_images_dir)
        found = ImageImport(uuid.uuid4().hex[:12], uri, name, saved_image_path(directory, name))
        if other := next((i for i in self.imports.values() if i.running and i.path == found.path), None):
            raise ImageRefused(409, f"{found.path} is being imported from {other.uri}: choose another name")
        self.imports[found.id] = found  # claimed before the first await: a second request joins this one
        try:
            staging = await asyncio.to_thread(
                private_staging, directory, found.path, "saved_images_dir", STAGING_PREFIX
            )
        except ImageRefused:
            del self.imports[found.id]
            raise
        task = asyncio.create_task(self._run(found, staging))
        self._tasks[found.id] = task
        task.add_done_callback(lambda _task: self._tasks.pop(found.id, None))
        task.add_done_callback(lambda _task: self.images_changed())
        return found, True

    def _running(self, uri: str) -> ImageImport | None:
        return next((found for found in self.imports.values() if found.running and found.uri == uri), None)

    async def wait(self, import_id: str) -> ImageImport:
        """The import once it has ended."""
        task = self._tasks.get(import_id)
        if task is not None:
            await asyncio.shield(task)
        return self.get(import_id)

    async def cancel(self, import_id: str) -> ImageImport:
        """End a running import: its job cancelled, queued or running, and its files gone once it has ended."""
        found = self.get(import_id)
        if not found.running:
            raise Conflict(f"the import of {found.uri} has ended already ({found.state}): there is nothing to cancel")
        found.state, found.message = "cancelled", "cancelled"
        try:
            await self.client.scancel_named(job_name(JOB_PREFIX + found.id))
        except SlurmError:
            pass  # the task's own end still stops srun, which ends its job
        task = self._tasks.get(import_id)
        if task is not None:
            done, _ = await asyncio.wait({task}, timeout=END_PATIENCE)
            if not done:
                task.cancel()
                await asyncio.wait({task})
        return found

    async def cancel_all(self) -> None:
        """Every running import cancelled (the process that shows them stops)."""
        await asyncio.gather(*(self.cancel(found.id) for found in list(self.imports.values()) if found.running))

    async def _run(self, found: ImageImport, staging: str) -> None:
        """The import, ended as imported, failed or cancelled whatever happens, its private directory gone."""
        staged = saved_image_path(staging, found.name)
        try:
            await self._import(found, staged)
        except Exception as error:  # a full disk, an srun that cannot start: the import must end
            found.state, found.message = "failed", f"importing the image failed: {error}"
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, ignore_errors=True)
            if found.running:  # cancelled as a task (the server stops)
                found.state, found.message = "cancelled", "cancelled: the process that ran the import stopped"
            found.finished = now()

    async def _import(self, found: ImageImport, staged: str) -> None:
        argv = own_job_argv(
            job_name(JOB_PREFIX + found.id),
            holder_comment(socket.gethostname(), os.getpid()),
            self._job_options(),
            importer_command(self.policy.keeper_python, "import", staged, found.uri),
            srun=self.client.command("srun"),
        )
        status, stderr = await run_importer(
            self.client,
            argv,
            found.progress,
            self.env,
            srun_said=lambda line: self._srun_said(found, line),
            progressed=lambda: self._importer_said(found),
        )
        if found.state == "cancelled":
            return
        if status == 0 and await asyncio.to_thread(os.path.isfile, staged):
            found.size = await asyncio.to_thread(os.path.getsize, staged)
            await asyncio.to_thread(write_manifest, staged, self._manifest(found))
            await asyncio.to_thread(publish, staged, found.path)
            found.state = "imported"
            return
        found.message, found.hint = found.progress.failure(found.uri, stderr)
        found.state = "failed"

    @staticmethod
    def _srun_said(found: ImageImport, line: str) -> None:
        """srun names the job when it waits in the queue."""
        if job_id := srun_job_id(line):
            found.job_id = job_id

    @staticmethod
    def _importer_said(found: ImageImport) -> None:
        """The importer's first line says where it runs: the import is under way."""
        if found.state == "queued" and found.progress.job_id:
            found.job_id, found.state = found.progress.job_id, "importing"

    def _job_options(self) -> dict[str, str]:
        policy = self.policy
        return {
            "--partition": policy.import_partition,
            "--cpus-per-task": str(policy.import_cpus) if policy.import_cpus > 0 else "",
            "--mem": policy.import_memory,
            "--time": policy.import_time_limit,
        }

    @staticmethod
    def _manifest(found: ImageImport) -> dict[str, Any]:
        return {
            "name": found.name,
            "image": found.path,
            "source_uri": found.uri,
            "digest": found.progress.digest,
            "imported": now(),
            "size": found.size,
            "job_id": found.job_id,
            "node": found.progress.node,
        }


async def run_importer(
    client: SlurmClient,
    argv: list[str],
    progress: ImportProgress,
    env: Mapping[str, str] | None = None,
    srun_said: Callable[[str], None] = lambda line: None,
    progressed: Callable[[], None] = lambda: None,
) -> tuple[int, list[str]]:
    """Run an importer (a job of its own or a step of a kernel's allocation) to its end, its stdout fed into
    progress as it comes (progressed told after each line), srun's stderr into srun_said; returns its exit status
    and srun's stderr (for progress.failure). Cancelled, it ends srun (SIGTERM: srun passes it on to the
    importer, which ends enroot and everything enroot started)."""
    process = await client.spawn(argv, dict(env) if env is not None else None)
    assert process.stdout is not None and process.stderr is not None
    stderr: list[str] = []

    async def read_stderr() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            line = raw.decode(errors="replace").rstrip()
            stderr.append(line)
            srun_said(line)

    reader = asyncio.ensure_future(read_stderr())
    try:
        async for raw in process.stdout:
            progress.feed(raw.decode(errors="replace").rstrip("\n"))
            progressed()
        await reader
        return await process.wait(), stderr
    finally:
        if process.returncode is None:
            await _end(process)
        reader.cancel()


async def _end(process: asyncio.subprocess.Process) -> None:
    """SIGTERM (srun passes it on), then SIGKILL once END_PATIENCE has passed."""
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), END_PATIENCE)
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()
