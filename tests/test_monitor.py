"""The Slurm monitor's decisions, with a scripted client: what it asks Slurm, and when."""

from __future__ import annotations

import asyncio
from typing import Any

from jupyter_asgard.errors import SlurmError
from jupyter_asgard.slurm.monitor import SlurmMonitor
from jupyter_asgard.slurm.slurm_client import SlurmClient
from jupyter_asgard.slurm.slurm_commands import JobInfo


class ScriptedSlurm(SlurmClient):
    """Answers from a script instead of running commands (this tests the monitor, not Slurm)."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: dict[str, JobInfo] = {}
        self.accounting: dict[str, JobInfo] | None = {}
        self.down = False
        self.asked: list[tuple[str, Any]] = []

    async def squeue(self, job_ids: list[str]) -> dict[str, JobInfo]:
        self.calls["squeue"] += 1
        self.asked.append(("squeue", sorted(job_ids)))
        if self.down:
            raise SlurmError("Unable to contact slurm controller (connect failure)")
        return {job_id: info for job_id, info in self.queue.items() if job_id in job_ids}

    async def sacct(self, job_ids: list[str]) -> dict[str, JobInfo]:
        self.calls["sacct"] += 1
        self.asked.append(("sacct", sorted(job_ids)))
        if self.accounting is None:
            raise SlurmError("Slurm accounting storage is disabled")
        return {job_id: info for job_id, info in self.accounting.items() if job_id in job_ids}

    async def queue_positions(self, job_ids: list[str]) -> dict[str, int]:
        self.calls["squeue"] += 1
        self.asked.append(("positions", sorted(job_ids)))
        return {job_id: index for index, job_id in enumerate(sorted(job_ids))}


def monitor_with(slurm: ScriptedSlurm) -> SlurmMonitor:
    return SlurmMonitor(client=slurm, poll_interval=3600)


async def test_one_squeue_answers_for_every_watched_job() -> None:
    slurm = ScriptedSlurm()
    monitor = monitor_with(slurm)
    for job_id in map(str, range(1, 31)):
        slurm.queue[job_id] = JobInfo(job_id, state="RUNNING", nodes="gpu01")
        monitor.watch(job_id)
    await monitor.refresh()
    assert slurm.asked == [("squeue", sorted(map(str, range(1, 31))))]
    assert all(monitor.job(str(n)).state == "RUNNING" for n in range(1, 31))


async def test_a_job_that_leaves_the_queue_gets_its_final_state_from_sacct_once() -> None:
    slurm = ScriptedSlurm()
    monitor = monitor_with(slurm)
    slurm.queue["7"] = JobInfo("7", state="RUNNING")
    seen: list[JobInfo | None] = []
    monitor.watch("7", seen.append)
    await monitor.refresh()
    del slurm.queue["7"]
    slurm.accounting = {"7": JobInfo("7", state="TIMEOUT")}
    await monitor.refresh()
    await monitor.refresh()
    assert [entry for entry in slurm.asked if entry[0] == "sacct"] == [("sacct", ["7"])]
    assert [info.state if info else None for info in seen] == ["RUNNING", "TIMEOUT"]


async def test_without_accounting_sacct_is_not_asked_again() -> None:
    slurm = ScriptedSlurm()
    slurm.accounting = None
    monitor = monitor_with(slurm)
    for job_id in ("1", "2"):
        slurm.queue[job_id] = JobInfo(job_id, state="RUNNING")
        monitor.watch(job_id)
    await monitor.refresh()
    del slurm.queue["1"]
    await monitor.refresh()
    del slurm.queue["2"]
    await monitor.refresh()
    assert slurm.calls["sacct"] == 1
    assert monitor.accounting is False
    assert monitor.job("1") is None and monitor.job("2") is None


async def test_queue_positions_are_asked_only_while_a_job_waits() -> None:
    slurm = ScriptedSlurm()
    monitor = monitor_with(slurm)
    slurm.queue["3"] = JobInfo("3", state="PENDING", reason="Resources")
    monitor.watch("3")
    await monitor.refresh()
    assert monitor.positions == {"3": 0}
    slurm.queue["3"] = JobInfo("3", state="RUNNING")
    await monitor.refresh()
    assert monitor.positions == {}
    assert [entry[0] for entry in slurm.asked] == ["squeue", "positions", "squeue"]


async def test_slurm_down_marks_unreachable_keeps_last_state_and_recovers() -> None:
    slurm = ScriptedSlurm()
    monitor = monitor_with(slurm)
    slurm.queue["5"] = JobInfo("5", state="RUNNING")
    seen: list[JobInfo | None] = []
    monitor.watch("5", seen.append)
    await monitor.refresh()
    slurm.down = True
    await monitor.refresh()
    assert monitor.reachable is False
    assert "Unable to contact slurm controller" in monitor.last_error
    assert monitor.job("5").state == "RUNNING"
    slurm.down = False
    await monitor.refresh()
    assert monitor.reachable is True and monitor.last_error == ""
    assert len(seen) == 1  # a lost contact is no change of the job


class SlowSlurm(ScriptedSlurm):
    """An squeue that takes a while, as a real one does on a busy controller."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.finished = 0

    async def squeue(self, job_ids: list[str]) -> dict[str, JobInfo]:
        self.started.set()
        await asyncio.sleep(0.3)
        self.finished += 1
        return await super().squeue(job_ids)


async def test_stop_lets_the_squeue_in_flight_finish_and_polls_no_more() -> None:
    """Cancelling a task that starts a subprocess can hang the event loop (CPython gh-103847)."""
    slurm = SlowSlurm()
    monitor = SlurmMonitor(client=slurm, poll_interval=0.01)
    slurm.queue["7"] = JobInfo("7", state="RUNNING")
    monitor.watch("7")
    await slurm.started.wait()
    await monitor.stop()
    assert slurm.finished == 1 and monitor.job("7").state == "RUNNING"
    slurm.started.clear()
    await asyncio.sleep(0.1)
    assert not slurm.started.is_set()
    monitor.watch("8")  # a new watch polls again
    await asyncio.wait_for(slurm.started.wait(), 1)
    await monitor.stop()
    assert slurm.finished == 2


async def test_an_unwatched_job_is_asked_about_no_more_and_polling_ends_with_the_last() -> None:
    slurm = ScriptedSlurm()
    monitor = SlurmMonitor(client=slurm, poll_interval=0.01)
    seen: list[JobInfo | None] = []
    for job_id in ("1", "2"):
        slurm.queue[job_id] = JobInfo(job_id, state="RUNNING")
        monitor.watch(job_id, seen.append)
    await asyncio.sleep(0.05)
    monitor.unwatch("1")
    slurm.asked.clear()
    await asyncio.sleep(0.05)
    assert slurm.asked and all(ids == ["2"] for _, ids in slurm.asked)
    monitor.unwatch("2")
    await asyncio.sleep(0.05)
    assert monitor.stats()["watched_jobs"] == 0 and monitor.stats()["listeners"] == 0
    assert monitor.polling is False
