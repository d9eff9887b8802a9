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

A removal of the container from the node (kernel/container_removal.py) takes the same locks, and is refused
while a start of it there is under way: enroot removing the filesystem Pyxis is unpacking or entering leaves a
broken one. The next start there is a first start again (Pyxis makes the container anew).
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from jupyter_core.paths import jupyter_runtime_dir

from ..errors import Conflict

LOCK_POLL = 0.2  # seconds between tries of another process's lock


def default_lock_dir() -> Path:
    return Path(jupyter_runtime_dir()) / "asgard-container-starts"


class ContainerStarts:
    """Which named containers this server has started on which nodes, and the first starts under way."""

    def __init__(self, lock_dir: Callable[[], Path] = default_lock_dir) -> None:
        self._lock_dir = lock_dir
        self._started: set[tuple[str, str]] = set()
        self._locks: dict[tuple[int, str, str], asyncio.Lock] = {}
        self._under_way: Counter[tuple[str, str]] = Counter()  # this process's starts, first or not, not over

    @asynccontextmanager
    async def starting(self, node: str, name: str) -> AsyncIterator[None]:
        """Around a step's start until its container runs: exclusive until one start of it on node succeeded."""
        self._under_way[(node, name)] += 1
        try:
            async with self._first_start(node, name):
                yield
        finally:
            self._under_way[(node, name)] -= 1

    @asynccontextmanager
    async def _first_start(self, node: str, name: str) -> AsyncIterator[None]:
        if (node, name) not in self._started:
            async with self._lock(node, name):
                if (node, name) not in self._started:
                    async with self._host_lock(node, name):
                        yield
                    self._started.add((node, name))
                    return
        yield

    @asynccontextmanager
    async def removing(self, node: str, name: str) -> AsyncIterator[None]:
        """Around the container's removal from node: Conflict while a start of it there is under way in this
        process or holds the lock in another of the user's on this host; starts that come meanwhile wait."""
        busy = Conflict(
            f"a kernel of yours is starting in the container {name} on {node} right now: removing it meanwhile "
            "would break that start",
            hint="wait until the kernel runs, shut it down, then remove the container",
        )
        lock = self._lock(node, name)
        if lock.locked() or self._under_way[(node, name)]:
            raise busy
        async with lock:
            self._started.discard((node, name))  # gone from the node: the next start there makes it anew
            async with self._host_lock(node, name, wait=False) as locked:
                if not locked:
                    raise busy
                yield

    def _lock(self, node: str, name: str) -> asyncio.Lock:
        # Keyed by event loop too: an asyncio.Lock belongs to the loop it first waited in.
        return self._locks.setdefault((id(asyncio.get_running_loop()), node, name), asyncio.Lock())

    @asynccontextmanager
    async def _host_lock(self, node: str, name: str, wait: bool = True) -> AsyncIterator[bool]:
        """The lock file of (node, name), shared by the user's Jupyter processes on this host; yields whether it
        is held (always, when it waits for it)."""
        fd = await asyncio.to_thread(self._open_lock_file, node, name)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        yield False
                        return
                    await asyncio.sleep(LOCK_POLL)
            yield True
        finally:
            os.close(fd)  # releases the lock

    def _open_lock_file(self, node: str, name: str) -> int:
        directory = self._lock_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = hashlib.sha256(f"{node}\0{name}".encode()).hexdigest()[:24]
        return os.open(directory / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


CONTAINER_STARTS = ContainerStarts()
