"""Detachable kernels across Jupyter servers: left running when a server stops, taken over by the next one.

- While the server runs, it says every HOLD_REFRESH seconds that it holds each of its detachable kernels, and
  writes down each one's notebook session (jupyter_server keeps sessions in memory only).
- When it stops on purpose (SIGTERM, Ctrl-C), it lets them go before jupyter_server shuts its kernels down:
  they leave the kernel manager, so nothing is sent to them. When it dies (SIGKILL, its host gone), there is
  nothing to do: the kernels run on in their batch jobs, and their records say who held them last.
- When a server starts, before it serves its first request, it takes over every detachable kernel of its
  user that nobody holds, under the same kernel id, with its session, so that JupyterLab's open tabs find
  their kernels where they were; under JupyterHub, only those of its own server (a user's named servers each
  have kernels of their own). Kernels it finds but does not take (another of the user's servers', held by a
  running server, kernelspec gone) are listed in /asgard/api/detached, with Adopt and Release. Kernels that
  ended while detached are reported once, with why, and forgotten.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..errors import AsgardError, Conflict, NotFound, SlurmError
from ..kernel.detach_records import (
    HOLD_REFRESH,
    THIS_SERVER,
    KernelRecord,
    all_records,
    hub_server,
    hub_server_label,
    private_root,
    records_root,
)
from ..kernel.kept_process import exit_status
from ..kernel.kernel_row import why_ended
from ..kernel.provisioner import PyxisProvisioner, adoptions, live_provisioners
from ..slurm.monitor import SlurmMonitor
from ..slurm.slurm_commands import ENDED_STATES, JobInfo

KEEPER_REASONS = {
    "grace": "no Jupyter server of yours took it over within its grace ({grace} s)",
    "released": "it was released",
    "signal": "Slurm ended it (its time limit, scancel, or its node taken out of service)",
}


def ended_reason(
    info: JobInfo | None, keeper_said: dict[str, Any], record: dict[str, Any], exited: int | None = None
) -> str:
    """Why a kernel ended while detached: Slurm's final state while it remembers the job (a time limit, a node
    failure), unless the keeper ended it itself (the job then "completed"), else what the keeper said; or the
    kernel itself exited, in a job that still runs (its exit status)."""
    if exited is not None and (info is None or info.state == "RUNNING"):
        return f"the kernel exited while no server held it (exit status {exited}); its allocation is released"
    reason = str(keeper_said.get("reason") or "")
    if info is not None and info.state in ENDED_STATES and (info.state != "COMPLETED" or reason not in KEEPER_REASONS):
        return why_ended(info.state)
    if reason in KEEPER_REASONS:
        return KEEPER_REASONS[reason].format(grace=record.get("grace", "?"))
    if not record.get("connection"):
        return "its start was not over when the server that started it stopped"
    return "its job ended while no server held it (Slurm no longer says why)"


def found_row(record: KernelRecord, data: dict[str, Any], why: str) -> dict[str, Any]:
    """A detached kernel this server found and did not take over, for /asgard/api/detached."""
    holder = record.holder()
    session = data.get("session") or {}
    return {
        "kernel_id": record.kernel_id,
        "kernel_name": data.get("kernel_name", ""),
        "job_id": data.get("job_id", ""),
        "node": data.get("node", ""),
        "path": session.get("path", ""),
        "held_by": holder.host if holder.server else "",
        "hub_server": data.get("hub_server"),
        "why": why,
    }


class DetachedKernels:
    """The server's side of detachable kernels (see the module's docstring)."""

    def __init__(self, serverapp: Any, monitor: SlurmMonitor, log: logging.Logger) -> None:
        self.serverapp = serverapp
        self.monitor = monitor
        self.log = log
        self.found: dict[str, dict[str, Any]] = {}
        self.ended: list[dict[str, Any]] = []
        self._sessions: dict[str, dict[str, Any]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._refreshes: set[asyncio.Task[None]] = set()

    # --- taking over ---------------------------------------------------------------

    async def take_over(self) -> None:
        """Every detachable kernel of this user that nobody holds, before the server's first request."""
        if not await asyncio.to_thread(records_root().is_dir):
            return  # this user never had a detachable kernel
        records = await asyncio.to_thread(lambda: all_records(private_root()))
        data = {record.kernel_id: await asyncio.to_thread(record.read) for record in records}
        jobs = await self._jobs([str(item.get("job_id") or "") for item in data.values()])
        takes = []
        for record in records:
            item = data[record.kernel_id]
            info = jobs.get(str(item.get("job_id") or "")) if jobs is not None else JobInfo("", state="RUNNING")
            exited = await asyncio.to_thread(exit_status, record, int(item.get("start") or 0))
            if info is None or info.state != "RUNNING" or not item.get("connection") or exited is not None:
                await self._report_ended(record, item, info, exited)
            else:
                takes.append(self._try_adopt(record.kernel_id, item))
        await asyncio.gather(*takes)

    async def _try_adopt(self, kernel_id: str, data: dict[str, Any]) -> None:
        """adopt, at the server's start: a kernel it cannot take is listed in found, with why, not an error."""
        with contextlib.suppress(AsgardError):
            await self.adopt(kernel_id, data, at_start=True)

    async def _jobs(self, job_ids: list[str]) -> dict[str, JobInfo] | None:
        """Slurm's word on these jobs; None where Slurm cannot be asked (then each kernel's answer tells)."""
        try:
            return await self.monitor.client.squeue([job_id for job_id in job_ids if job_id])
        except SlurmError as error:
            self.log.warning("Detached kernels: Slurm did not answer (%s); trying to reach them directly", error)
            return None

    async def adopt(self, kernel_id: str, data: dict[str, Any] | None = None, at_start: bool = False) -> None:
        """Take one detached kernel over under its own id, with its notebook session; Conflict where it cannot.
        at_start: the server's own taking over, which leaves another server's kernels to it; a user's Adopt
        moves a kernel to this server from whichever it belonged to."""
        record = KernelRecord(await asyncio.to_thread(private_root), kernel_id)
        data = data if data is not None else await asyncio.to_thread(record.read)
        if not data:
            raise NotFound(f"no detached kernel {kernel_id} of yours")
        why = await asyncio.to_thread(self._unadoptable, record, data, at_start)
        if why:
            self.found[kernel_id] = found_row(record, data, why)
            raise Conflict(f"the detached kernel {kernel_id} cannot be taken over: {why}")
        adoptions[kernel_id] = record
        kernels = self.serverapp.kernel_manager
        try:
            await kernels.start_kernel(kernel_name=data["kernel_name"], kernel_id=kernel_id)
            manager = kernels.get_kernel(kernel_id)
            await manager.ready
        except Exception as error:
            adoptions.pop(kernel_id, None)
            self.log.error("Detached kernel %s could not be taken over: %s", kernel_id, error)
            self.found[kernel_id] = found_row(record, data, f"it did not answer when taken over ({error})")
            raise Conflict(f"the detached kernel {kernel_id} did not answer when taken over: {error}") from None
        self.found.pop(kernel_id, None)
        if data.get("hub_server") != hub_server():
            await asyncio.to_thread(record.update, hub_server=hub_server())  # it is this server's from now on
        provisioner = manager.provisioner
        state = provisioner.while_detached.get("execution_state") if isinstance(provisioner, PyxisProvisioner) else ""
        manager.execution_state = "busy" if state == "busy" else "idle"
        await self._restore_session(kernel_id, data.get("session") or {})
        self.log.info("Took over detached kernel %s (Slurm job %s on %s)", kernel_id, data["job_id"], data["node"])

    def _unadoptable(self, record: KernelRecord, data: dict[str, Any], at_start: bool = False) -> str:
        """Why this server may not take the kernel over ("" where it may), claiming it where it may."""
        kernelspecs = self.serverapp.kernel_spec_manager.find_kernel_specs()
        if data.get("kernel_name") not in kernelspecs:
            return (
                f"its kernelspec {data.get('kernel_name')!r} no longer exists; release it, or make the kernelspec again"
            )
        owner, here = data.get("hub_server"), hub_server()
        others = hub_server_label(owner) if isinstance(owner, str) and here is not None and owner != here else ""
        if at_start and others:
            return f"it belongs to {others}, which takes it over when it starts; Adopt moves it here"
        holder = record.holder()
        if not holder.gone(time.time()) or not record.claim(THIS_SERVER, holder):
            return f"{others or 'another Jupyter server of yours'} holds it (on {holder.host or 'another host'})"
        return ""

    async def _restore_session(self, kernel_id: str, session: dict[str, Any]) -> None:
        """The notebook's session as it was, so that a reopened notebook is on its old kernel."""
        if not session.get("path"):
            return
        sessions = self.serverapp.session_manager
        if await sessions.session_exists(path=session["path"]):
            return
        await sessions.save_session(
            session.get("id") or kernel_id,
            path=session["path"],
            name=session.get("name"),
            type=session.get("type"),
            kernel_id=kernel_id,
        )
        self._sessions[kernel_id] = session

    async def _report_ended(
        self, record: KernelRecord, data: dict[str, Any], info: JobInfo | None, exited: int | None = None
    ) -> None:
        keeper_said = await asyncio.to_thread(record.ended)
        why = ended_reason(info, keeper_said, data, exited)
        session = data.get("session") or {}
        self.log.warning(
            "Detachable kernel %s (Slurm job %s) ended while detached: %s", record.kernel_id, data.get("job_id"), why
        )
        self.ended.append(
            {
                "kernel_id": record.kernel_id,
                "kernel_name": data.get("kernel_name", ""),
                "job_id": data.get("job_id", ""),
                "path": session.get("path", ""),
                "why": why,
            }
        )
        await self._end(record, data)

    async def release(self, kernel_id: str) -> None:
        """End a detached kernel this server found (and did not take over): its job and its record."""
        record = KernelRecord(await asyncio.to_thread(private_root), kernel_id)
        data = await asyncio.to_thread(record.read)
        if not data:
            raise NotFound(f"no detached kernel {kernel_id} of yours")
        await self._end(record, data)
        self.found.pop(kernel_id, None)

    async def _end(self, record: KernelRecord, data: dict[str, Any]) -> None:
        await asyncio.to_thread(record.release)
        if data.get("job_id"):
            try:
                await self.monitor.client.scancel(str(data["job_id"]))
            except SlurmError as error:
                self.log.warning("Could not cancel Slurm job %s: %s", data["job_id"], error)
        await asyncio.to_thread(record.remove)

    # --- holding -------------------------------------------------------------------------

    def start_holding(self) -> None:
        if self._refresher is None:
            self._refresher = asyncio.ensure_future(self._hold())

    def watch_sessions(self) -> None:
        """Write a detachable kernel's session down as soon as it changes (a notebook opened on it, renamed),
        not at the next refresh only: a server that dies a moment later must not lose it."""
        sessions = self.serverapp.session_manager
        for name in ("save_session", "update_session"):
            setattr(sessions, name, self._then_refresh(getattr(sessions, name)))

    def _then_refresh(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Coroutine[Any, Any, Any]]:
        """method, then a refresh: now, and once each kernel still starting has started (a notebook's session
        is made while its kernel starts, and the kernel's record is written only once it runs)."""

        async def changed(*args: Any, **kwargs: Any) -> Any:
            result = await method(*args, **kwargs)
            if self._held():
                await self.refresh()
            kernels = self.serverapp.kernel_manager
            for kernel_id in kernels.list_kernel_ids():
                ready = kernels.get_kernel(kernel_id).ready
                if not ready.done():
                    ready.add_done_callback(self._refresh_soon)
            return result

        return changed

    def _refresh_soon(self, _started: Any) -> None:
        task = asyncio.ensure_future(self.refresh())
        self._refreshes.add(task)  # the loop keeps only weak references to its tasks
        task.add_done_callback(self._refreshes.discard)

    async def _hold(self) -> None:
        while True:
            await asyncio.sleep(HOLD_REFRESH)
            try:
                await self.refresh()
            except Exception:
                self.log.exception("Detachable kernels: could not refresh their records")

    async def refresh(self) -> None:
        """Say again that this server holds its detachable kernels; write down their sessions where changed."""
        sessions = {item["kernel"]["id"]: item for item in await self.serverapp.session_manager.list_sessions()}
        for provisioner in self._held():
            assert provisioner.record is not None
            if not await asyncio.to_thread(provisioner.record.exists):
                continue  # released elsewhere (`jupyter asgard release`): its job ends, and the kernel with it
            if not await asyncio.to_thread(provisioner.record.refresh, THIS_SERVER):
                self.log.error(
                    "Kernel %s: another Jupyter server of yours has taken it over (this one did not say it held "
                    "it for too long); this server lets it go",
                    provisioner.kernel_id,
                )
                await self._leave(provisioner, let_go=False)
                continue
            item = sessions.get(provisioner.kernel_id)
            session = {key: item[key] for key in ("id", "path", "name", "type")} if item else {}
            if session and session != self._sessions.get(provisioner.kernel_id):
                await asyncio.to_thread(provisioner.record.update, session=session)
                self._sessions[provisioner.kernel_id] = session

    def _held(self) -> list[PyxisProvisioner]:
        """This server's running detachable kernels (not those still starting: they have nothing to keep)."""
        return [
            provisioner
            for provisioner in live_provisioners()
            if provisioner.record is not None and provisioner.connection_info and not provisioner.detached
        ]

    async def detach_all(self) -> None:
        """The server stops: let its detachable kernels go before jupyter_server shuts its kernels down."""
        if self._refresher is not None:
            self._refresher.cancel()
        await self.refresh()
        # A kernel whose shutdown is under way (jupyter_server answers a DELETE before its kernel is down) ends
        # with the server, as was asked: left here, it would hold its allocation until its grace.
        held = [provisioner for provisioner in self._held() if not getattr(provisioner.parent, "shutting_down", False)]
        for provisioner in held:
            try:
                await self._leave(provisioner)
            except Exception:  # the stop goes on: a failed extension stop left the server running until killed
                self.log.exception("Kernel %s: could not be left running detached", provisioner.kernel_id)
        if held:
            self.log.info("Left %d detachable kernel(s) running for your next Jupyter server", len(held))

    async def _leave(self, provisioner: PyxisProvisioner, let_go: bool = True) -> None:
        """Take the kernel out of this server (jupyter_server then sends it nothing: no shutdown request), and
        where let_go, say it is free."""
        kernels, kernel_id = self.serverapp.kernel_manager, provisioner.kernel_id
        if kernel_id in kernels:
            kernels.stop_watching_activity(kernel_id)
            kernels.get_kernel(kernel_id).stop_restarter()
            kernels.remove_kernel(kernel_id)
        await provisioner.let_go(say_so=let_go)

    def listing(self) -> dict[str, Any]:
        return {"found": list(self.found.values()), "ended": list(self.ended), "server_pid": os.getpid()}
