"""The one small async client through which jupyter-asgard talks to Slurm.

Every Slurm command runs here as an asyncio subprocess with an argument list
(never a shell) and a timeout, so the Jupyter server's event loop never
blocks on a slow controller.  It counts its calls so tests and benchmarks can
see how much load the server puts on slurmctld.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections import Counter
from dataclasses import dataclass

from ..errors import SlurmError, SlurmNotFound
from .slurm_commands import (
    JobInfo,
    parse_queue_positions,
    parse_sacct,
    parse_squeue,
    queue_order_argv,
    sacct_argv,
    scancel_argv,
    scancel_named_argv,
    squeue_argv,
)

ALREADY_GONE = ("already completing or completed", "Invalid job id", "does not exist")


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str
    command: str = ""

    def checked(self, tolerated: tuple[str, ...] = ()) -> CommandResult:
        """This result, or SlurmError with Slurm's own words if the command failed (unless its stderr says one
        of the tolerated things: an answer that is no failure for the caller)."""
        if self.returncode != 0 and not any(words in self.stderr for words in tolerated):
            raise SlurmError(self.stderr.strip() or f"{self.command or 'the command'} exited with {self.returncode}")
        return self


class SlurmClient:
    """Runs Slurm's client commands; one instance per process is enough."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self.calls: Counter[str] = Counter()

    @staticmethod
    def command(name: str) -> str:
        """Absolute path of a Slurm client command, or SlurmNotFound saying how to get it."""
        path = shutil.which(name)
        if path is None:
            raise SlurmNotFound(
                f"`{name}` was not found on PATH ({os.environ.get('PATH', '')}): jupyter-asgard runs Slurm's "
                "client commands on the Jupyter server's host; load your site's Slurm module or install "
                "Slurm's client tools there"
            )
        return path

    def resolved(self, argv: list[str]) -> list[str]:
        """argv with its Slurm command's absolute path, counted with the rest: for a process another component
        must start (a terminal's srun runs under terminado's pty), and for this client's own."""
        argv = [self.command(argv[0]), *argv[1:]]
        self.calls[os.path.basename(argv[0])] += 1
        return argv

    async def spawn(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        stdin: int = asyncio.subprocess.DEVNULL,
    ) -> asyncio.subprocess.Process:
        """A Slurm command that runs for long (salloc holding an allocation, srun running a kernel), counted
        with the rest. In a session of its own, as jupyter_client starts local kernels: Ctrl-C in the server's
        terminal goes to the whole foreground process group, and would end steps and allocations even when the
        user then answers "n" to "Shut down this Jupyter server?"."""
        argv = self.resolved(argv)
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )

    async def run(
        self,
        argv: list[str],
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        """stdin: what the command reads (sbatch, its script)."""
        argv = self.resolved(argv)
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(stdin), timeout or self.timeout)
        except asyncio.TimeoutError:
            process.kill()
            await process.wait()
            raise SlurmError(f"`{' '.join(argv)}` did not answer within {timeout or self.timeout:.0f}s") from None
        return CommandResult(
            process.returncode or 0,
            stdout.decode(errors="replace"),
            stderr.decode(errors="replace"),
            os.path.basename(argv[0]),
        )

    async def squeue(self, job_ids: list[str]) -> dict[str, JobInfo]:
        """State of the given jobs; jobs Slurm no longer knows are absent from the answer."""
        if not job_ids:
            return {}
        result = (await self.run(squeue_argv(job_ids))).checked(tolerated=("Invalid job id",))
        return parse_squeue(result.stdout)

    async def scancel(self, job_id: str, step: str | None = None, signal: str | None = None) -> None:
        """Cancel or signal; a job or step that has already ended is no error (that is what was wanted)."""
        (await self.run(scancel_argv(job_id, step, signal))).checked(tolerated=ALREADY_GONE)

    async def scancel_named(self, name: str) -> None:
        (await self.run(scancel_named_argv(name))).checked(tolerated=ALREADY_GONE)

    async def sacct(self, job_ids: list[str]) -> dict[str, JobInfo]:
        return parse_sacct((await self.run(sacct_argv(job_ids))).checked().stdout)

    async def queue_positions(self, job_ids: list[str]) -> dict[str, int]:
        return parse_queue_positions((await self.run(queue_order_argv())).checked().stdout, job_ids)
