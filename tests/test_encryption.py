"""CurveZMQ on the test cluster: both paths (ipykernel 7.4 natively, ipykernel 6 behind the proxy), what
crosses the node's interface, what another user at the kernel's ports gets, and the site's policy."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.manager import AsyncKernelManager
from traitlets.config import Config

from jupyter_asgard.errors import KernelStartError
from jupyter_asgard.server.kernel_jobs import kernel_job
from tests.capture import capture_on_node
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, execute, shutdown, start
from tests.outsiders import KNOWING_SUBSCRIBER, outsiders

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

DISABLED = Config({"PyxisProvisioner": {"transport_encryption": "disabled"}})
# path: (kernelspec fixture, site configuration, how the bootstrap reports the kernel's traffic)
PATHS = {
    "proxy": ("kernelspecs", None, "curve-proxy"),
    "native": ("native_kernelspec", None, "curve"),
    "disabled": ("kernelspecs", DISABLED, "none"),
}


@pytest.fixture
async def kernel(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncKernelManager]:
    """A kernel on the path request.param names, checked to have taken it."""
    fixture, site, mode = PATHS[request.param]
    found = request.getfixturevalue(fixture)
    name = found if isinstance(found, str) else "asgard-test"
    km = await start(name, tmp_path, site=site)
    try:
        assert km.provisioner.encryption == mode
        assert (km.curve_publickey is not None) == (mode != "none")
        yield km
    finally:
        await shutdown(km)


def connection(km: AsyncKernelManager) -> dict[str, Any]:
    return {**km.get_connection_info(), "key": km.session.key}


@pytest.mark.parametrize("kernel", ["proxy", "native", "disabled"], indirect=True)
async def test_the_node_s_wire_carries_neither_a_cell_its_output_nor_the_key(
    kernel: AsyncKernelManager, slurm_cluster: LocalCluster, request: pytest.FixtureRequest
) -> None:
    """disabled is the control: there the capture does find the cell and its output."""
    in_code, in_output = secrets.token_hex(16), secrets.token_hex(16)
    # The output's string is not in the cell's code: it is made in the kernel.
    code = f"# {in_code}\nprint(''.join(reversed({in_output[::-1]!r})))"
    with capture_on_node(slurm_cluster, kernel.provisioner.node) as capture:
        reply = await execute(kernel, code)
    assert reply["status"] == "ok" and reply["stdout"].strip() == in_output
    wire = capture.data()
    assert len(wire) > 1000  # the cell's traffic was captured
    found = {what for what in (in_code, in_output) if what.encode() in wire}
    assert found == (set() if kernel.provisioner.encryption != "none" else {in_code, in_output})
    assert kernel.session.key not in wire
    assert kernel.curve_secretkey is None or kernel.curve_secretkey not in wire


@pytest.mark.parametrize("kernel", ["proxy", "native"], indirect=True)
async def test_another_user_at_the_kernel_s_ports_gets_nothing_and_the_kernel_lives_on(
    kernel: AsyncKernelManager,
) -> None:
    with outsiders(connection(kernel)) as heard:
        assert (await execute(kernel, "print('for the notebook alone')"))["status"] == "ok"
        found = heard()
    # ipykernel 7.4 admits any Curve client that has the kernel's public key (it does no client
    # authentication); the key is as secret as the session key (connection files of the user's alone, the
    # step's environment). The proxy admits the kernel's own client key alone.
    assert found == ([KNOWING_SUBSCRIBER] if kernel.provisioner.encryption == "curve" else [])
    assert (await execute(kernel, "print('still here')"))["stdout"].strip() == "still here"


@pytest.mark.parametrize("kernel", ["proxy", "native"], indirect=True)
async def test_input_interrupt_and_restart_work_encrypted(kernel: AsyncKernelManager) -> None:
    client = kernel.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=30)
        msg_id = client.execute("name = input('who? '); print('hello', name)", allow_stdin=True)
        request = await client.get_stdin_msg(timeout=20)
        assert request["content"]["prompt"] == "who? " and request["parent_header"]["msg_id"] == msg_id
        client.input("asgard")
        reply = await client.get_shell_msg(timeout=20)
        assert reply["parent_header"]["msg_id"] == msg_id and reply["content"]["status"] == "ok"

        sleeper = client.execute("import time; time.sleep(60)")
        await asyncio.sleep(2)
        await kernel.interrupt_kernel()
        reply = await client.get_shell_msg(timeout=20)
        assert reply["parent_header"]["msg_id"] == sleeper
        assert reply["content"]["ename"] == "KeyboardInterrupt"
    finally:
        client.stop_channels()
    keys, mode = (kernel.curve_publickey, kernel.curve_secretkey), kernel.provisioner.encryption
    await kernel.restart_kernel()
    assert (kernel.curve_publickey, kernel.curve_secretkey) == keys  # clients keep their connection info
    assert kernel.provisioner.encryption == mode
    assert (await execute(kernel, "print('after the restart')"))["stdout"].strip() == "after the restart"


@pytest.mark.parametrize(
    ("site", "refusal"),
    [
        (Config({"PyxisProvisioner": {"transport_encryption": "required"}}), "does not declare CurveZMQ support"),
        (Config({"KernelManager": {"transport_encryption": "required"}}), "does not declare 'curve'"),
    ],
    ids=["the site's policy", "jupyter_client's policy"],
)
async def test_required_refuses_a_kernelspec_that_does_not_declare_curve(
    kernelspecs: KernelSpecs, tmp_path: Path, site: Config, refusal: str
) -> None:
    name = kernelspecs.make("asgard-no-curve", encryption=False, gpus=None)
    km = AsyncKernelManager(kernel_name=name, config=site)
    with pytest.raises((KernelStartError, RuntimeError), match=refusal) as refused:
        await km.start_kernel(cwd=str(tmp_path))
    if isinstance(refused.value, KernelStartError):
        assert "supported_encryption" in str(refused.value)
    await shutdown(km)


async def test_auto_starts_a_kernelspec_that_does_not_declare_curve_in_the_clear(
    kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    name = kernelspecs.make("asgard-no-curve", encryption=False, gpus=None)
    km = await start(name, tmp_path)
    try:
        assert km.provisioner.encryption == "none" and km.curve_publickey is None
        assert "curve_publickey" not in km.get_connection_info()
        assert kernel_job(km.provisioner, km.provisioner.monitor)["encryption"] == "none"
        assert (await execute(km, "print(1 + 1)"))["stdout"].strip() == "2"
    finally:
        await shutdown(km)
