"""Detachable kernels on the real cluster: a server that dies leaves them running, the next one takes them over
under the same ids, with their variables, sessions and what they printed meanwhile; nothing is orphaned."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.detaching import (
    SITE,
    TICKS,
    again,
    in_background,
    kernel_row,
    killed,
    records,
    release_left_kernels,
    wait_for,
)
from tests.kernels import kernel_jobs
from tests.server import execute_via_websocket, started_server

pytestmark = pytest.mark.cluster


@pytest.fixture
def server_home(tmp_path: Path, detachable_kernelspec: str, no_kernel_jobs_left: None) -> Iterator[Path]:
    """A home for the test's servers; the detachable kernels they leave are released afterwards (a stopped
    server leaves them running, which is the point)."""
    home = tmp_path / "home"
    yield home
    release_left_kernels(home / "data")


def test_a_killed_server_s_detachable_kernels_are_taken_over_with_their_state_and_output(server_home: Path) -> None:
    server = started_server(server_home, SITE)
    try:
        quiet = server.start_kernel("asgard-detachable")
        busy = server.start_kernel("asgard-detachable")
        assert execute_via_websocket(server, quiet, "x = 42; print('set')") == "set\n"
        row = kernel_row(server, quiet)
        assert row["detachable"] is True
        job, node = row["job_id"], row["node"]
        in_background(server, busy, TICKS)
        wait_for(lambda: kernel_row(server, busy)["execution_state"] == "busy", 20, "the cell runs")
        killed(server)
        time.sleep(4)  # the cell prints on while no server holds its kernel
        assert job in "\n".join(kernel_jobs()), "the kernel's job ended with the server"

        server = again(server)
        listed = {kernel["id"]: kernel for kernel in server.request("GET", "/api/kernels").body}
        assert {quiet, busy} <= set(listed), listed
        assert listed[busy]["execution_state"] == "busy", listed[busy]
        assert execute_via_websocket(server, quiet, "print(x)") == "42\n"
        row = kernel_row(server, quiet)
        assert (row["job_id"], row["node"]) == (job, node)
        wait_for(lambda: kernel_row(server, busy)["execution_state"] == "idle", 30, "the cell ends")
        printed = "".join(entry["text"] for entry in kernel_row(server, busy)["while_detached"])
        assert "tick 3" in printed and "tick 11" not in printed, printed

        directory = records(server) / quiet
        assert stat.S_IMODE(records(server).stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / "kernel.json").stat().st_mode) == 0o600
        key = json.loads((directory / "kernel.json").read_text())["connection"]["key"]
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        script = subprocess.run(["scontrol", "write", "batch_script", job, "-"], capture_output=True, text=True).stdout
        assert key not in shown and key not in script and "asgard" in script.lower()
        assert not any(key in command_line for command_line in _command_lines())

        for kernel_id in (quiet, busy):
            assert server.request("DELETE", f"/api/kernels/{kernel_id}").status == 204
        wait_for(lambda: job not in "\n".join(kernel_jobs()), 30, "the job ends with its kernel")
        assert not any(records(server).iterdir())
    finally:
        server.stop()


def _command_lines() -> Iterator[str]:
    for entry in os.listdir("/proc"):
        try:
            yield Path(f"/proc/{entry}/cmdline").read_text(errors="replace")
        except OSError:
            continue
