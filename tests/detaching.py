"""Shared by the tests of detachable kernels: a server that stops and one that starts again in its place."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.server import JupyterServer, execute_via_websocket

GRACE = 60  # seconds: the test kernelspec's detach_grace
SITE = "c.SlurmMonitor.poll_interval = 0.5\nc.PyxisProvisioner.detach = 'allowed'\n"  # a site that allows them
# A cell that runs for 30 s, printing as it goes: longer than any server's restart, however slow the machine.
TICKS = "import time\nfor i in range(30):\n    print('tick', i, flush=True)\n    time.sleep(1)"


def again(server: JupyterServer, poll: float = 0.2) -> JupyterServer:
    """A new server of the same user on the same URL, token, data and root (as after a crash or a reboot), the
    same app (`jupyter server` or `jupyter lab`); poll: as JupyterServer.start's."""
    fresh = JupyterServer(server.root_dir, server.log_path, app=server.app, extra_args=server.extra_args)
    fresh.port, fresh.token = server.port, server.token
    return fresh.start(server.env, poll=poll)


def killed(server: JupyterServer, how: signal.Signals = signal.SIGKILL) -> None:
    assert server.process is not None
    server.process.send_signal(how)
    server.process.wait(timeout=60)


def records(server: JupyterServer) -> Path:
    """The user's detachable kernels' records (the server's JUPYTER_DATA_DIR)."""
    return Path(server.env["JUPYTER_DATA_DIR"]) / "asgard" / "detachable"


def in_background(server: JupyterServer, kernel_id: str, code: str) -> threading.Thread:
    """Run a cell without waiting for it (its websocket ends with the server)."""

    def run() -> None:
        try:
            execute_via_websocket(server, kernel_id, code, timeout=120)
        except Exception:
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def kernel_row(server: JupyterServer, kernel_id: str) -> dict[str, Any]:
    answer = server.request("GET", f"/asgard/api/kernels/{kernel_id}")
    assert answer.status == 200, answer.body
    body: dict[str, Any] = answer.body
    return body


def wait_for(predicate: Callable[[], bool], timeout: float = 60, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"not within {timeout} s: {what}")


def job_listed(job: str) -> bool:
    """Whether the Asgard kernel job is still in the queue (squeue)."""
    from tests.kernels import kernel_jobs

    return job in " ".join(kernel_jobs()).split()


def release_left_kernels(data_dir: Path) -> None:
    """Cancel the jobs of detachable kernels a test's servers left running (a stopped server leaves them)."""
    for record in (data_dir / "asgard" / "detachable").glob("*/kernel.json"):
        job = json.loads(record.read_text()).get("job_id")
        if job:
            subprocess.run(["scancel", str(job)], capture_output=True)
