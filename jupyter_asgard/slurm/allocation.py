"""The kernel's Slurm allocation: requested once, waited for in the queue, kept across restarts.

The allocation is its own job (``salloc`` running a lease command that reads a
pipe the server holds, slurm_commands.LEASE_COMMAND) and the kernel only a
step in it, so a restart relaunches the step without a second trip through
the queue, and cancelling the allocation is the one act that frees the GPUs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import replace

from ..errors import KernelStartError, KernelWithdrawn, QueueWaitExceeded, SlurmError
from ..launch.launch_config import LaunchConfig
from .monitor import SlurmMonitor
from .slurm_client import SlurmClient
from .slurm_commands import ENDED_STATES, JobInfo, job_name, parse_salloc_line, salloc_argv

LEASE_NODE_PATIENCE = 10.0  # seconds from the grant until the lease command has named the node
SALLOC_PATIENCE = 10.0  # seconds for salloc to end once asked (its lease ended, then SIGTERM)

HINTS = {
    "invalid partition": "choose one of the partitions `sinfo -s` lists, or leave partition empty for the default",
    "unable to contact slurm controller": "Slurm's controller is not reachable from this host; try again "
    "later or ask your cluster admins",
    "requested node configuration is not available": "no node has what was asked for (GPU type or count, "
    "memory, CPUs); ask for less",
    "time limit": "ask for a shorter time, within the partition's limit (`sinfo -s`)",
    "invalid account": "use an account you belong to (`sacctmgr show assoc user=$USER`)",
    "invalid qos": "use a QOS your account may use",
    "invalid generic resource": "check the GPU type: `sinfo --Format=PartitionName,Gres` lists them",
}


def queue_wait_exceeded(queue_timeout: float, info: JobInfo | None) -> KernelStartError:
    """A kernel's job cancelled after waiting queue_timeout seconds in the queue: why it waited, and what helps."""
    reason = info.reason if info else "unknown"
    return QueueWaitExceeded(
        f"the kernel's Slurm job waited {queue_timeout:.0f}s in the queue (reason: {reason}) and was cancelled",
        "ask for fewer GPUs or another partition, or raise PyxisProvisioner.queue_timeout",
    )


def hint_for(message: str) -> str:
    lower = message.lower()
    return next((hint for needle, hint in HINTS.items() if needle in lower), "")


