"""Kernels that wait in the Slurm queue: state and reason while pending, start when GPUs free, cancel on shutdown."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from traitlets.config import Config

from jupyter_asgard.errors import KernelStartError
from jupyter_asgard.kernel.kernel_row import UNKNOWN_START
from jupyter_asgard.server.kernel_jobs import kernel_job
from jupyter_asgard.site.estimates import UNKNOWN_WORDS
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, execute, kernel_jobs, pending_kernel, shutdown, start, wait_for_state
from tests.server import JupyterServer
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")


async def test_a_queued_kernel_shows_why_and_starts_when_gpus_free(
    kernelspecs: KernelSpecs, gpus_taken: list[str], tmp_path: Path
) -> None:
    km, starting = pending_kernel("asgard-test", tmp_path)
    try:
        await wait_for_state(km, "PENDING")
        for _ in range(50):
            if km.provisioner.pending_reason == "Resources":
                break
            await asyncio.sleep(0.1)
        assert km.provisioner.pending_reason == "Resources"
        assert km.provisioner.job_id in " ".join(kernel_jobs())
        await asyncio.sleep(3)  # longer than a local kernel takes: the start is still waiting, not failed
        assert not starting.done()
        subprocess.run(["scancel", gpus_taken[0]], check=True)
        await asyncio.wait_for(starting, 60)
        assert km.provisioner.job_state == "RUNNING"
        assert (await execute(km, "print('queued, then ran')"))["stdout"].strip() == "queued, then ran"
    finally:
        starting.cancel()
        await shutdown(km)


async def test_a_queued_kernel_s_row_carries_slurm_s_expected_start(
    kernelspecs: KernelSpecs, gpus_taken_for_ten_minutes: list[str], tmp_path: Path
) -> None:
    """From the monitor's one squeue per interval (its StartTime is squeue --start's): the time the GPUs come
    free, when the other user's jobs reach their 10-minute limit."""
    km, starting = pending_kernel("asgard-test", tmp_path)
    try:
        await wait_for_state(km, "PENDING")
        for _ in range(100):  # the backfill scheduler estimates every bf_interval (2 s here)
            row = kernel_job(km.provisioner, km.provisioner.monitor)
            if row["expected_start"]:
                break
            await asyncio.sleep(0.2)
        assert row["state"] == "PENDING" and row["expected_start"], row
        job = km.provisioner.job_id
        squeue = subprocess.run(["squeue", "--start", "-h", "-j", job, "-o", "%S"], capture_output=True, text=True)
        slurm_says = datetime.fromisoformat(squeue.stdout.strip())
        assert abs((datetime.fromisoformat(row["expected_start"]) - slurm_says).total_seconds()) <= 5
        assert 8 * 60 <= row["expected_start_seconds"] <= 10 * 60 + 5  # in the future, when the blockers end
    finally:
        starting.cancel()
        await shutdown(km)


def test_a_start_slurm_cannot_tell_is_said_so_never_shown_as_a_time(
    jupyter_server: JupyterServer, kernelspecs: KernelSpecs, gpus_taken: list[str], slurm_cluster: LocalCluster
) -> None:
    """Every GPU held by jobs without a time limit: Slurm answers a start a year ahead (srun --test-only) or
    far beyond (squeue --start), its way of saying it does not know. The estimate, the kernel row and
    `jupyter asgard status` say that it does not know, beside the reason, and show no time."""
    time.sleep(3)  # the backfill scheduler has planned the other user's jobs (bf_interval 2 s)
    body = {"image": str(slurm_cluster.pytorch_image()), "gpus": "1"}
    estimate = jupyter_server.request("POST", "/asgard/api/estimate", body).body["estimate"]
    assert (estimate["start"], estimate["seconds"], estimate["now"], estimate["error"]) == ("", None, False, "")
    assert estimate["words"] == UNKNOWN_WORDS
    test_only = subprocess.run(
        ["srun", "--test-only", "--gpus=1", "true"], capture_output=True, text=True, timeout=30
    ).stderr
    slurm_says = datetime.fromisoformat(test_only.split(" to start at ")[1].split()[0])
    assert slurm_says - datetime.now() > timedelta(days=300), test_only  # the placeholder the words replace

    kernel_id = jupyter_server.request("POST", "/api/kernels", {"name": "asgard-test"}).body["id"]  # queued
    try:
        wait_for(
            lambda: jupyter_server.request("GET", f"/asgard/api/kernels/{kernel_id}").body.get("reason"),
            30,
            "no pending reason",
        )
        time.sleep(3)  # planned by the backfill scheduler again, with the kernel's job now
        row = jupyter_server.request("GET", f"/asgard/api/kernels/{kernel_id}").body
        squeue = subprocess.run(["squeue", "--start", "-h", "-j", row["job_id"], "-o", "%S"], capture_output=True)
        assert (row["state"], row["reason"]) == ("PENDING", "Resources"), row
        assert (row["expected_start"], row["expected_start_seconds"]) == ("", None), (row, squeue.stdout)
        shown = subprocess.run(
            [sys.executable, "-m", "jupyter", "asgard", "status"],
            capture_output=True,
            text=True,
            timeout=60,
            env=jupyter_server.env,
        ).stdout
        assert f"PENDING (Resources, 0 ahead, {UNKNOWN_START})" in shown, shown
    finally:
        jupyter_server.request("DELETE", f"/api/kernels/{kernel_id}")


async def test_abandoning_a_queued_start_cancels_the_job(
    kernelspecs: KernelSpecs, gpus_taken: list[str], tmp_path: Path
) -> None:
    """What nbclient and papermill do on Ctrl-C while the kernel waits: the start is cancelled."""
    km, starting = pending_kernel("asgard-test", tmp_path)
    await wait_for_state(km, "PENDING")
    job_id = km.provisioner.job_id
    starting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await starting
    assert not [line for line in kernel_jobs() if line.startswith(f"{job_id} ")]


async def test_cleanup_while_queued_cancels_the_job(
    kernelspecs: KernelSpecs, gpus_taken: list[str], tmp_path: Path
) -> None:
    """The provisioner's part of a shutdown during the queue wait; the start then fails with a clear reason."""
    km, starting = pending_kernel("asgard-test", tmp_path)
    await wait_for_state(km, "PENDING")
    await km.provisioner.cleanup(restart=False)
    with pytest.raises(KernelStartError, match="shut down before it started"):
        await asyncio.wait_for(starting, 30)
    assert kernel_jobs() == []


async def test_queue_timeout_cancels_the_job_and_says_why(
    kernelspecs: KernelSpecs, gpus_taken: list[str], tmp_path: Path
) -> None:
    with pytest.raises(KernelStartError) as failure:
        await start("asgard-test", tmp_path, site=Config({"PyxisProvisioner": {"queue_timeout": 3}}))
    assert "waited 3s in the queue (reason: Resources)" in str(failure.value)
    assert "queue_timeout" in str(failure.value)
