"""The Pyxis provisioner on the real test cluster, driven by real Jupyter clients."""

from __future__ import annotations

import asyncio
import getpass
import json
import re
import subprocess
import uuid
from pathlib import Path

import nbformat
import pytest
from jupyter_client.manager import AsyncKernelManager
from jupyter_core.utils import run_sync
from nbclient import NotebookClient

from jupyter_asgard.errors import KernelStartError
from tests.cluster import NODES, LocalCluster
from tests.kernels import (
    CONTAINER_PROBE,
    KernelSpecs,
    execute,
    running_steps,
    shutdown,
    start,
    wait_until_no_kernel_jobs,
)

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

PROBE = """
import json, os
from ipykernel import get_connection_info
print(json.dumps({
    "node": os.environ.get("SLURMD_NODENAME"),
    "job": os.environ.get("SLURM_JOB_ID"),
    "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "cwd": os.getcwd(),
    "listens": {k: v for k, v in json.loads(get_connection_info()).items() if k in ("transport", "ip")},
    "leaked": sorted(k for k in os.environ if k.startswith(("JUPYTER", "VIRTUAL_ENV", "ASGARD_"))) + [
        # the one entry of PYTHONPATH the kernel gets: the bootstrap's private directory without debugpy
        entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if entry and not (entry.startswith("/tmp/asgard-kernel-") and entry.endswith("/python"))
    ],
}))
"""


def notebook_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    return directory


