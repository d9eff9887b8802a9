"""What happens to Asgard kernels when things go wrong around them: the real server, the real cluster."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from jupyter_client import BlockingKernelClient

from jupyter_asgard.server.kernel_websockets import SERVICE_RESTART
from tests.cluster import NODES, LocalCluster
from tests.faults import kill_node, revive_node, start_controller, stop_controller
from tests.kernels import KernelSpecs, kernel_jobs, running_steps, slurm, wait_until_no_kernel_jobs
from tests.server import JupyterServer, execute_on, execute_via_websocket, kernel_websocket, run_async
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")


def row(server: JupyterServer, kernel_id: str) -> dict[str, Any]:
    return server.request("GET", f"/asgard/api/kernels/{kernel_id}").body


def connection_info(server: JupyterServer, kernel_id: str) -> dict[str, Any]:
    """The server's connection file for the kernel, as a client on the server's host reads it."""
    return json.loads((Path(server.env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel_id}.json").read_text())


def client(server: JupyterServer, kernel_id: str, info: dict[str, Any] | None = None) -> BlockingKernelClient:
    kernel_client = BlockingKernelClient()
    kernel_client.load_connection_info(info or connection_info(server, kernel_id))
    kernel_client.hb_channel.time_to_dead = 10.0  # a busy test machine can miss jupyter_client's 1 s beat
    kernel_client.start_channels()
    kernel_client.wait_for_ready(timeout=60)
    return kernel_client


def run(server: JupyterServer, kernel_id: str, code: str, info: dict[str, Any] | None = None) -> str:
    kernel_client = client(server, kernel_id, info)
    try:
        out: list[str] = []
        kernel_client.execute_interactive(
            code,
            timeout=60,
            output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None,
        )
        return "".join(out)
    finally:
        kernel_client.stop_channels()


def execution_state(server: JupyterServer, kernel_id: str) -> str:
    answer = server.request("GET", f"/api/kernels/{kernel_id}")
    return answer.body["execution_state"] if answer.status == 200 else "gone"


def shutdown(server: JupyterServer, kernel_id: str) -> None:
    server.request("DELETE", f"/api/kernels/{kernel_id}")


def salloc_calls(server: JupyterServer) -> int:
    return server.request("GET", "/asgard/api/monitor").body["calls"].get("salloc", 0)


@pytest.mark.parametrize("how", ["scancel", "time limit"])
def test_a_job_ended_from_outside_is_reported_dead_with_its_reason_and_not_restarted(
    jupyter_server: JupyterServer, how: str
) -> None:
    kernel_id = jupyter_server.start_kernel("asgard-test")
    job_id = row(jupyter_server, kernel_id)["job_id"]
    allocations = salloc_calls(jupyter_server)
    assert allocations >= 1  # the server's one Slurm client counts every salloc it ran
    if how == "scancel":
        subprocess.run(["scancel", job_id], check=True)
    else:  # an admin's way to bring a time limit near: Slurm enforces it on its next periodic check
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "TimeLimit=0:01"], check=True)
    final = "CANCELLED" if how == "scancel" else "TIMEOUT"
    # jupyter_server drops a kernel its restarter gave up on ("died, removing from map")
    # Slurm enforces time limits in a periodic check (about a minute apart), then the restarter gives up.
    wait_for(
        lambda: execution_state(jupyter_server, kernel_id) in ("dead", "gone"),
        180,
        f"the kernel was not reported dead (server log: {jupyter_server.log_path})",
    )
    assert row(jupyter_server, kernel_id)["state"] == final
    assert salloc_calls(jupyter_server) == allocations, "a restart asked Slurm for a new allocation"
    words = {"CANCELLED": "it was cancelled", "TIMEOUT": "it reached its time limit"}[final]
    assert f"Slurm job {job_id} has ended: {words}" in jupyter_server.log_path.read_text()  # log(): its tail
    assert jupyter_server.request("DELETE", f"/asgard/api/kernels/{kernel_id}").status == 204
    assert jupyter_server.request("GET", f"/asgard/api/kernels/{kernel_id}").status == 404
    assert wait_until_no_kernel_jobs() == []


def test_a_crashed_kernel_restarts_in_the_same_allocation(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster
) -> None:
    kernel_id = jupyter_server.start_kernel("asgard-test")
    job_id = row(jupyter_server, kernel_id)["job_id"]
    info = connection_info(jupyter_server, kernel_id)
    kernel_client = client(jupyter_server, kernel_id, info)
    kernel_client.execute("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")  # as the OOM killer would
    kernel_client.stop_channels()
    wait_for(lambda: running_steps(job_id) == [f"{job_id}.1"], 60, "the kernel was not restarted")
    # A kernel dying this soon after its start is restarted with "new random ports", which drops the server's
    # connection file; it is back before the kernel is (the last address until the new one is known).
    assert connection_info(jupyter_server, kernel_id)["key"] == info["key"]
    # Same key and node, new ports (another user of the node could have taken an old one).
    after = wait_for(
        lambda: (new := connection_info(jupyter_server, kernel_id))["shell_port"] != info["shell_port"] and new,
        60,
        "the restarted kernel's new ports in the connection file",
    )
    assert (after["ip"], after["key"]) == (info["ip"], info["key"])
    assert row(jupyter_server, kernel_id)["job_id"] == job_id
    assert run(jupyter_server, kernel_id, "print(6 * 7)", after).strip() == "42"
    # The server's activity watch follows to the new ports: it sees the kernel's status once a client talks.
    wait_for(lambda: execution_state(jupyter_server, kernel_id) in ("idle", "busy"), 60, "no kernel after restart")
    shutdown(jupyter_server, kernel_id)


def moved_kernel(server: JupyterServer, cluster: LocalCluster) -> tuple[str, dict[str, Any], str]:
    """Start a kernel, kill its node; return the kernel id, its first row and the node it must move to."""
    kernel_id = server.start_kernel("asgard-test")
    first = row(server, kernel_id)
    return kernel_id, first, node_killed_under(cluster, first)


def node_killed_under(cluster: LocalCluster, first: dict[str, Any]) -> str:
    """Kill the node of the kernel whose row is first; the node it must move to."""
    kill_node(cluster, first["node"])
    return next(node for node in NODES if node != first["node"])


def test_a_dead_node_costs_the_allocation_and_the_kernel_comes_back_elsewhere(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster
) -> None:
    kernel_id, first, other = moved_kernel(jupyter_server, slurm_cluster)
    try:
        moved = wait_for(
            lambda: (r := row(jupyter_server, kernel_id)).get("node") == other and r["state"] == "RUNNING" and r,
            120,
            "the kernel did not come back on the other node",
        )
        assert moved["job_id"] != first["job_id"]
        assert not [line for line in kernel_jobs() if line.startswith(first["job_id"] + " ")]
        # The row shows the new node once the handshake is in; let the restart finish before the shutdown:
        # jupyter_client cannot shut a kernel down in the middle of its restart (InvalidStateError).
        time.sleep(5)
    finally:
        jupyter_server.request("DELETE", f"/asgard/api/kernels/{kernel_id}")
        revive_node(slurm_cluster, first["node"])


def test_after_a_node_move_the_server_websocket_reaches_the_kernel(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster
) -> None:
    """A websocket open across the move is closed once the kernel is back elsewhere (its channels were on the
    dead node), and reopened in the same session, as JupyterLab reconnects, it reaches the kernel there."""
    kernel_id = jupyter_server.start_kernel("asgard-test")
    first = row(jupyter_server, kernel_id)
    session = uuid.uuid4().hex

    async def across_the_move() -> tuple[int | None, str, str]:
        connection = await kernel_websocket(jupyter_server, kernel_id, session)
        other = await asyncio.to_thread(node_killed_under, slurm_cluster, first)
        while await asyncio.wait_for(connection.read_message(), 180) is not None:
            pass  # the kernel's status as it restarts, until the server closes the websocket
        # The websocket's nudge waits for jupyter_server's activity watch to see the kernel leave "starting":
        # that watch must have followed the kernel to its new address.
        again = await kernel_websocket(jupyter_server, kernel_id, session, timeout=30)
        try:
            where = await execute_on(again, "import os; print(os.environ['SLURMD_NODENAME'])", session, 30)
            return connection.close_code, other, where.strip()
        finally:
            again.close()

    try:
        closed, other, where = run_async(across_the_move)
        assert (closed, where) == (SERVICE_RESTART, other)
        assert row(jupyter_server, kernel_id)["node"] == other
        wait_for(lambda: execution_state(jupyter_server, kernel_id) == "idle", 10, "a stale execution_state")
        info = connection_info(jupyter_server, kernel_id)
        assert info["ip"] == slurm_cluster.node_addr(other)
        assert info["curve_publickey"] and row(jupyter_server, kernel_id)["encryption"] == "curve-proxy"  # still
        assert run(jupyter_server, kernel_id, "print(6 * 7)").strip() == "42"
    finally:
        shutdown(jupyter_server, kernel_id)
        revive_node(slurm_cluster, first["node"])


def test_kernels_keep_working_while_slurmctld_is_down(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster
) -> None:
    kernel_id = jupyter_server.start_kernel("asgard-test")
    job_id = row(jupyter_server, kernel_id)["job_id"]
    stop_controller(slurm_cluster)
    try:
        wait_for(
            lambda: not jupyter_server.request("GET", "/asgard/api/kernels").body["slurm_reachable"],
            60,
            "the monitor did not notice that Slurm is unreachable",
        )
        assert run(jupyter_server, kernel_id, "print('still here')").strip() == "still here"
        assert "slurm" in jupyter_server.request("GET", "/asgard/api/kernels").body["slurm_error"].lower()
    finally:
        start_controller(slurm_cluster)
    wait_for(
        lambda: jupyter_server.request("GET", "/asgard/api/kernels").body["slurm_reachable"],
        60,
        "the monitor did not recover",
    )
    assert row(jupyter_server, kernel_id)["state"] == "RUNNING"
    assert row(jupyter_server, kernel_id)["job_id"] == job_id
    assert run(jupyter_server, kernel_id, "print('after')").strip() == "after"
    shutdown(jupyter_server, kernel_id)


@pytest.fixture
def own_server(kernelspecs: KernelSpecs, tmp_path: Path):
    """A server of the test's own, to kill."""
    servers: list[JupyterServer] = []

    def make() -> JupyterServer:
        home = tmp_path / f"server{len(servers)}"
        (home / "root").mkdir(parents=True)
        env = {**os.environ, "JUPYTER_DATA_DIR": str(home / "data"), "JUPYTER_RUNTIME_DIR": str(home / "rt")}
        server = JupyterServer(home / "root", home / "server.log").start(env)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


