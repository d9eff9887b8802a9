"""jupyter_server's culler and Asgard kernels: an idle kernel is shut down and its allocation released; its
row counts down to that; and the countdown follows the culler's own rules (unit)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jupyter_asgard.server.culling import cull_countdown
from tests.kernels import KernelSpecs, kernel_jobs, wait_until_no_kernel_jobs
from tests.server import JupyterServer, running_server
from tests.waiting import wait_for

NOW = datetime(2026, 11, 30, 14, 0, tzinfo=timezone.utc)


def kernel(idle: int, state: str = "idle", connections: int = 0, **kernels: Any) -> Any:
    parent = SimpleNamespace(**{"cull_idle_timeout": 600, "cull_busy": False, "cull_connected": False, **kernels})
    parent._kernel_connections = {"k": connections}
    spec = SimpleNamespace(metadata={})
    return SimpleNamespace(
        last_activity=NOW - timedelta(seconds=idle), execution_state=state, parent=parent, kernel_spec=spec
    )


@pytest.mark.parametrize(
    ("km", "expected"),
    [
        (kernel(100), (100, 500)),
        (kernel(700), (700, 0)),
        (kernel(100, cull_idle_timeout=0), (100, None)),  # culling off
        (kernel(100, state="busy"), (100, None)),  # a busy kernel is not culled ...
        (kernel(100, state="busy", cull_busy=True), (100, 500)),  # ... unless the server culls busy ones
        (kernel(100, connections=1), (100, None)),  # a connected one neither ...
        (kernel(100, connections=1, cull_connected=True), (100, 500)),
        (SimpleNamespace(), (None, None)),  # outside jupyter_server: no activity tracked
    ],
)
def test_the_countdown_follows_the_culler_s_rules(km: Any, expected: tuple[int | None, int | None]) -> None:
    assert cull_countdown(km, "k", now=NOW) == expected


def test_a_kernel_manager_whose_kernel_waits_in_the_queue_has_no_countdown() -> None:
    """jupyter_server's kernel manager has no last_activity before its kernel started: its trait refuses None."""
    from jupyter_server.services.kernels.kernelmanager import ServerKernelManager

    assert cull_countdown(ServerKernelManager(), "k", now=NOW) == (None, None)


def test_a_kernelspec_s_own_cull_timeout_wins() -> None:
    km = kernel(100)
    km.kernel_spec.metadata = {"cull_idle_timeout": 3600}
    assert cull_countdown(km, "k", now=NOW) == (100, 3500)


@pytest.fixture
def culling_server(kernelspecs: KernelSpecs, tmp_path: Path) -> Iterator[JupyterServer]:
    with running_server(
        tmp_path,
        "c.SlurmMonitor.poll_interval = 0.5\n"
        "c.MappingKernelManager.cull_idle_timeout = 8\n"
        "c.MappingKernelManager.cull_interval = 1\n",
    ) as server:
        yield server


@pytest.mark.usefixtures("no_kernel_jobs_left")
def test_an_idle_kernel_is_culled_and_its_allocation_released(culling_server: JupyterServer) -> None:
    server = culling_server
    kernel_id = server.start_kernel("asgard-test")
    row = server.request("GET", f"/asgard/api/kernels/{kernel_id}").body
    assert row["job_id"] and any(line.startswith(row["job_id"] + " ") for line in kernel_jobs())
    counting = wait_for(
        lambda: (
            (r := server.request("GET", f"/asgard/api/kernels/{kernel_id}").body).get("cull_in_seconds") is not None
            and r
        ),
        10,
        "the row's countdown to the culler",
    )
    assert counting["idle_seconds"] is not None and 0 <= counting["cull_in_seconds"] <= 8
    wait_for(lambda: server.request("GET", "/api/kernels").body == [], 30, "the culler shutting the kernel down")
    assert wait_until_no_kernel_jobs(20) == []  # its GPUs are back
    assert server.request("GET", "/asgard/api/kernels").body["kernels"] == []
    assert f"kernel 'asgard-test' ({kernel_id}) with 0 connections due to" in server.log_path.read_text()


@pytest.mark.usefixtures("no_kernel_jobs_left")
def test_a_kernel_waiting_in_the_queue_is_not_culled_and_its_idle_time_starts_when_it_runs(
    culling_server: JupyterServer, gpus_taken: list[str]
) -> None:
    """With pending kernels jupyter_server's culler sees a queued kernel; its idle clock started at submission,
    so it would be shut down in the queue after the idle timeout. It has not started: it is not idle."""
    server = culling_server
    kernel_id = server.request("POST", "/api/kernels", {"name": "asgard-test"}, timeout=5).body["id"]
    time.sleep(12)  # longer than the cull timeout (8 s) with a cull every second
    row = server.request("GET", f"/asgard/api/kernels/{kernel_id}").body
    assert row["state"] == "PENDING" and row["cull_in_seconds"] is None, row
    subprocess.run(["scancel", *gpus_taken], check=True)
    assert server.await_kernel(kernel_id, 60) == ""  # the websocket closes again: 0 connections
    counting = wait_for(
        lambda: (r := server.request("GET", f"/asgard/api/kernels/{kernel_id}").body).get("cull_in_seconds") and r,
        10,
        "the countdown once the kernel runs",
    )
    assert counting["idle_seconds"] <= 5, counting  # counted from its start, not its submission
    wait_for(lambda: server.request("GET", "/api/kernels").body == [], 30, "the culler shutting the kernel down")
    assert wait_until_no_kernel_jobs(20) == []