class Allocation:
    """One held salloc; its id, node and state are what the UI shows while the kernel waits or runs.

    salloc runs a local command reading a pipe the Jupyter server holds: if the server dies, however it
    dies, the command ends and salloc relinquishes the allocation, so GPUs never outlive the server.
    """

    def __init__(self, client: SlurmClient, monitor: SlurmMonitor, log: logging.Logger, kernel_id: str) -> None:
        self.client = client
        self.monitor = monitor
        self.log = log
        self.kernel_id = kernel_id
        self.job_id = ""
        self.node = ""  # as soon as the allocation is granted (its lease command names it)
        self.info: JobInfo | None = None
        self.granted = False  # salloc said so: its lease command runs
        self.revoked = False
        self.released = False
        self._salloc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._answered = asyncio.Event()  # granted, or salloc ended without a grant (then _refusal says why)
        self._refusal: KernelStartError | None = None
        self._late_cancel: asyncio.Task[None] | None = None
        self._ending: asyncio.Task[None] | None = None

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
        """Submit and wait until Slurm grants the allocation; cancel it on any failure or timeout."""
        argv = salloc_argv(config, self.job_name, comment, exclude, salloc=self.client.command("salloc"))
        self.log.info("Kernel %s: requesting a Slurm allocation: %s", self.kernel_id, " ".join(argv))
        self._salloc = await self.client.spawn(argv, env, stdin=asyncio.subprocess.PIPE)
        self._reader = asyncio.ensure_future(self._read_salloc())
        await self._unless_failed()  # withdrawn while salloc was being started: cancel() left it to us
        try:
            await asyncio.wait_for(self._answered.wait(), queue_timeout)
        except asyncio.TimeoutError:
            await self.cancel()
            raise queue_wait_exceeded(queue_timeout, self.info) from None
        except BaseException:
            await self.cancel()
            raise
        await self._unless_failed()
        # Granted: the monitor's next poll fills in the times.
        self.node = await self._granted_node()
        await self._unless_failed()  # withdrawn while the lease command was naming the node
        self.info = replace(self.info or JobInfo(self.job_id), state="RUNNING", reason="None", nodes=self.node)
        self.log.info("Kernel %s: Slurm job %s granted", self.kernel_id, self.job_id)

    async def _unless_failed(self) -> None:
        """Withdrawn (whatever salloc said then), or refused: salloc ended, and the request fails saying why."""
        failure: KernelStartError | None = KernelWithdrawn() if self.released else self._refusal
        if failure is not None:
            await self.cancel()
            raise failure

    async def _read_salloc(self) -> None:
        """salloc's stderr from its start to its end, whatever start or shutdown is cancelled meanwhile: the
        job's id (also one named after a withdrawal, see _named), the grant, Slurm's errors, and the end of a
        granted allocation under the kernel (scancel, time limit, node failure), which salloc says at once."""
        assert self._salloc is not None and self._salloc.stderr is not None
        errors = []
        async for raw in self._salloc.stderr:
            line = raw.decode(errors="replace").strip()
            event = parse_salloc_line(line)
            if event.job_id and not self.job_id:  # pending, granted, or revoked before either was said
                self._named(event.job_id)
            if event.kind == "pending":
                self.log.info("Kernel %s: Slurm job %s is waiting in the queue", self.kernel_id, self.job_id)
            elif event.kind == "granted":
                self.granted = True
                self._answered.set()
            elif self.granted:
                self.log.info("Kernel %s: %s", self.kernel_id, line)
                if event.kind == "revoked":
                    self.revoked = True
                    self._end_lease()
            elif event.kind == "error":
                errors.append(event.message)
        await self._salloc.wait()
        if self.granted:
            self.revoked = self.revoked or not self.released
        else:
            message = "; ".join(errors) or f"salloc exited with status {self._salloc.returncode}"
            self._refusal = KernelStartError(f"Slurm refused the kernel's allocation: {message}", hint_for(message))
        self._answered.set()

    def _named(self, job_id: str) -> None:
        """A withdrawn request's job is cancelled as soon as salloc names it: a salloc asked to stop before it
        knew its job's id goes on waiting for the allocation, deaf to SIGTERM."""
        self.job_id = job_id
        if self.released:
            self._late_cancel = asyncio.ensure_future(self._scancel())
        else:
            self.monitor.watch(self.job_id, self._on_change)

    async def _granted_node(self) -> str:
        """The node the lease command names; "" if it says nothing soon (a kernel start then waits for any
        first container start under way on an unknown node, see container_starts.py)."""
        assert self._salloc is not None and self._salloc.stdout is not None
        try:
            line = await asyncio.wait_for(self._salloc.stdout.readline(), LEASE_NODE_PATIENCE)
        except asyncio.TimeoutError:
            return ""
        return line.decode(errors="replace").strip()

    def _on_change(self, info: JobInfo | None) -> None:
        if info is None and self.info is not None and self.info.state != "PENDING":
            return  # Slurm forgot a job it ran; what we last knew of it says more than nothing
        self.info = info
        if info is not None and info.state == "PENDING":
            self.log.info("Kernel %s: Slurm job %s pending (%s)", self.kernel_id, self.job_id, info.reason)

    async def ended(self) -> str:
        """The final state if the allocation is over (CANCELLED, TIMEOUT, NODE_FAIL, ...), else ""."""
        if self.revoked or self.released:
            await self.monitor.refresh()
        if self.info is not None and self.info.state in ENDED_STATES:
            return self.info.state
        return "REVOKED" if self.revoked or self.released else ""

    def forget(self) -> None:
        """The kernel is done with this allocation: the monitor stops asking Slurm about it and drops its
        listener (which holds this object, salloc's process and all)."""
        if self.job_id:
            self.monitor.unwatch(self.job_id)

    def _end_lease(self) -> None:
        if self._salloc is not None and self._salloc.stdin is not None and not self._salloc.stdin.is_closing():
            self._salloc.stdin.close()

    async def cancel(self) -> None:
        """Release the allocation (or withdraw the request, at any moment of it); safe to call twice. The
        release goes on when its caller is cancelled (jupyter_server gives up on a start after a while): a
        salloc stopped halfway can leave its job in the queue."""
        self.released = True
        self._end_lease()
        if self._salloc is None:
            return  # request() is starting salloc, and ends it once started
        if self._ending is None:
            self._ending = asyncio.ensure_future(self._end())
        await asyncio.shield(self._ending)

    async def _end(self) -> None:
        if self.job_id:
            await self._scancel()
        await self._end_salloc()
        assert self._reader is not None
        await asyncio.wait([self._reader], timeout=SALLOC_PATIENCE)  # what salloc said last, its job's id too
        if self._late_cancel is not None:
            await self._late_cancel
        if not self.job_id:  # it ended before it named its job, which it may have submitted all the same
            await self._scancel(by_name=True)

    async def _scancel(self, by_name: bool = False) -> None:
        """Never raises: Slurm unreachable (often why salloc failed) is logged, and the start's own error
        stays the one the user sees."""
        job = self.job_name if by_name else self.job_id
        self.log.info("Kernel %s: cancelling Slurm job %s", self.kernel_id, job)
        try:
            await (self.client.scancel_named(job) if by_name else self.client.scancel(job))
        except SlurmError as error:
            self.log.warning("Kernel %s: could not cancel Slurm job %s: %s", self.kernel_id, job, error)

    async def _end_salloc(self) -> None:
        """salloc gone. Its lease ended, it relinquishes a granted allocation; one still waiting for its job
        withdraws it on SIGTERM. SIGKILL only as the last resort: a killed salloc leaves its job in the queue
        (which _end then cancels)."""
        assert self._salloc is not None
        endings: list[Callable[[], None] | None] = [None] if self.granted else []
        for ending in [*endings, self._salloc.terminate, self._salloc.kill]:
            if ending is not None:
                with contextlib.suppress(ProcessLookupError):
                    ending()
            try:
                await asyncio.wait_for(self._salloc.wait(), SALLOC_PATIENCE)
                break
            except asyncio.TimeoutError:
                continue
