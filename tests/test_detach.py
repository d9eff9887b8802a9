"""Detachable kernels on the real cluster: a server that dies leaves them running, the next one takes them over
under the same ids, with their variables, sessions and what they printed meanwhile; nothing is orphaned."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.detaching import (
    SITE,
    TICKS,
    again,
    in_background,
    job_listed,
    kernel_row,
    killed,
    records,
    wait_for,
)
from tests.server import JupyterServer, execute_via_websocket, started_server

pytestmark = pytest.mark.cluster


def test_a_killed_server_s_detachable_kernels_are_taken_over_with_their_state_and_output(detach_home: Path) -> None:
    server = started_server(detach_home, SITE)
    try:
        quiet = server.start_kernel("asgard-detachable")
        busy = server.start_kernel("asgard-detachable")
        session = {"path": "analysis.ipynb", "type": "notebook", "name": "", "kernel": {"id": quiet}}
        assert server.request("POST", "/api/sessions", session).status == 201
        assert execute_via_websocket(server, quiet, "x = 42; print('set')") == "set\n"
        row = kernel_row(server, quiet)
        assert row["detachable"] is True and row["encryption"] != "none"
        job, node, encryption = row["job_id"], row["node"], row["encryption"]
        in_background(server, busy, TICKS)
        wait_for(lambda: kernel_row(server, busy)["execution_state"] == "busy", 20, "the cell runs")
        killed(server)
        time.sleep(4)  # the cell prints on while no server holds its kernel
        assert job_listed(job), "the kernel's job ended with the server"

        server = again(server)
        listed = {kernel["id"]: kernel for kernel in server.request("GET", "/api/kernels").body}
        assert {quiet, busy} <= set(listed), listed
        assert listed[busy]["execution_state"] == "busy", listed[busy]
        assert execute_via_websocket(server, quiet, "print(x)") == "42\n"
        row = kernel_row(server, quiet)
        assert (row["job_id"], row["node"], row["encryption"]) == (job, node, encryption)
        sessions = server.request("GET", "/api/sessions").body
        assert [(item["path"], item["kernel"]["id"]) for item in sessions] == [("analysis.ipynb", quiet)]
        wait_for(lambda: kernel_row(server, busy)["execution_state"] == "idle", 60, "the cell ends")
        printed = "".join(entry["text"] for entry in kernel_row(server, busy)["while_detached"])
        assert "tick 3" in printed and "tick 29" not in printed, printed

        directory = records(server) / quiet
        assert stat.S_IMODE(records(server).stat().st_mode) == 0o700
        assert stat.S_IMODE((directory / "kernel.json").stat().st_mode) == 0o600
        key = json.loads((directory / "kernel.json").read_text())["connection"]["key"]
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
        script = subprocess.run(["scontrol", "write", "batch_script", job, "-"], capture_output=True, text=True).stdout
        assert key not in shown and key not in script and "asgard" in script.lower()
        assert not any(key in command_line for command_line in _command_lines())

        jobs = [kernel_row(server, kernel_id)["job_id"] for kernel_id in (quiet, busy)]
        for kernel_id in (quiet, busy):
            assert server.request("DELETE", f"/api/kernels/{kernel_id}").status == 204
        # With pending kernels jupyter_server answers a DELETE at once and shuts the kernel down after.
        wait_for(lambda: not server.request("GET", "/api/kernels").body, 30, "both kernels are shut down")
        wait_for(lambda: not any(map(job_listed, jobs)), 30, "the jobs end with their kernels")
        assert not any(records(server).iterdir())
    finally:
        server.stop()


def _command_lines() -> Iterator[str]:
    for entry in os.listdir("/proc"):
        try:
            yield Path(f"/proc/{entry}/cmdline").read_text(errors="replace")
        except OSError:
            continue


def started_in_terminal(home: Path) -> JupyterServer:
    """started_server, run as in a terminal of its own (Ctrl-C reaches its whole process group)."""
    home.mkdir(parents=True)
    (home / "jupyter_server_config.py").write_text(SITE)
    (home / "root").mkdir()
    env = {**os.environ, "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    server = JupyterServer(
        home / "root", home / "server.log", extra_args=[f"--config={home / 'jupyter_server_config.py'}"]
    )
    return server.start(env, terminal=True)


def stopped_with_ctrl_c(server: JupyterServer) -> None:
    assert server.process is not None
    os.killpg(server.process.pid, signal.SIGINT)
    wait_for(lambda: "Shut down this Jupyter server" in server.log(), 10, "the server's question")
    server.answer("y\n")
    server.process.wait(timeout=60)


@pytest.mark.parametrize("stop", ["SIGTERM", "Ctrl-C"])
def test_a_server_stopped_on_purpose_leaves_them_running_too(detach_home: Path, stop: str) -> None:
    server = started_in_terminal(detach_home)
    try:
        kernel_id = server.start_kernel("asgard-detachable")
        assert execute_via_websocket(server, kernel_id, "x = 'kept'; print(x)") == "kept\n"
        job = kernel_row(server, kernel_id)["job_id"]
        if stop == "SIGTERM":
            killed(server, signal.SIGTERM)
        else:
            stopped_with_ctrl_c(server)
        assert "Left 1 detachable kernel(s) running" in server.log()
        assert job_listed(job)
        server = again(server)
        assert execute_via_websocket(server, kernel_id, "print(x)") == "kept\n"
        assert server.request("DELETE", f"/api/kernels/{kernel_id}").status == 204
    finally:
        server.stop()


def test_a_restart_after_the_take_over_stays_in_its_job_and_on_its_node(detach_home: Path) -> None:
    server = started_server(detach_home, SITE)
    try:
        kernel_id = server.start_kernel("asgard-detachable")
        before = kernel_row(server, kernel_id)
        killed(server)
        server = again(server)
        assert server.request("POST", f"/api/kernels/{kernel_id}/restart").status == 200
        assert execute_via_websocket(server, kernel_id, "print('restarted')") == "restarted\n"
        after = kernel_row(server, kernel_id)
        assert (after["job_id"], after["node"], after["detachable"]) == (before["job_id"], before["node"], True)
        killed(server)  # the restarted kernel's record is what the next server takes over
        server = again(server)
        assert execute_via_websocket(server, kernel_id, "print('again')") == "again\n"
        assert server.request("DELETE", f"/api/kernels/{kernel_id}").status == 204
    finally:
        server.stop()


def test_two_servers_of_one_user_never_both_hold_a_kernel(detach_home: Path, tmp_path: Path) -> None:
    first = started_server(detach_home, SITE)
    servers = [first]
    try:
        kernel_id = first.start_kernel("asgard-detachable")
        second = alongside(first, tmp_path / "second")
        servers.append(second)
        found = second.request("GET", "/asgard/api/detached").body["found"]
        assert [item["kernel_id"] for item in found] == [kernel_id] and "holds it" in found[0]["why"]
        assert second.request("POST", f"/asgard/api/detached/{kernel_id}").status == 409
        assert second.request("GET", "/api/kernels").body == []

        killed(first)
        racers: list[JupyterServer] = []
        threads = [
            threading.Thread(target=lambda n=n: racers.append(alongside(first, tmp_path / f"racer{n}"))) for n in (1, 2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        servers += racers
        holders = [racer for racer in racers if racer.request("GET", "/api/kernels").body]
        assert len(holders) == 1, [racer.log() for racer in racers]
        assert execute_via_websocket(holders[0], kernel_id, "print('one')") == "one\n"
        assert holders[0].request("DELETE", f"/api/kernels/{kernel_id}").status == 204
    finally:
        for server in servers:
            server.stop()


def alongside(server: JupyterServer, home: Path) -> JupyterServer:
    """Another server of the same user (same data directory) with a root, port and runtime of its own."""
    (home / "root").mkdir(parents=True)
    env = {**server.env, "JUPYTER_RUNTIME_DIR": str(home / "runtime")}
    return JupyterServer(home / "root", home / "server.log", extra_args=server.extra_args).start(env)


def test_the_culler_spares_a_taken_over_kernel_s_running_cell_and_ends_it_once_idle(detach_home: Path) -> None:
    culling = "c.MappingKernelManager.cull_idle_timeout = 5\nc.MappingKernelManager.cull_interval = 1\n"
    server = started_server(detach_home, SITE + culling)
    try:
        kernel_id = server.start_kernel("asgard-detachable")
        job = kernel_row(server, kernel_id)["job_id"]
        in_background(server, kernel_id, TICKS)
        wait_for(lambda: kernel_row(server, kernel_id)["execution_state"] == "busy", 20, "the cell runs")
        killed(server)
        server = again(server)
        time.sleep(7)  # past the idle timeout, with the cell still running
        assert [kernel["id"] for kernel in server.request("GET", "/api/kernels").body] == [kernel_id]
        wait_for(lambda: server.request("GET", "/api/kernels").body == [], 60, "the culler ends the idle kernel")
        wait_for(lambda: not job_listed(job), 30, "its job ends with it")
    finally:
        server.stop()


def test_a_notebook_s_session_is_kept_from_the_moment_its_new_kernel_runs(detach_home: Path) -> None:
    """JupyterLab makes a notebook's session and its kernel at once; a server killed a moment after the kernel
    started (before its next refresh, every 5 s) must not lose the session."""
    server = started_server(detach_home, SITE)
    try:
        session = {"path": "fresh.ipynb", "type": "notebook", "name": "", "kernel": {"name": "asgard-detachable"}}
        answer = server.request("POST", "/api/sessions", session)
        assert answer.status == 201, answer.body
        kernel_id = answer.body["kernel"]["id"]
        assert server.await_kernel(kernel_id) == ""
        killed(server)
        server = again(server)
        sessions = server.request("GET", "/api/sessions").body
        assert [(item["path"], item["kernel"]["id"]) for item in sessions] == [("fresh.ipynb", kernel_id)]
        assert server.request("DELETE", f"/api/kernels/{kernel_id}").status == 204
    finally:
        server.stop()


def test_a_kernel_shut_down_as_its_server_stops_ends_and_is_not_left_detached(detach_home: Path) -> None:
    """A user's shutdown that is under way when the server stops (the hub stopping it, its culler) ends the kernel:
    the kernel is not left for the next server with its allocation held until its grace."""
    server = started_server(detach_home, SITE)
    try:
        kernel_id = server.start_kernel("asgard-detachable")
        job = kernel_row(server, kernel_id)["job_id"]
        # answered at once: with pending kernels, jupyter_server shuts the kernel down after it answers
        assert server.request("DELETE", f"/api/kernels/{kernel_id}").status == 204
        killed(server, signal.SIGTERM)
        assert "detachable kernel(s) running" not in server.log()
        assert not (records(server) / kernel_id).exists()
        wait_for(lambda: not job_listed(job), 30, "the kernel's job to end")
    finally:
        server.stop()
