"""binder/start as Binder runs it: as a non-root user, whose Slurm test cluster runs in loopback mode.

The test creates a throwaway user (root is needed for that: the test is skipped without it, and CI runs
it as root), runs the start script's set-up as that user in a clean environment, then, still as that
user: Slurm sees both nodes idle, a GPU job runs in a real Pyxis/enroot container with its mounts,
the installed "Asgard PyTorch (demo)" kernel starts through jupyter_client and computes, and
`python -m tests.cluster down` leaves no process of the user behind.

The user is a tests.unix_users.UnixUser (which says how it reaches this Python and checkout).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.unix_users import UnixUser, throwaway_user, uids

REPO = Path(__file__).resolve().parent.parent
USER_PREFIX = "asgbinder"
CLUSTER_DIR = ".asgard-cluster"  # below the user's home, binder/start's default

pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def binder_user(request: pytest.FixtureRequest) -> Iterator[UnixUser]:
    """A new non-root user; the cluster's prerequisites as for every cluster (fresh_cluster_prerequisites also
    builds the images: that needs root, and the user's cluster only reads the machine's cache)."""
    if os.geteuid() != 0:
        pytest.skip("this test creates a non-root user to run binder/start as, which needs root")
    request.getfixturevalue("fresh_cluster_prerequisites")
    with throwaway_user(USER_PREFIX) as user:
        yield user


def cluster_root(user: UnixUser) -> Path:
    return user.home / CLUSTER_DIR


KERNEL_CHECK = """
import asyncio, json, subprocess, sys, time
from jupyter_client.kernelspec import KernelSpecManager
from tests.kernels import execute, shutdown, start

async def main():
    spec = KernelSpecManager().get_kernel_spec("asgard-pytorch")
    km = await start("asgard-pytorch", sys.argv[1])
    try:
        client = km.client()
        client.start_channels()
        await client.wait_for_ready(timeout=120)
        results = []
        hook = lambda msg: msg["msg_type"] == "execute_result" and results.append(msg["content"]["data"]["text/plain"])
        await client.execute_interactive("1+1", timeout=60, output_hook=hook)
        client.stop_channels()
        probe = await execute(km, "import os; print(os.environ['SLURMD_NODENAME'], os.getcwd())")
    finally:
        await shutdown(km)
    for _ in range(60):  # a cancelled job is in the queue until its step's processes have ended
        queue = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True).stdout.split()
        if not [name for name in queue if name.startswith("jupyter-asgard-")]:
            break
        time.sleep(0.5)
    print(json.dumps({"display_name": spec.display_name, "results": results, "probe": probe["stdout"].split(),
                      "queue": queue}))