def test_a_killed_server_leaves_no_allocation_behind(own_server, kernelspecs: KernelSpecs) -> None:
    server = own_server()
    server.start_kernel("asgard-test")
    later = kernelspecs.make("asgard-begins-later", salloc_args=["--begin=now+1hour"])  # queued for an hour

    def start_the_queued_kernel() -> None:
        with contextlib.suppress(OSError):  # the server dies under the request: that is the test
            server.request("POST", "/api/kernels", {"name": later}, timeout=30)

    threading.Thread(target=start_the_queued_kernel, daemon=True).start()
    wait_for(lambda: any("PENDING" in line for line in kernel_jobs()), 30, "no queued kernel")
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    # The running kernel's allocation ends with the server: its salloc's lease command read the server's pipe.
    wait_for(lambda: not any("RUNNING" in line for line in kernel_jobs()), 30, "the running allocation lives on")
    # The queued request holds no lease yet; the next server start finds it by its dead holder and cancels it.
    own_server()
    assert wait_until_no_kernel_jobs(timeout=30) == []


def test_a_new_server_cancels_allocations_whose_holder_died(own_server, slurm_cluster: LocalCluster) -> None:
    holder = subprocess.Popen(["sleep", "0"])
    holder.wait()  # a pid that no longer runs, as a crashed server's
    comment = f"--comment=jupyter-asgard:{socket.gethostname()}:{holder.pid}"
    result = subprocess.run(
        ["salloc", "--no-shell", "-J", "jupyter-asgard-orphan", comment], capture_output=True, text=True, check=True
    )
    job_id = result.stderr.split()[-1]
    mine = subprocess.run(
        [
            "salloc",
            "--no-shell",
            "-J",
            "jupyter-asgard-alive",
            f"--comment=jupyter-asgard:{socket.gethostname()}:{os.getpid()}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stderr.split()[-1]
    try:
        server = own_server()
        wait_for(
            lambda: not [line for line in kernel_jobs() if line.startswith(job_id + " ")],
            30,
            "the orphaned allocation was not cancelled",
        )
        assert [line for line in kernel_jobs() if line.startswith(mine + " ")], "a live holder's job was cancelled"
        assert f"Cancelling Slurm job {job_id}" in server.log()
    finally:
        subprocess.run(["scancel", job_id, mine])


def test_shutdown_during_container_start_and_twice_in_a_row(
    jupyter_server: JupyterServer, kernelspecs: KernelSpecs
) -> None:
    slow = kernelspecs.make(
        "asgard-slow-start", argv=["bash", "-c", "sleep 5; exec python3 -m ipykernel_launcher -f {connection_file}"]
    )
    assert jupyter_server.request("POST", "/api/kernels", {"name": slow}).status == 201
    starting = wait_for(
        lambda: [
            r
            for r in jupyter_server.request("GET", "/asgard/api/kernels").body["kernels"]
            if r["kernel_name"] == slow and r["state"] == "RUNNING" and r["node"]
        ],
        30,
        "the slow kernel's container did not start",
    )[0]
    first = jupyter_server.request("DELETE", f"/asgard/api/kernels/{starting['kernel_id']}")
    second = jupyter_server.request("DELETE", f"/asgard/api/kernels/{starting['kernel_id']}")
    assert first.status == 204
    assert second.status == 404
    assert wait_until_no_kernel_jobs() == []


def test_ctrl_c_in_the_servers_terminal_answered_no_leaves_its_kernels_running(
    kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    """Ctrl-C goes to the terminal's whole foreground process group; jupyter_server asks "Shut down this Jupyter
    server?" and carries on when told no. Its Asgard kernels' salloc and srun must not have taken the SIGINT."""
    (tmp_path / "root").mkdir()
    server = JupyterServer(tmp_path / "root", tmp_path / "server.log")
    server.start({**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime")}, terminal=True)
    try:
        kernel_id = server.start_kernel("asgard-test")
        job_id = row(server, kernel_id)["job_id"]
        assert execute_via_websocket(server, kernel_id, "print('before')").strip() == "before"
        assert server.process is not None
        os.killpg(server.process.pid, signal.SIGINT)
        wait_for(lambda: "Shut down this Jupyter server" in server.log(), 10, "the server's question")
        server.answer("n\n")
        wait_for(lambda: "resuming operation" in server.log(), 10, "the server carrying on")
        time.sleep(2)  # what the SIGINT would have ended (srun, salloc's lease) has ended by now
        assert execute_via_websocket(server, kernel_id, "print('after')").strip() == "after"
        assert row(server, kernel_id)["job_id"] == job_id
        assert slurm("squeue", "-h", "-j", job_id, "-o", "%T").strip() == "RUNNING"
        shutdown(server, kernel_id)
    finally:
        server.stop()
    assert wait_until_no_kernel_jobs() == []
