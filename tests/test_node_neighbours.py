"""What code planted in a notebook directory and another user of the kernel's node can do to an Asgard kernel.

A shared notebook directory is the kernel's working directory and its sys.path[0]: a module someone put
there runs when the kernel starts and shares the bootstrap's stdout. Another user logged in on the node
shares its network with the kernel's container (Pyxis does not isolate it): they see which ports the kernel
listens on, can take ports of their own, and can connect to whatever listens on 127.0.0.1.
"""

from __future__ import annotations

import json
from pathlib import Path

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
