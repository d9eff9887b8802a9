"""A detachable kernel's srun, as the server sees it: a process the keeper runs on the node.

The keeper (node/keeper.py) runs each start of a detachable kernel and writes srun's output and exit status
into the kernel's directory. KeptProcess reads them back and offers what KernelStep uses of an asyncio
subprocess (stdout and stderr streams, returncode, wait, terminate and kill), so a step started through the
keeper is handled exactly like one started here: handshake, container phases, errors, signals through Slurm.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .detach_records import KernelRecord, read_json, write_private

TAIL_INTERVAL = 0.1  # seconds between reads of the keeper's files while the step starts (a start waits on them)
SETTLED_INTERVAL = 0.5  # seconds between reads once it has run for SETTLED_AFTER seconds
SETTLED_AFTER = 60.0
READ_LIMIT = 1024 * 1024  # bytes taken from one file at one read


class KeptProcess:
    """srun of start number `number`, run by the keeper; from_end: an adopted start, whose old output is read."""

    pid = None

    def __init__(self, record: KernelRecord, number: int, job_over: Callable[[], bool], from_end: bool = False) -> None:
        """job_over: whether the job has ended, and the keeper with it (then nobody writes the exit status)."""
        self.record, self.number, self.job_over = record, number, job_over
        self.stdout = asyncio.StreamReader()
        self.stderr = asyncio.StreamReader()
        self.returncode: int | None = None
        self._offsets = {"out": self._size("out") if from_end else 0, "err": self._size("err") if from_end else 0}
        self._ended = asyncio.Event()
        self._tail = asyncio.ensure_future(self._follow())

    @classmethod
    async def start(
        cls, record: KernelRecord, number: int, argv: list[str], env: dict[str, str], job_over: Callable[[], bool]
    ) -> KeptProcess:
        """Ask the keeper for start `number` (its secrets in a file only the user can read, never in argv)."""
        request = record.path(f"start-{number}.json")
        await asyncio.to_thread(write_private, request, {"argv": argv, "env": env})
        return cls(record, number, job_over)

    def _file(self, name: str) -> Path:
        return self.record.path(f"step-{self.number}.{name}")

    def _size(self, name: str) -> int:
        try:
            return self._file(name).stat().st_size
        except OSError:
            return 0

    def _read_new(self) -> tuple[bytes, bytes, Any]:
        """What the keeper wrote since the last read, and the exit status once it is there."""
        exited = read_json(self._file("exit"))  # before the output: all of it is written once this is
        chunks = []
        for name in ("out", "err"):
            try:
                with open(self._file(name), "rb") as handle:
                    handle.seek(self._offsets[name])
                    chunk = handle.read(READ_LIMIT)
            except OSError:
                chunk = b""
            self._offsets[name] += len(chunk)
            chunks.append(chunk)
        return chunks[0], chunks[1], exited if not any(len(chunk) == READ_LIMIT for chunk in chunks) else None

    async def _follow(self) -> None:
        started = asyncio.get_running_loop().time()
        try:
            while True:
                out, err, exited = await asyncio.to_thread(self._read_new)
                for stream, chunk in ((self.stdout, out), (self.stderr, err)):
                    if chunk:
                        stream.feed_data(chunk)
                if isinstance(exited, int):
                    self.returncode = exited
                    break
                if self.job_over():
                    self.returncode = -9  # killed with its job
                    break
                settled = asyncio.get_running_loop().time() - started > SETTLED_AFTER
                await asyncio.sleep(SETTLED_INTERVAL if settled else TAIL_INTERVAL)
        finally:
            self.stdout.feed_eof()
            self.stderr.feed_eof()
            self._ended.set()

    async def wait(self) -> int:
        await self._ended.wait()
        return self.returncode if self.returncode is not None else -1

    def _ask(self, name: str) -> None:
        """A signal for srun itself, through the keeper: only where Slurm cannot deliver one."""
        if self.returncode is None:
            fd = os.open(self._file("signal"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(name)

    def terminate(self) -> None:
        self._ask("TERM")

    def kill(self) -> None:
        self._ask("KILL")

    def forget(self) -> None:
        """Stop reading (the server detaches: the step runs on)."""
        self._tail.cancel()


def last_start(record: KernelRecord) -> int:
    """The highest start number the keeper was asked for (0: none)."""
    numbers = [int(path.name.split("-")[1].split(".")[0]) for path in record.directory.glob("step-*.*")]
    numbers += [int(path.name[6:-5]) for path in record.directory.glob("start-*.json")]
    return max(numbers, default=0)


def exit_status(record: KernelRecord, number: int) -> int | None:
    found = read_json(record.path(f"step-{number}.exit"))
    return found if isinstance(found, int) else None
