"""The user's named containers listed and removed on the real cluster: GET /asgard/api/containers lists a
container a kernel made on gpu02 with the kernel running in it, DELETE is refused while it runs and afterwards
removes the container's filesystem from gpu02's enroot storage by a short Slurm job of its own (real enroot, as
the user); `jupyter asgard containers` does the same through the server and without one. Another Unix user
sees none of it and removes nothing of it, whatever their own record says."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs
from tests.server import JupyterServer
from tests.unix_users import REPO, UnixUser
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

API = "/asgard/api/containers"


def storage(cluster: LocalCluster, node: str, name: str, uid: int | None = None) -> Path:
    """Where Pyxis keeps the named container of user uid (this process's) on node, seen from the host."""
    return cluster.node_storage(node) / "data" / f"user-{os.getuid() if uid is None else uid}" / f"pyxis_{name}"


def listed(server: JupyterServer, name: str) -> dict[str, Any] | None:
    answer = server.request("GET", API)
    assert answer.status == 200, answer.body
    return next((entry for entry in answer.body["containers"] if entry["name"] == name), None)


def shut_down(server: JupyterServer, kernel_id: str) -> None:
    """The kernel shut down, and gone: with pending kernels, DELETE answers while the shutdown still runs."""
    assert server.request("DELETE", f"/api/kernels/{kernel_id}", timeout=60).status == 204
    wait_for(lambda: server.request("GET", f"/api/kernels/{kernel_id}").status == 404, 120, "the kernel gone")


@pytest.fixture
def pinned(kernelspecs: KernelSpecs) -> tuple[str, str]:
    """A container name of the test's own, and a kernelspec whose kernels make it writable on gpu02."""
    name = f"removal-{uuid.uuid4().hex[:8]}"
    return name, kernelspecs.make(f"asgard-{name}", container_name=name, salloc_args=["--nodelist=gpu02"])


@pytest.fixture
def made(jupyter_server: JupyterServer, pinned: tuple[str, str]) -> str:
    """The container, made on gpu02 by a kernel that ran in it and was shut down."""
    name, kernelspec = pinned
    shut_down(jupyter_server, jupyter_server.start_kernel(kernelspec))
    return name


def test_a_container_is_listed_with_its_kernel_kept_while_it_runs_and_removed_from_its_node_after(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster, pinned: tuple[str, str]
) -> None:
    server, (name, kernelspec) = jupyter_server, pinned
    kernel_id = server.start_kernel(kernelspec)
    try:
        entry = listed(server, name)
        assert entry is not None, server.request("GET", API).body
        assert (entry["nodes"], entry["writable"], entry["image"]) == (
            ["gpu02"],
            True,
            str(slurm_cluster.pytorch_image()),
        )
        assert entry["kernels"] == [{"kernel_id": kernel_id, "node": "gpu02"}]
        assert entry["places"][0]["created"]  # Pyxis made it in this start

        refused = server.request("DELETE", f"{API}/{name}")
        assert refused.status == 409, refused.body
        assert f"kernel {kernel_id} on gpu02 runs in it" in refused.message
        assert refused.body["hint"].startswith("shut the kernel down first")
        elsewhere = server.request("DELETE", f"{API}/{name}?node=gpu01")
        assert (elsewhere.status, elsewhere.message) == (
            404,
            f"your container {name} is not recorded on gpu01: it is on gpu02",
        )
        assert server.request("DELETE", f"{API}/{name}:exec").status == 400
        assert storage(slurm_cluster, "gpu02", name).is_dir()  # untouched: the kernel runs on in it
    finally:
        shut_down(server, kernel_id)

    entry = listed(server, name)
    assert entry is not None and entry["kernels"] == []
    removed = server.request("DELETE", f"{API}/{name}")
    assert removed.status == 200, removed.body
    assert removed.body == {
        "name": name,
        "removed": [{"node": "gpu02", "gone_already": False}],
        "message": f"removed {name} from gpu02",
    }
    assert not storage(slurm_cluster, "gpu02", name).exists()
    assert listed(server, name) is None
    assert server.request("DELETE", f"{API}/{name}").status == 404  # nothing recorded any more


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter", "asgard", "containers", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )


def test_the_command_lists_and_removes_through_the_server_and_on_its_own_without_one(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster, made: str, tmp_path: Path
) -> None:
    name = made
    through_server = {key: jupyter_server.env[key] for key in ("JUPYTER_RUNTIME_DIR", "JUPYTER_DATA_DIR")}
    table = cli(through_server)
    assert table.returncode == 0, table.stderr
    [row] = [line for line in table.stdout.splitlines() if line.startswith(f"{name} ")]
    assert row.split()[1:3] == ["gpu02", str(slurm_cluster.pytorch_image())] and row.split()[3] == "yes"
    as_json = cli(through_server, "--json")
    [entry] = [entry for entry in json.loads(as_json.stdout)["containers"] if entry["name"] == name]
    assert (entry["nodes"], entry["kernels"]) == (["gpu02"], [])

    elsewhere = cli(through_server, "remove", name, "--node", "gpu01")
    assert elsewhere.returncode == 1
    assert f"error: your container {name} is not recorded on gpu01: it is on gpu02" in elsewhere.stderr
    removed = cli(through_server, "remove", name)
    assert (removed.returncode, removed.stdout) == (0, f"removed {name} from gpu02\n"), removed.stderr
    assert not storage(slurm_cluster, "gpu02", name).exists()
    assert name not in cli(through_server).stdout

    # No server of the user runs (another runtime directory): the command reads the record and runs the job
    # itself. A container recorded on gpu01 that is not there (removed by hand): real enroot says so, and it is
    # forgotten, not an error.
    on_its_own = {**through_server, "JUPYTER_RUNTIME_DIR": str(tmp_path / "no-server")}
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    record = f"""
from jupyter_asgard.kernel.container_places import ContainerPlace, ContainerPlaces
ContainerPlaces().seen(ContainerPlace({ghost!r}, "gpu01"), False)
"""
    subprocess.run([sys.executable, "-c", record], env={**os.environ, **on_its_own}, check=True)
    listing = cli(on_its_own)
    assert ghost in listing.stdout and "no Jupyter server of yours runs" in listing.stderr
    gone = cli(on_its_own, "remove", ghost, "--json")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["removed"] == [{"node": "gpu01", "gone_already": True}]
    assert listed(jupyter_server, ghost) is None  # the server reads the same record


@pytest.fixture
def their_server(another_user: UnixUser, slurm_cluster: LocalCluster, tmp_path: Path) -> Iterator[JupyterServer]:
    """The other user's own Jupyter server, with this checkout's Asgard, their own data and runtime directories."""
    home = another_user.home
    made = another_user.run("mkdir", "-p", f"{home}/root", f"{home}/data", f"{home}/runtime")
    assert made.returncode == 0, made.stderr
    env = {
        **slurm_cluster.env,
        "PYTHONPATH": str(REPO),
        "JUPYTER_DATA_DIR": f"{home}/data",
        "JUPYTER_RUNTIME_DIR": f"{home}/runtime",
    }
    server = JupyterServer(
        home / "root", tmp_path / "their-server.log", runner=lambda argv: another_user.command(*argv, env=env)
    )
    server.start(env)
    try:
        yield server
    finally:
        server.stop()


def test_another_user_lists_none_of_the_user_s_containers_and_removes_nothing_of_them(
    jupyter_server: JupyterServer,
    slurm_cluster: LocalCluster,
    made: str,
    another_user: UnixUser,
    their_server: JupyterServer,
) -> None:
    name, mine = made, storage(slurm_cluster, "gpu02", made)
    assert listed(jupyter_server, name) is not None and mine.is_dir()
    env = their_server.env

    # Their server and their command know nothing of it: the record is the user's own.
    assert their_server.request("GET", API).body == {"containers": []}
    listing = another_user.run("python3", "-m", "jupyter_asgard.cli.cli", "containers", "--json", env=env)
    assert (listing.returncode, json.loads(listing.stdout)) == (0, {"containers": []}), listing.stderr
    refused = their_server.request("DELETE", f"{API}/{name}")
    assert refused.status == 404 and f"no container {name!r} of yours is recorded" in refused.message

    # A record of their own naming the user's container on gpu02 (as if they had made one of that name there):
    # the job runs as them, and enroot looks in their own storage on the node, where there is none.
    forged = f"""
from jupyter_asgard.kernel.container_places import ContainerPlace, ContainerPlaces
ContainerPlaces().seen(ContainerPlace({name!r}, "gpu02"), False)
"""
    recorded = another_user.run("python3", "-c", forged, env=env)
    assert recorded.returncode == 0, recorded.stderr
    attempt = their_server.request("DELETE", f"{API}/{name}", timeout=900)
    assert attempt.status == 200, attempt.body
    assert attempt.body["removed"] == [{"node": "gpu02", "gone_already": True}]
    by_command = another_user.run("python3", "-m", "jupyter_asgard.cli.cli", "containers", "remove", name, env=env)
    assert by_command.returncode == 1 and "is recorded on any node" in by_command.stderr

    assert mine.is_dir() and mine.stat().st_uid == os.getuid()  # the user's container is where it was
    entry = listed(jupyter_server, name)
    assert entry is not None and entry["nodes"] == ["gpu02"]

    removed = jupyter_server.request("DELETE", f"{API}/{name}")  # the user's own removal: the state left as found
    assert removed.status == 200 and not mine.exists()
