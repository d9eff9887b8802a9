"""One Slurm monitor per process: a single squeue call per interval for every kernel job.

Each provisioner watching its own job would put load on slurmctld that grows
with the number of kernels; on a busy cluster that is how a notebook server
becomes the site's noisiest client.  Provisioners (and the REST API) read job
state from here instead, and the number of Slurm calls per interval stays one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from traitlets import Float, Instance
from traitlets.config import SingletonConfigurable

from ..errors import SlurmError
from .slurm_client import SlurmClient
from .slurm_commands import ENDED_STATES, JobInfo

Listener = Callable[[JobInfo | None], None]


class SlurmMonitor(SingletonConfigurable):
    """Background poller of the jobs this process cares about."""

    poll_interval = Float(5.0, help="Seconds between two squeue calls for all watched jobs.").tag(config=True)
    client = Instance(SlurmClient, args=())

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.jobs: dict[str, JobInfo | None] = {}
        self.listeners: dict[str, list[Listener]] = {}
        self.positions: dict[str, int] = {}
        self.reachable = True
        self.last_error = ""
        self.accounting = True
        self.polls = 0
        self._task: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Future[None] | None = None
        self._refreshing_ids: set[str] = set()

    def watch(self, job_id: str, listener: Listener | None = None) -> None:
        """Follow job_id from now on; listener gets each change of its JobInfo (None once Slurm forgot it)."""
        self.jobs.setdefault(job_id, None)
        if listener:
            self.listeners.setdefault(job_id, []).append(listener)
        self._ensure_running()

    def unwatch(self, job_id: str) -> None:
        self.jobs.pop(job_id, None)
        self.listeners.pop(job_id, None)
        self.positions.pop(job_id, None)

    def job(self, job_id: str) -> JobInfo | None:
        return self.jobs.get(job_id)

    async def refresh(self) -> None:
        """Ask Slurm now about every watched job; concurrent callers share a call that covers their jobs."""
        if self._refreshing is not None and self._refreshing.get_loop() is not asyncio.get_running_loop():
            self._refreshing = None  # left behind by an event loop that is gone (a run_sync's, a test's)
        while self._refreshing is not None and not self._refreshing.done():
            covered = set(self.jobs) <= self._refreshing_ids
            await asyncio.shield(self._refreshing)
            if covered:
                return
        self._refreshing_ids = set(self.jobs)
        self._refreshing = asyncio.ensure_future(self._query(list(self.jobs)))
        await asyncio.shield(self._refreshing)

    async def _query(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            answer = await self.client.squeue(ids)
        except SlurmError as error:
            if self.reachable:
                self.log.warning("Slurm unreachable: %s", error)
            self.reachable, self.last_error = False, str(error)
            return
        if not self.reachable:
            self.log.info("Slurm reachable again")
        self.reachable, self.last_error = True, ""
        answer.update(await self._final_states([job_id for job_id in ids if job_id not in answer]))
        for job_id in ids:
            if job_id in self.jobs:
                self._update(job_id, answer.get(job_id) or self._settled(job_id))
        await self._queue_positions()

    def _settled(self, job_id: str) -> JobInfo | None:
        """A final state, once known, outlives the job's record in Slurm."""
        info = self.jobs.get(job_id)
        return info if info is not None and info.state in ENDED_STATES else None

    async def _final_states(self, gone: list[str]) -> dict[str, JobInfo]:
        """sacct, once, for jobs that left squeue while we still thought them alive."""
        unsettled = [
            job_id for job_id in gone if (info := self.jobs.get(job_id)) is not None and info.state not in ENDED_STATES
        ]
        if not unsettled or not self.accounting:
            return {}
        try:
            return await self.client.sacct(unsettled)
        except SlurmError as error:
            self.log.info("Slurm accounting unavailable, final job states come from squeue only: %s", error)
            self.accounting = False
            return {}

    async def _queue_positions(self) -> None:
        """How many jobs wait ahead of each pending kernel: one more squeue, only while some kernel waits."""
        pending = [job_id for job_id, info in self.jobs.items() if info is not None and info.state == "PENDING"]
        self.positions = await self.client.queue_positions(pending) if pending else {}

    def _update(self, job_id: str, info: JobInfo | None) -> None:
        if self.jobs.get(job_id) == info:
            return
        self.jobs[job_id] = info
        for listener in list(self.listeners.get(job_id, [])):
            listener(info)

    def _ensure_running(self) -> None:
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run())

    async def stop(self) -> None:
        """Stop polling, after the poll in flight if there is one.

        Cancelling a task while it starts a subprocess can hang its event loop for good (CPython
        gh-103847), and closing a loop cancels every task: so whoever closes the loop the monitor polls in
        (a server shutting down, a test) lets the squeue in flight finish first.  A later watch() polls
        again.
        """
        task = self._task
        if task is None or task.done() or task.get_loop() is not asyncio.get_running_loop():
            return
        if self._refreshing is not None and not self._refreshing.done():
            await asyncio.shield(self._refreshing)
        task.cancel()  # now between two polls: asleep, or about to be
        await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while self.jobs:
            self.polls += 1
            await self.refresh()
            await asyncio.sleep(self.poll_interval)
        self._task = None

    def stats(self) -> dict[str, Any]:
        """What the monitor costs Slurm: for admins, and for the test that it does not grow with kernels."""
        return {
            "poll_interval": self.poll_interval,
            "polls": self.polls,
            "watched_jobs": len(self.jobs),
            "listeners": sum(map(len, self.listeners.values())),
            "polling": self.polling,
            "calls": dict(self.client.calls),
            "reachable": self.reachable,
            "last_error": self.last_error,
        }

    @property
    def polling(self) -> bool:
        """Whether a poll loop runs: only while some job is watched."""
        return self._task is not None and not self._task.done()
