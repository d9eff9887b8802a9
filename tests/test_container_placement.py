"""A container follows its user, on the real cluster: a kernel starts where its named container is (warm, with what
was installed in it), or elsewhere at once with a notice naming where the container is, and "bring it here"
copies it over; a container removed from a node behind the server's back is noticed at the next start."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, container_storage, wait_until_no_kernel_jobs
from tests.server import JupyterServer, execute_via_websocket
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

MARKER = "/opt/asgard-marker"
READ_MARKER = f"import os; print(open({MARKER!r}).read() if os.path.exists({MARKER!r}) else 'no marker')"


def row(server: JupyterServer, kernel_id: str) -> dict[str, Any]:
    answer = server.request("GET", f"/asgard/api/kernels/{kernel_id}")
    assert answer.status == 200, answer.body
    body: dict[str, Any] = answer.body
    return body


def shut_down(server: JupyterServer, kernel_id: str) -> None:
    assert server.request("DELETE", f"/api/kernels/{kernel_id}", timeout=60).status == 204


def places(server: JupyterServer, container: str) -> list[dict[str, Any]]:
    """The server's record of where container is (kernel/container_places.py, in its user's data directory)."""
    path = Path(server.env["JUPYTER_DATA_DIR"]) / "asgard" / "containers" / "containers.json"
    rows: list[dict[str, Any]] = json.loads(path.read_text())["containers"]
    return [place for place in rows if place["name"] == container]


def slurm_alone_picks() -> str:
    """The node Slurm would give a one-GPU kernel now, asked as placement does (srun --test-only)."""
    answer = subprocess.run(
        ["srun", "--test-only", "--nodes=1", "--ntasks=1", "--gpus=1", "true"], capture_output=True, text=True
    )
    return (answer.stdout + answer.stderr).split(" on nodes ")[1].split()[0]


@pytest.fixture
def placed(jupyter_server: JupyterServer, kernelspecs: KernelSpecs) -> Iterator[tuple[str, str]]:
    """A writable named container of its own, made on gpu02 by a kernel pinned there that wrote a marker into
    it; yields (the container's name, a kernelspec of it that leaves the node to Slurm and placement)."""
    tag = uuid.uuid4().hex[:8]
    container = f"placed-{tag}"
    pinned = kernelspecs.make(f"asgard-pinned-{tag}", container_name=container, salloc_args=["--nodelist=gpu02"])
    kernel_id = jupyter_server.start_kernel(pinned)
    try:
        execute_via_websocket(jupyter_server, kernel_id, f"open({MARKER!r}, 'w').write('made on gpu02')")
        assert row(jupyter_server, kernel_id)["container"] == container
    finally:
        shut_down(jupyter_server, kernel_id)
    # Its job ended, not only asked to: the container's last processes (ipykernel writing its history) are gone
    # before a test wipes the container's files.
    assert wait_until_no_kernel_jobs(60) == []
    yield container, kernelspecs.make(f"asgard-placed-{tag}", container_name=container)


def test_a_kernel_goes_to_the_node_where_its_container_is_and_starts_warm(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster, placed: tuple[str, str]
) -> None:
    """Both nodes idle, Slurm alone would pick gpu01: the kernel lands on gpu02, in its container as it was
    left (the marker is there, no copy was made on gpu01), and nobody is told anything."""
    container, name = placed
    assert [place["node"] for place in places(jupyter_server, container)] == ["gpu02"]
    assert slurm_alone_picks() == "gpu01"
    kernel_id = jupyter_server.start_kernel(name)
    try:
        assert execute_via_websocket(jupyter_server, kernel_id, READ_MARKER).strip() == "made on gpu02"
        placed_row = row(jupyter_server, kernel_id)
        assert (placed_row["node"], placed_row["container"], placed_row["container_notice"]) == ("gpu02", container, "")
        assert container_storage(slurm_cluster, "gpu01", container) == []
        assert f"its container {container} is on gpu02: asking for that node" in jupyter_server.log_path.read_text()
    finally:
        shut_down(jupyter_server, kernel_id)


@pytest.fixture
def gpu02_busy(placed: tuple[str, str]) -> Iterator[None]:
    """gpu02's GPUs held by another job (its CPUs not), once the container is placed there."""
    answer = subprocess.run(
        ["salloc", "--no-shell", "--gpus=2", "--nodelist=gpu02", "-J", "other-user"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    yield
    subprocess.run(["scancel", answer.stderr.split()[-1]], capture_output=True)


def bring(server: JupyterServer, kernel_id: str) -> dict[str, Any]:
    answer = server.request("POST", f"/asgard/api/kernels/{kernel_id}/container/bring")
    assert answer.status == 202, answer.body
    move: dict[str, Any] = answer.body["container_move"]
    return move


def move_ended(server: JupyterServer, kernel_id: str) -> dict[str, Any]:
    """The kernel's move once it is done or failed."""

    def ended() -> dict[str, Any] | None:
        move: dict[str, Any] = row(server, kernel_id)["container_move"]
        return move if move["state"] in ("done", "failed") else None

    return wait_for(ended, 300, "the move to end")


@pytest.mark.usefixtures("gpu02_busy")
def test_with_its_node_busy_a_kernel_starts_elsewhere_is_told_where_its_container_is_and_brings_it_here(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster, placed: tuple[str, str]
) -> None:
    """gpu02's GPUs held by another job: the kernel starts on gpu01 at once, in a fresh copy, and its row (what
    the status bar and side panel show) says where the container is. Bring it here saves the container on gpu02
    (its GPUs still busy: the save needs none) and restarts the kernel on gpu01, in its allocation, with the
    marker; then the container is on both nodes and the notice is gone."""
    container, name = placed
    kernel_id = jupyter_server.start_kernel(name)
    try:
        started = row(jupyter_server, kernel_id)
        assert (started["node"], started["container_home"]) == ("gpu01", "gpu02")
        notice = started["container_notice"]
        assert notice.startswith(f"your container {container}, with what you installed, is on gpu02, which is busy")
        assert notice.endswith("this kernel runs on gpu01 in a fresh copy of the image"), notice
        assert notice in jupyter_server.log_path.read_text()
        assert execute_via_websocket(jupyter_server, kernel_id, READ_MARKER).strip() == "no marker"

        assert bring(jupyter_server, kernel_id)["state"] == "saving"
        again = jupyter_server.request("POST", f"/asgard/api/kernels/{kernel_id}/container/bring")
        assert again.status == 409, again.body
        moved = move_ended(jupyter_server, kernel_id)
        assert moved["state"] == "done", moved
        assert jupyter_server.await_kernel(kernel_id, 60) == ""
        assert execute_via_websocket(jupyter_server, kernel_id, READ_MARKER).strip() == "made on gpu02"
        after = row(jupyter_server, kernel_id)
        assert (after["node"], after["job_id"]) == ("gpu01", started["job_id"])
        assert (after["container_notice"], after["container_home"]) == ("", "")
        assert sorted(place["node"] for place in places(jupyter_server, container)) == ["gpu01", "gpu02"]
        nothing_left = jupyter_server.request("POST", f"/asgard/api/kernels/{kernel_id}/container/bring")
        assert nothing_left.status == 409 and "nothing to bring" in nothing_left.body["message"]
    finally:
        shut_down(jupyter_server, kernel_id)
    staging = list((slurm_cluster.netscratch / "root" / "images").glob(".moving-*"))
    assert staging == []  # the saved copy goes once the kernel runs in the container made from it


@pytest.mark.usefixtures("gpu02_busy")
def test_bringing_a_container_that_is_gone_from_its_node_fails_in_pyxiss_words(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster, placed: tuple[str, str]
) -> None:
    """The container was wiped from gpu02 after the kernel started on gpu01: the move fails saying so (Pyxis's
    words beside Asgard's), forgets gpu02, and leaves the kernel running as it was."""
    container, name = placed
    kernel_id = jupyter_server.start_kernel(name)
    try:
        execute_via_websocket(jupyter_server, kernel_id, "x = 42")
        for path in container_storage(slurm_cluster, "gpu02", container):
            shutil.rmtree(path)
        bring(jupyter_server, kernel_id)
        failed = move_ended(jupyter_server, kernel_id)
        assert failed["state"] == "failed", failed
        assert f"{container} is no longer on gpu02" in failed["message"]
        assert "does not exist, and --container-image is not set" in failed["message"]
        assert [place["node"] for place in places(jupyter_server, container)] == ["gpu01"]
        assert execute_via_websocket(jupyter_server, kernel_id, "print(x)").strip() == "42"
    finally:
        shut_down(jupyter_server, kernel_id)


def test_a_container_removed_from_its_node_behind_the_servers_back_is_noticed_at_the_next_start(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster, placed: tuple[str, str]
) -> None:
    """The record says gpu02; its storage was wiped: the next start goes there, Pyxis makes the container anew,
    the old record is forgotten, and the user is told what was lost."""
    container, name = placed
    before = places(jupyter_server, container)
    for path in container_storage(slurm_cluster, "gpu02", container):
        shutil.rmtree(path)
    kernel_id = jupyter_server.start_kernel(name)
    try:
        wiped = row(jupyter_server, kernel_id)
        assert (wiped["node"], wiped["container_home"]) == ("gpu02", "")  # nothing to bring: it was lost
        assert wiped["container_notice"] == (
            f"your container {container} was no longer on gpu02 (it was removed from the node's storage): this "
            "kernel runs in a fresh copy of the image, without what was installed in it"
        )
        assert execute_via_websocket(jupyter_server, kernel_id, READ_MARKER).strip() == "no marker"
        (now,) = places(jupyter_server, container)
        assert now["created"] and now["created"] != before[0]["created"]
        assert f"the container {container} recorded on gpu02" in jupyter_server.log_path.read_text()
    finally:
        shut_down(jupyter_server, kernel_id)
