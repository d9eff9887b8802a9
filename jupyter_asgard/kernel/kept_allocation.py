"""A detachable kernel's allocation: a batch job whose script, the keeper, holds it on the node.

An allocation held by salloc on the login node ends with the server (allocation.py), which is right for every
other kernel. A detachable kernel's must outlive it, so it is a batch job (never requeued) running
node/keeper.py, which ends it when no server has held the kernel for its grace, or at once when the kernel is
shut down. KeptAllocation offers what the provisioner uses of an Allocation, and starts the kernel's steps
through the keeper (KeptProcess).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import KernelStartError, KernelWithdrawn, SlurmError
from ..launch.launch_config import LaunchConfig
from ..node import keeper
from ..slurm.allocation import hint_for, queue_wait_exceeded
from ..slurm.monitor import SlurmMonitor
from ..slurm.slurm_client import SlurmClient
from ..slurm.slurm_commands import ENDED_STATES, JobInfo, job_name, parse_sbatch, sbatch_argv
from .detach_records import KernelRecord
from .kept_process import KeptProcess, last_start

KEEPER_SOURCE = Path(keeper.__file__).read_text()
KEEPER_WAIT = 0.2  # seconds between looks for the keeper's start while the job waits


def keeper_script(python: str) -> bytes:
    """The batch script: the keeper's source under a #! line naming the node's python3."""
    return f"#!{python}\n{KEEPER_SOURCE}".encode()


class KeptAllocation:
    """One detachable kernel's batch job; its id, node and state are what the UI shows."""

    def __init__(
        self,
        client: SlurmClient,
        monitor: SlurmMonitor,
        log: logging.Logger,
        record: KernelRecord,
        grace: float,
        keeper_python: str,
    ) -> None:
        self.client, self.monitor, self.log = client, monitor, log
        self.record, self.grace, self.keeper_python = record, grace, keeper_python
        self.kernel_id = record.kernel_id
        self.job_id = ""
        self.node = ""
        self.info: JobInfo | None = None
        self.granted = False
        self.revoked = False
        self.released = False

    @property
    def job_name(self) -> str:
        return job_name(self.kernel_id)

    async def request(
        self,
        config: LaunchConfig,
        comment: str,
        queue_timeout: float,
        env: dict[str, str],
        exclude: tuple[str, ...] = (),
    ) -> None:
        """Submit the keeper and wait until it runs on its node; cancel the job on any failure or timeout."""
        argv = sbatch_argv(
            config, self.job_name, str(self.record.path("keeper.log")), exclude, sbatch=self.client.command("sbatch")
        )
        env = {**env, "ASGARD_KEEPER_DIR": str(self.record.directory), "ASGARD_DETACH_GRACE": str(self.grace)}
        self.log.info("Kernel %s: submitting a detachable kernel's batch job: %s", self.kernel_id, " ".join(argv))
        try:
            result = await self.client.run(argv, env=env, stdin=keeper_script(self.keeper_python))
            if result.returncode != 0 or not parse_sbatch(result.stdout):
                message = result.stderr.strip().removeprefix("sbatch: error: ") or f"sbatch said {result.stdout!r}"
                raise KernelStartError(f"Slurm refused the kernel's batch job: {message}", hint_for(message))
            self._named(parse_sbatch(result.stdout))
            await asyncio.to_thread(self.record.update, kernel_id=self.kernel_id, job_id=self.job_id)
            await asyncio.wait_for(self._keeper_started(), queue_timeout)
        except asyncio.TimeoutError:
            await self.cancel()
            raise queue_wait_exceeded(queue_timeout, self.info) from None
        except BaseException:
            await self.cancel()
            raise
        self.info = replace(self.info or JobInfo(self.job_id), state="RUNNING", reason="None", nodes=self.node)
        self.log.info("Kernel %s: Slurm job %s granted, its keeper runs on %s", self.kernel_id, self.job_id, self.node)

    def _named(self, job_id: str) -> None:
        self.job_id = job_id
        self.monitor.watch(job_id, self._on_change)

    async def _keeper_started(self) -> None:
        while True:
            if self.released:
                raise KernelWithdrawn()
            found = await asyncio.to_thread(self.record.keeper)
            if found.get("node"):
                self.node, self.granted = str(found["node"]), True
                return
            if self.info is not None and self.info.state in ENDED_STATES:
                log = await asyncio.to_thread(self._keeper_log)
                raise KernelStartError(
                    f"the kernel's batch job {self.job_id} ended ({self.info.state}) before its keeper ran"
                    + (f": {log}" if log else ""),
                    "the compute node runs the keeper with c.PyxisProvisioner.keeper_python, in your Jupyter data "
                    f"directory ({self.record.directory.parent}): the node must have that Python and see that "
                    "directory (a home shared with the login nodes); ask your cluster admins if either is missing",
                )
            await asyncio.sleep(KEEPER_WAIT)

    def _keeper_log(self) -> str:
        try:
            return self.record.path("keeper.log").read_text(errors="replace").strip()[-2000:]
        except OSError:
            return ""

    def adopt(self, job_id: str, node: str) -> None:
        """Hold the batch job of a kernel another server started."""
        self._named(job_id)
        self.node, self.granted = node, True
        self.info = JobInfo(job_id, state="RUNNING", nodes=node)

    def _on_change(self, info: JobInfo | None) -> None:
        if info is None and self.info is not None and self.info.state != "PENDING":
            return
        self.info = info
        if info is not None and info.state in ENDED_STATES and self.granted:
            self.revoked = True

    async def spawn(self, argv: list[str], env: dict[str, str]) -> Any:
        """Start the kernel's step through the keeper, as start number one more than the last."""
        number = await asyncio.to_thread(last_start, self.record) + 1
        return await KeptProcess.start(self.record, number, argv, env, self.job_over)

    def job_over(self) -> bool:
        return self.revoked

    async def ended(self) -> str:
        """The final state if the job is over (CANCELLED, TIMEOUT, NODE_FAIL, ...), else ""."""
        if self.revoked or self.released:
            await self.monitor.refresh()
        if self.info is not None and self.info.state in ENDED_STATES:
            return self.info.state
        return "REVOKED" if self.released else ""

    def forget(self) -> None:
        if self.job_id:
            self.monitor.unwatch(self.job_id)

    async def cancel(self) -> None:
        """End the job: the keeper ends it at once on "released"; scancel too, for a job still queued."""
        self.released = True
        await asyncio.to_thread(self.record.release)
        if not self.job_id:
            return
        try:
            await self.client.scancel(self.job_id)
        except SlurmError as error:
            self.log.warning("Kernel %s: could not cancel Slurm job %s: %s", self.kernel_id, self.job_id, error)