asyncio.run(main())
"""


def test_binder_start_brings_the_demo_up_as_a_non_root_user(binder_user: UnixUser) -> None:
    user, root = binder_user, cluster_root(binder_user)
    slurm_env = {"SLURM_CONF": str(root / "etc" / "slurm.conf")}

    started = user.run(
        "bash", "binder/start", "bash", "-c", 'echo "server runs with SLURM_CONF=$SLURM_CONF"', timeout=180
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert "Asgard demo ready" in started.stdout, started.stdout + started.stderr
    assert f"server runs with SLURM_CONF={root}/etc/slurm.conf" in started.stdout

    # The daemons run as the user, both nodes on 127.0.0.1.
    state = json.loads((root / "state.json").read_text())
    assert state["network"] == "loopback"
    assert set(state["pids"]) == {"munged", "slurmctld", "slurmd-gpu01", "slurmd-gpu02"}
    for name, pid in state["pids"].items():
        assert uids(pid) == {user.uid}, name
    conf = (root / "etc" / "slurm.conf").read_text()
    assert f"SlurmUser={user.name}\n" in conf and f"SlurmdUser={user.name}\n" in conf
    assert len(set(re.findall(r"NodeName=gpu0[12] NodeAddr=127\.0\.0\.1 Port=(\d+)", conf))) == 2
    nodes = user.run("sinfo", "-h", "-N", "-p", "gpu", "-o", "%N %T %G", env=slurm_env)
    assert nodes.stdout.split("\n")[:2] == ["gpu01 idle gpu:h100:2", "gpu02 idle gpu:h100:2"], nodes.stderr

    # What binder/start installed for JupyterLab.
    kernel_json = json.loads((user.home / ".local/share/jupyter/kernels/asgard-pytorch/kernel.json").read_text())
    assert kernel_json["display_name"] == "Asgard PyTorch (demo)"
    notebooks = root / "netscratch" / user.name
    assert (user.home / "netscratch").resolve() == notebooks
    assert {path.name for path in (REPO / "examples").glob("*.ipynb")} <= {path.name for path in notebooks.iterdir()}
    assert json.loads((user.home / ".jupyter/jupyter_server_config.json").read_text())["AsgardSite"]

    # A GPU job in a real container: enroot runs unprivileged (user namespaces), as the user, with its mounts.
    image = root / "enroot" / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh"
    job = user.run(
        "srun",
        "--gpus=1",
        "-w",
        "gpu02",
        f"--container-image={image}",
        f"--container-mounts={root / 'ds'}:/ds:ro,{notebooks}:{notebooks}",
        f"--container-workdir={notebooks}",
        "bash",
        "-c",
        "echo $SLURMD_NODENAME $CUDA_VISIBLE_DEVICES $(id -u) $TEST_IMAGE; pwd; "
        "head -1 /ds/iris.csv; touch /ds/x 2>/dev/null || echo read-only",
        env=slurm_env,
    )
    assert job.returncode == 0, job.stderr
    assert job.stdout.splitlines() == [
        f"gpu02 0 {user.uid} python-ipykernel",
        str(notebooks),
        "sepal_length,sepal_width,petal_length,petal_width,species",
        "read-only",
    ]

    # The demo kernel, started by jupyter_client from the kernelspec binder/start installed.
    checked = user.run("python3", "-", str(notebooks), input=KERNEL_CHECK, env=slurm_env, timeout=300)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    result = json.loads(checked.stdout.strip().splitlines()[-1])
    assert result["display_name"] == "Asgard PyTorch (demo)"
    assert result["results"] == ["2"], result
    kernel_node, kernel_cwd = result["probe"]
    assert kernel_node in ("gpu01", "gpu02") and kernel_cwd == str(notebooks)
    assert not [name for name in result["queue"] if name.startswith("jupyter-asgard-")]

    stopped = user.run("python3", "-m", "tests.cluster", "down", "--root", str(root))
    assert stopped.returncode == 0, stopped.stderr
    assert not root.exists()
    assert user.wait_for_no_processes() == {}


NOTEBOOK_CHECK = """
import asyncio, json, sys
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from traitlets.config.loader import JSONFileConfigLoader
from tests.kernels import shutdown, start

async def main():
    # The site configuration binder/start wrote, as the notebook server loads it.
    site = JSONFileConfigLoader("jupyter_server_config.json", str(Path.home() / ".jupyter")).load_config()
    notebook = nbformat.read(sys.argv[1], as_version=4)
    km = await start("asgard-pytorch", str(Path(sys.argv[1]).parent), site=site)
    try:
        await NotebookClient(notebook, km=km, timeout=120).async_execute()
    finally:
        await shutdown(km)
    print(json.dumps({"first": notebook.cells[0].source, "containers": site.PyxisProvisioner.containers,
                      "outputs": ["".join(o.get("text", "") for o in cell.get("outputs", []))
                                  for cell in notebook.cells]}))

asyncio.run(main())
"""


def test_binder_start_without_user_namespaces_runs_kernels_without_a_container_and_says_so(
    binder_user: UnixUser,
) -> None:
    """Where enroot cannot run (mybinder.org refuses user namespaces; here ASGARD_DEMO_CONTAINERS=no asks for
    it), the demo's kernels run through srun on the nodes as they are, and the first page says so."""
    user, root = binder_user, cluster_root(binder_user)
    notebook = root / "netscratch" / user.name / "hello-asgard.ipynb"
    started = user.run(
        "bash",
        "binder/start",
        "python3",
        "-",
        str(notebook),
        input=NOTEBOOK_CHECK,
        env={"ASGARD_DEMO_CONTAINERS": "no"},
        timeout=300,
    )
    assert started.returncode == 0, started.stdout + started.stderr
    assert "kernels run through srun on the cluster's nodes without a container" in started.stdout
    assert (root / "etc" / "plugstack.conf").read_text() == ""
    result = json.loads(started.stdout.strip().splitlines()[-1])
    assert result["containers"] is False
    assert result["first"].startswith("> **Without containers.** This demo cannot run containers here")
    text = "\n".join(result["outputs"])
    assert "3 rows, columns: sepal_length" in text
    assert (root / "netscratch" / user.name / "asgard-example" / "petal_length_by_species.csv").exists()
    assert user.run("python3", "-m", "tests.cluster", "down", "--root", str(root)).returncode == 0
