"""What code planted in a notebook directory and another user of the kernel's node can do to an Asgard kernel.

A shared notebook directory is the kernel's working directory and its sys.path[0]: a module someone put
there runs when the kernel starts and shares the bootstrap's stdout. Another user logged in on the node
shares its network with the kernel's container (Pyxis does not isolate it): they see which ports the kernel
listens on, can take ports of their own, and can connect to whatever listens on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from jupyter_asgard.node.bootstrap import HANDSHAKE, PORT_NAMES
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, execute, running_steps, shutdown, start, wait_until_no_kernel_jobs
from tests.unix_users import UnixUser

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

FORGED_MARK = "forged by a planted module"
# `python3 -m ipykernel_launcher` runs the first ipykernel_launcher on sys.path, and with -m that starts with
# the working directory. This one prints what a bootstrap's handshake looks like, twice (malformed, then
# naming another address, no encryption and the one nonce it cannot know), then runs the real launcher.
PLANTED_LAUNCHER = f"""
import json, os, runpy, sys
print({HANDSHAKE!r} + '{{"ip": "10.0', flush=True)
forged = dict(ip="127.0.0.1", encryption="none", node="gpu01", step="0", pid=1, nonce="guessed", mark={FORGED_MARK!r})
forged.update((name, number) for number, name in enumerate({list(PORT_NAMES)!r}, start=1))
print({HANDSHAKE!r} + json.dumps(forged), flush=True)
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [entry for entry in sys.path if os.path.abspath(entry or ".") != here]
runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
"""


# Another user's program on the node: listen on 127.0.0.1 at each port given (the address every user may
# bind while the kernel holds the node's address), until killed.
SQUATTER = """
import json, socket, sys, time
held = []
for port in json.loads(sys.argv[1]):
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    held.append(sock)
print("listening", flush=True)
time.sleep(600)
"""


# Another user's program on the node: every TCP port listening there (but those given) that answers a Debug
# Adapter Protocol `initialize` request, which debugpy's adapter does for any client, unauthenticated.
DEBUG_ADAPTER_PROBE = """
import json, socket, sys
skip = set(json.loads(sys.argv[1]))
answered = []
for row in open("/proc/net/tcp").read().splitlines()[1:]:
    fields = row.split()
    address, port = fields[1].split(":")
    ip, port = socket.inet_ntoa(bytes.fromhex(address)[::-1]), int(port, 16)
    if fields[3] != "0A" or port in skip:
        continue
    body = json.dumps({"seq": 1, "type": "request", "command": "initialize", "arguments": {"adapterID": "x"}})
    try:
        with socket.create_connection(("127.0.0.1" if ip == "0.0.0.0" else ip, port), timeout=3) as sock:
            sock.sendall(("Content-Length: %d\\r\\n\\r\\n%s" % (len(body), body)).encode())
            sock.settimeout(3)
            reply = sock.recv(65536)
    except OSError:
        continue
    if b"Content-Length" in reply:
        answered.append("%s:%d %s" % (ip, port, reply[:300].decode(errors="replace")))
print(json.dumps(answered))
"""


async def test_a_handshake_printed_by_a_planted_module_does_not_count(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    shared = tmp_path / "shared-notebooks"
    shared.mkdir()
    (shared / "ipykernel_launcher.py").write_text(PLANTED_LAUNCHER)
    km = await start("asgard-test", shared)
    try:
        assert km.provisioner.step is not None
        assert any(FORGED_MARK in line for line in km.provisioner.step.output), "the planted module did not run"
        info = km.get_connection_info()
        assert info["ip"] != "127.0.0.1" and info["shell_port"] != 1
        assert km.provisioner.encryption == "curve-proxy"  # the test image's ipykernel 6, behind the proxy
        assert (await execute(km, "print(6 * 7)"))["stdout"].strip() == "42"
    finally:
        await shutdown(km)
    assert wait_until_no_kernel_jobs() == []


async def test_a_restart_takes_new_ports_another_user_cannot_have_taken(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path, another_user: UnixUser
) -> None:
    km = await start("asgard-test", tmp_path)
    squatter = None
    try:
        job_id, node = km.provisioner.job_id, km.provisioner.node
        before = {name: int(km.get_connection_info()[name]) for name in PORT_NAMES}  # type: ignore[literal-required]
        squatter = another_user.start(
            "/usr/bin/python3",
            "-c",
            SQUATTER,
            json.dumps(list(before.values())),
            netns=slurm_cluster.node_namespace(node),
        )
        assert squatter.stdout is not None and squatter.stdout.readline().strip() == "listening"
        await km.restart_kernel()
        after = {name: int(km.get_connection_info()[name]) for name in PORT_NAMES}  # type: ignore[literal-required]
        assert set(after.values()).isdisjoint(before.values())
        assert (await execute(km, "print('after the restart')"))["stdout"].strip() == "after the restart"
        assert running_steps(job_id) == [f"{job_id}.1"]  # one start was enough
    finally:
        if squatter is not None:
            squatter.kill()
        await shutdown(km)
    assert wait_until_no_kernel_jobs() == []


async def debug_request(client: Any, command: str, arguments: dict[str, Any]) -> Any:
    """A Debug Adapter Protocol request on the control channel, as JupyterLab's debugger sends it."""
    content = {"seq": 1, "type": "request", "command": command, "arguments": arguments}
    msg = client.session.msg("debug_request", content)
    client.control_channel.send(msg)
    while True:
        reply = await asyncio.wait_for(client.get_control_msg(), 30)
        if reply["parent_header"].get("msg_id") == msg["header"]["msg_id"]:
            return reply["content"]


@pytest.mark.parametrize("kernel_name", ["asgard-test", "native"])
async def test_another_user_on_the_node_cannot_reach_the_kernel_s_debugger(
    slurm_cluster: LocalCluster,
    kernelspecs: KernelSpecs,
    tmp_path: Path,
    another_user: UnixUser,
    request: pytest.FixtureRequest,
    kernel_name: str,
) -> None:
    """ipykernel's debugger runs debugpy, whose adapter listens on 127.0.0.1 of the node and admits any client:
    a Debug Adapter Protocol client can evaluate code in the kernel. Asgard kernels have no debugger (ipykernel
    6 and 7.4; 7.4 offers it to JupyterLab in kernel_info's supported_features)."""
    if kernel_name == "native":
        kernel_name = request.getfixturevalue("native_kernelspec")
    km = await start(kernel_name, tmp_path)
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=30)
        info = (await client.kernel_info(reply=True, timeout=30))["content"]
        # What JupyterLab sends when the user turns the debugger on: initialize, then attach.
        await debug_request(client, "initialize", {"clientID": "jupyterlab", "adapterID": "python"})
        await debug_request(client, "attach", {"justMyCode": True})
        ports = [int(km.get_connection_info()[name]) for name in PORT_NAMES]  # type: ignore[literal-required]
        probe = another_user.run(
            "/usr/bin/python3",
            "-c",
            DEBUG_ADAPTER_PROBE,
            json.dumps(ports),
            netns=slurm_cluster.node_namespace(km.provisioner.node),
        )
        assert probe.returncode == 0, probe.stderr
        assert json.loads(probe.stdout) == [], probe.stdout
        assert "debugger" not in info.get("supported_features", []) and not info.get("debugger")
        # One client at a time: a second one gets no answer from a kernel behind the encrypting proxy.
        reply = (await client.execute_interactive("import debugpy", timeout=30))["content"]
        assert reply["status"] == "error" and "have no debugger" in reply["evalue"]
    finally:
        client.stop_channels()
        await shutdown(km)
    assert wait_until_no_kernel_jobs() == []