def test_notebook_runs_on_a_gpu_node_in_its_container(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    workdir = notebook_dir(tmp_path)
    scratch_file = slurm_cluster.netscratch / "root" / "hello.txt"
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(PROBE),
            nbformat.v4.new_code_cell(f"print(open({str(scratch_file)!r}).read().strip())"),
            nbformat.v4.new_code_cell(CONTAINER_PROBE),
        ]
    )
    km = AsyncKernelManager(kernel_name="asgard-test")
    client = NotebookClient(nb, km=km, timeout=60, resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    finally:
        run_sync(km.shutdown_kernel)()  # a kernel manager of its own: nbclient leaves it running
    probe = json.loads(nb.cells[0].outputs[0]["text"])
    assert probe["node"] in NODES
    assert km.ip == slurm_cluster.node_addr(probe["node"]) != slurm_cluster.controller_addr
    # ipykernel 6 cannot encrypt: it listens on ipc in the bootstrap's private directory, behind the proxy
    assert probe["listens"]["transport"] == "ipc" and probe["listens"]["ip"].startswith("/tmp/asgard-kernel-")
    assert km.curve_publickey is not None
    assert probe["gpus"] in {"0", "1"}
    assert probe["cwd"] == str(workdir)
    assert probe["leaked"] == []
    assert nb.cells[1].outputs[0]["text"].strip() == "hello from netscratch"
    container = json.loads(nb.cells[2].outputs[0]["text"])
    assert (container["image"], container["python"]) == ("python-ipykernel", "/usr/bin/python3")
    assert "ro" in container["mounts"][str(slurm_cluster.datasets)]
    assert "rw" in container["mounts"][str(workdir)]  # mounted at its own path, as the site's srun example does


async def test_message_interrupt_stops_a_long_cell_and_the_kernel_lives_on(
    kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    await _check_interrupt("asgard-test", tmp_path)


async def test_signal_interrupt_reaches_the_kernel_through_slurm(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    await _check_interrupt(kernelspecs.make("asgard-signal", interrupt_mode="signal"), tmp_path)


async def _check_interrupt(kernel_name: str, tmp_path: Path) -> None:
    km = await start(kernel_name, tmp_path)
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=30)
        msg_id = client.execute("import time; time.sleep(60)")
        while (await client.get_iopub_msg(timeout=10))["content"].get("execution_state") != "busy":
            pass
        await asyncio.sleep(0.5)
        await km.interrupt_kernel()
        reply = await client.get_shell_msg(timeout=10)  # the sleep(60) interrupted, not ended
        assert reply["parent_header"]["msg_id"] == msg_id
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        # ipykernel 6 (the test image's, and NGC PyTorch 23.12's) aborts requests that arrive in the moments
        # after an error reply, as with any kernel of that version; running the cell again runs it.
        for _ in range(10):
            after = await client.execute_interactive("print(6 * 7)", timeout=10)
            if after["content"]["status"] != "aborted":
                break
            await asyncio.sleep(0.2)
        assert after["content"]["status"] == "ok"
        assert await km.is_alive()
    finally:
        client.stop_channels()
        await shutdown(km)


async def test_restart_keeps_the_allocation_container_and_key_on_new_ports(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    """New ports on every start (another user of the node could have taken an old one: test_node_neighbours.py);
    a client made from the kernel manager after the restart follows, as jupyter_server's channels do."""
    km = await start("asgard-test", tmp_path)
    try:
        job_id = km.provisioner.job_id
        before = dict(km.get_connection_info())
        assert (await execute(km, "x = 1; open('/opt/restart-marker', 'w').write('written')"))["status"] == "ok"
        await km.restart_kernel()
        assert (await execute(km, "print('x' in globals())"))["stdout"].strip() == "False"
        after = dict(km.get_connection_info())
        assert km.provisioner.job_id == job_id
        assert {k: after[k] for k in ("ip", "key")} == {k: before[k] for k in ("ip", "key")}
        ports = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
        assert {after[k] for k in ports}.isdisjoint(before[k] for k in ports)
        assert json.loads(Path(km.connection_file).read_text())["shell_port"] == after["shell_port"]
        # The same named container: what the first run wrote into its filesystem is there.
        assert (await execute(km, "print(open('/opt/restart-marker').read())"))["stdout"].strip() == "written"
        assert running_steps(job_id) == [f"{job_id}.1"]
    finally:
        await shutdown(km)
    assert wait_until_no_kernel_jobs() == []


async def test_shutdown_empties_the_queue_and_the_key_never_shows(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    km = await start("asgard-test", tmp_path)
    try:
        key = km.session.key.decode()
        job_id = km.provisioner.job_id
        assert (await execute(km, "print('up')"))["stdout"].strip() == "up"
        processes = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        job = subprocess.run(["scontrol", "-d", "show", "job", job_id], capture_output=True, text=True).stdout
        steps = subprocess.run(["scontrol", "show", "step", job_id], capture_output=True, text=True).stdout
        assert job_id in job
        for text in (processes, job, steps):
            assert key not in text
    finally:
        await km.shutdown_kernel()
    assert wait_until_no_kernel_jobs() == []


async def test_two_kernels_started_at_once_on_one_node(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    name = kernelspecs.make("asgard-gpu01", salloc_args=["--nodelist=gpu01"])
    kms = await asyncio.gather(start(name, tmp_path), start(name, tmp_path))
    try:
        replies = await asyncio.gather(*(execute(km, PROBE) for km in kms))
        probes = [json.loads(reply["stdout"]) for reply in replies]
        assert [probe["node"] for probe in probes] == ["gpu01", "gpu01"]
        assert probes[0]["job"] != probes[1]["job"]
    finally:
        await asyncio.gather(*(shutdown(km) for km in kms))


# Runs in the kernel's place on the first attempt only: a process outside the step's process tree (as a kernel
# starting beside this one on the node would be) takes the heartbeat port the bootstrap chose, then the kernel
# starts, and its heartbeat thread cannot bind.
NEIGHBOUR = """
import json, os, socket, sys, time
marker, connection_file = sys.argv[1], sys.argv[2]
if not os.path.exists(marker):
    port = json.load(open(connection_file))["hb_port"]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):  # a neighbour has output of its own, not this step's
                os.dup2(null, fd)
            sock = socket.socket()
            sock.bind((json.load(open(connection_file))["ip"], port))
            sock.listen()
            open(marker, "w").write(str(os.getpid()))
            time.sleep(600)
        os._exit(0)
    while not os.path.exists(marker):
        time.sleep(0.05)
os.execvp("python3", ["python3", "-m", "ipykernel_launcher", "-f", connection_file])
"""


async def test_a_port_taken_by_a_neighbour_before_the_kernel_binds_it_is_chosen_again(
    kernelspecs: KernelSpecs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    marker = tmp_path / "neighbour.pid"
    # The kernel binds the node's ports itself unencrypted (and natively encrypted); behind the proxy it binds
    # ipc sockets, and the proxy binds the ports at once.
    name = kernelspecs.make(
        "asgard-neighbour",
        gpus=None,
        argv=["python3", "-c", NEIGHBOUR, str(marker), "{connection_file}"],
        encryption=False,
    )
    try:
        km = await start(name, tmp_path)
        try:
            assert (await execute(km, "print(6 * 7)"))["stdout"].strip() == "42"
            assert await km.is_alive()
        finally:
            await shutdown(km)
        assert "another process took port" in caplog.text and "Address already in use" in caplog.text
        assert f"Kernel {km.kernel_id}: a port was taken on the node; starting again on other ports" in caplog.text
    finally:
        if marker.exists():
            subprocess.run(["kill", marker.read_text()])


async def test_kernel_output_reaches_the_server_log_with_the_kernel_id(
    kernelspecs: KernelSpecs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    km = await start("asgard-test", tmp_path)
    try:
        await execute(km, "import sys; print('to the log', file=sys.__stderr__, flush=True)")
        await asyncio.sleep(0.5)
    finally:
        await shutdown(km)
    assert f"[kernel {km.kernel_id}] to the log" in caplog.text


async def test_kernelspec_env_wins_in_the_container_and_server_env_stays_out(
    kernelspecs: KernelSpecs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "PYTHONPATH": "/server/lib",
        "VIRTUAL_ENV": "/server/venv",
        "JUPYTER_CONFIG_DIR": "/srv",
        "PYXIS_CONTAINER_IMAGE": "/wrong.sqsh",
        "SLURM_JOB_ID": "999999",
    }.items():
        monkeypatch.setenv(name, value)
    # The stand-in image sets PYTHONUNBUFFERED=1; the kernelspec's value must win, as Pyxis allows via --container-env.
    name = kernelspecs.make("asgard-env", env={"PYTHONUNBUFFERED": "from-kernelspec", "MY_SETTING": "42"})
    km = await start(name, tmp_path)
    try:
        code = (
            "import os, json; print(json.dumps({k: os.environ.get(k) for k in ['PYTHONUNBUFFERED', "
            "'MY_SETTING', 'PYTHONPATH', 'VIRTUAL_ENV', 'JUPYTER_CONFIG_DIR', 'PYXIS_CONTAINER_IMAGE']}), "
            "os.environ['SLURM_JOB_ID'])"
        )
        values, job = (await execute(km, code))["stdout"].rsplit(" ", 1)
        seen = json.loads(values)
        # Not the server's PYTHONPATH: the bootstrap's private directory without debugpy, alone.
        assert re.fullmatch(r"/tmp/asgard-kernel-[^/:]+/python", seen.pop("PYTHONPATH")), values
        assert seen == {
            "PYTHONUNBUFFERED": "from-kernelspec",
            "MY_SETTING": "42",
            "VIRTUAL_ENV": None,
            "JUPYTER_CONFIG_DIR": None,
            "PYXIS_CONTAINER_IMAGE": None,
        }
        assert job.strip() == km.provisioner.job_id
    finally:
        await shutdown(km)


@pytest.mark.parametrize("tool", ["nbconvert", "papermill"])
def test_command_line_notebook_runners(kernelspecs: KernelSpecs, tmp_path: Path, tool: str) -> None:
    notebook = tmp_path / "run.ipynb"
    nbformat.write(
        nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell("import os; print('ran on', os.environ['SLURMD_NODENAME'])")]
        ),
        notebook,
    )
    output = tmp_path / "out.ipynb"
    if tool == "nbconvert":
        argv = [
            "jupyter",
            "nbconvert",
            "--to",
            "notebook",
            "--execute",
            "--ExecutePreprocessor.kernel_name=asgard-test",
            f"--output={output}",
            str(notebook),
        ]
    else:
        argv = ["papermill", "-k", "asgard-test", str(notebook), str(output)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = nbformat.read(output, as_version=4).cells[0].outputs[0]["text"]
    assert text.split() in (["ran", "on", node] for node in NODES)


async def test_site_configuration_sets_defaults_and_limits_that_kernelspecs_override(
    kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    from traitlets.config import Config

    site = Config({"PyxisProvisioner": {"partition": "debug", "max_gpus": 1}})
    km = AsyncKernelManager(kernel_name="asgard-test", config=site)
    await km.start_kernel(cwd=str(tmp_path))
    try:
        partition = subprocess.run(
            ["squeue", "-h", "-j", km.provisioner.job_id, "-o", "%P"], capture_output=True, text=True
        ).stdout.strip()
        assert partition == "debug"
    finally:
        await shutdown(km)
    too_many = AsyncKernelManager(kernel_name=kernelspecs.make("asgard-2gpu", gpus=2), config=site)
    with pytest.raises(KernelStartError, match="2 GPUs requested but this site allows at most 1"):
        await too_many.start_kernel(cwd=str(tmp_path))
    override = AsyncKernelManager(kernel_name=kernelspecs.make("asgard-gpu-partition", partition="gpu"), config=site)
    await override.start_kernel(cwd=str(tmp_path))
    try:
        partition = subprocess.run(
            ["squeue", "-h", "-j", override.provisioner.job_id, "-o", "%P"], capture_output=True, text=True
        ).stdout.strip()
        assert partition == "gpu"
    finally:
        await shutdown(override)


async def test_a_line_of_300_kb_on_stdout_leaves_the_kernel_answering_and_its_shutdown_quick(
    kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    """The kernel's own stdout goes through srun to the server: a 300 kB line once stopped the server reading it,
    and srun, its pipe full, kept the kernel's shutdown waiting for good."""
    km = await start("asgard-test", tmp_path)
    try:
        await execute(km, "import os; os.write(1, b'x' * 300000); os.write(1, b'\\n'); print('written')")
        assert (await execute(km, "print(6 * 7)"))["stdout"].strip() == "42"
    finally:
        await asyncio.wait_for(km.shutdown_kernel(), 30)
    assert wait_until_no_kernel_jobs() == []


async def test_kill_ends_the_kernel_at_once_without_the_polite_term(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    """shutdown_kernel(now=True) is jupyter_client's kill: like LocalProvisioner's SIGKILL, the kernel gets no
    TERM to clean up after (terminate() is the polite one)."""
    marker = slurm_cluster.netscratch / getpass.getuser() / f"term-{uuid.uuid4().hex}"
    km = await start("asgard-test", tmp_path)
    try:
        code = (
            "import signal, pathlib\n"
            f"signal.signal(signal.SIGTERM, lambda *_: pathlib.Path({str(marker)!r}).write_text('term'))\n"
            "print('armed')"
        )
        assert (await execute(km, code))["stdout"].strip() == "armed"
    finally:
        await km.shutdown_kernel(now=True)
    assert wait_until_no_kernel_jobs() == []
    assert not marker.exists()
