"""``jupyter asgard status`` as users run it: a subprocess that finds the real server and asks the real cluster."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jupyter_asgard.cli.status import UNKNOWN, state_text
from tests.cluster import LocalCluster
from tests.server import JupyterServer, free_port

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")


def status(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter", "asgard", "status", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def line_of(output: str, word: str) -> list[str]:
    """The words of the table line that holds word as a whole word."""
    lines = [line.split() for line in output.splitlines() if word in line.split()]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture
def server_kernel(jupyter_server: JupyterServer) -> Iterator[dict]:
    """A running Asgard kernel of the server: its row in the server's own API."""
    kernel_id = jupyter_server.start_kernel("asgard-test")
    try:
        rows = jupyter_server.request("GET", "/asgard/api/kernels").body["kernels"]
        yield next(row for row in rows if row["kernel_id"] == kernel_id)
    finally:
        jupyter_server.request("DELETE", f"/api/kernels/{kernel_id}")


@pytest.fixture
def unknown_job(slurm_cluster: LocalCluster) -> Iterator[str]:
    """An Asgard-named job no server started, as nbclient or a crashed server leaves one: its job id."""
    salloc = subprocess.run(
        ["salloc", "--no-shell", "-J", "jupyter-asgard-orphan-test"], capture_output=True, text=True, timeout=30
    )
    job_id = salloc.stderr.split()[-1]
    yield job_id
    subprocess.run(["scancel", job_id], capture_output=True)


def test_the_table_shows_a_server_kernel_and_a_job_no_server_knows(
    jupyter_server: JupyterServer, server_kernel: dict, unknown_job: str
) -> None:
    shown = status(jupyter_server.env)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0].split()[:3] == ["KERNEL", "KERNELSPEC", "STATE"]
    kernel = line_of(shown.stdout, server_kernel["kernel_id"][:8])
    assert kernel[1:3] == ["asgard-test", "RUNNING"]
    assert kernel[3] in ("gpu01", "gpu02") and kernel[3] == server_kernel["node"]
    assert server_kernel["job_id"] in kernel and jupyter_server.url + "/" in kernel
    unknown = line_of(shown.stdout, unknown_job)
    assert unknown[0] == "orphan-t" and "RUNNING" in unknown
    assert UNKNOWN in " ".join(unknown)
    assert UNKNOWN not in " ".join(kernel)


def test_json_lists_the_same_rows(jupyter_server: JupyterServer, server_kernel: dict, unknown_job: str) -> None:
    shown = status(jupyter_server.env, "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["job_id"]: row for row in json.loads(shown.stdout)["kernels"]}
    kernel = rows[server_kernel["job_id"]]
    assert kernel["kernel_id"] == server_kernel["kernel_id"] and kernel["known_to_server"] is True
    assert kernel["server"] == jupyter_server.url + "/" and kernel["state"] == "RUNNING"
    unknown = rows[unknown_job]
    assert unknown["kernel_id"] == "orphan-test" and unknown["known_to_server"] is False
    assert unknown["state"] == "RUNNING" and unknown["node"] in ("gpu01", "gpu02")


class _NoExtension(http.server.BaseHTTPRequestHandler):
    """A Jupyter server without jupyter_asgard, as far as status can tell."""

    def do_GET(self) -> None:
        self.send_error(404)

    def log_message(self, *args: object) -> None:
        pass


def test_silent_servers_are_noted_and_nothing_running_is_said(slurm_cluster: LocalCluster, tmp_path: Path) -> None:
    plain = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoExtension)
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    dead_url = f"http://127.0.0.1:{free_port()}/"
    for name, url in (("plain", f"http://127.0.0.1:{plain.server_port}/"), ("dead", dead_url)):
        info = {"url": url, "token": "x", "pid": os.getpid()}  # alive, so Jupyter keeps the file
        (tmp_path / f"jpserver-{name}.json").write_text(json.dumps(info))
    try:
        shown = status({**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)})
    finally:
        plain.shutdown()
    assert shown.returncode == 0
    assert shown.stdout.strip() == "No Asgard kernels."
    notes = [line for line in shown.stderr.splitlines() if line.startswith("note:")]
    refused = f"note: Jupyter server {dead_url} did not answer ([Errno 111] Connection refused)"
    assert notes == [f"{refused}; its kernels are not shown, so their jobs appear as unknown"]


@pytest.mark.parametrize(
    ("row", "text"),
    [
        ({"state": "RUNNING", "reason": "None", "queue_position": None}, "RUNNING"),
        # no expected start: Slurm has none yet, or answered with its placeholder (never shown as a time)
        (
            {"state": "PENDING", "reason": "Resources", "queue_position": 2},
            "PENDING (Resources, 2 ahead, start time unknown to Slurm)",
        ),
        ({"state": "PENDING", "reason": "", "queue_position": 0}, "PENDING (0 ahead, start time unknown to Slurm)"),
        (
            {"state": "PENDING", "reason": "Priority", "queue_position": None, "expected_start": ""},
            "PENDING (Priority, start time unknown to Slurm)",
        ),
        (
            {"state": "PENDING", "reason": "Resources", "queue_position": 0, "expected_start": "2026-11-30T14:35:00"},
            "PENDING (Resources, 0 ahead, expected 2026-11-30 14:35:00)",
        ),
        ({"state": "", "reason": "", "queue_position": None}, "STARTING"),
    ],
)
def test_state_says_why_a_kernel_waits(row: dict, text: str) -> None:
    assert state_text(row) == text
