"""One first start at a time of a named container on a node.

enroot unpacks a new named container straight into its final directory: when
several kernels start the same new container on one node at once, all but
one fail ("File already exists"), and a start that comes while the unpacking
is under way finds a half-unpacked filesystem ("failed to execute: /bin/bash").
So a kernel waits while a start of its container on its node is under way in
this server or in another Jupyter process of the user on this host (JupyterLab
beside nbconvert or papermill runs: a lock file in the user's Jupyter runtime
directory); once a container has started there, this server's later starts of
it (restarts, more notebooks) run side by side.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

LOCK_POLL = 0.2  # seconds between tries of another process's lock


def default_lock_dir() -> Path:
    return Path(jupyter_runtime_dir()) / "asgard-container-starts"


class ContainerStarts:
    """Which named containers this server has started on which nodes, and the first starts under way."""

    def __init__(self, lock_dir: Callable[[], Path] = default_lock_dir) -> None:
        self._lock_dir = lock_dir
        self._started: set[tuple[str, str]] = set()
        self._locks: dict[tuple[int, str, str], asyncio.Lock] = {}

    @asynccontextmanager
    async def starting(self, node: str, name: str) -> AsyncIterator[None]:
        """Around a step's start until its container runs: exclusive until one start of it on node succeeded."""
        if (node, name) not in self._started:
            # Keyed by event loop too: an asyncio.Lock belongs to the loop it first waited in.
            lock = self._locks.setdefault((id(asyncio.get_running_loop()), node, name), asyncio.Lock())
            async with lock:
                if (node, name) not in self._started:
                    async with self._host_lock(node, name):
                        yield
                    self._started.add((node, name))
                    return
        yield

    @asynccontextmanager
    async def _host_lock(self, node: str, name: str) -> AsyncIterator[None]:
        """The lock file of (node, name), shared by the user's Jupyter processes on this host."""
        fd = await asyncio.to_thread(self._open_lock_file, node, name)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(LOCK_POLL)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _open_lock_file(self, node: str, name: str) -> int:
        directory = self._lock_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = hashlib.sha256(f"{node}\0{name}".encode()).hexdigest()[:24]
        return os.open(directory / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


CONTAINER_STARTS = ContainerStarts()
