"""A kernel whose image is a docker:// URI imports it once, on the real test cluster against its real registry:
its first start imports it (the phase shows it), a kernel with another container name on the other node starts
from the cached squashfs without fetching a layer (the registry's log says what each node asked), and a tag
pushed anew is followed by its digest."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster import LocalCluster
from tests.cluster.registry import REFERENCES
from tests.kernels import KernelSpecs, container_storage
from tests.server import JupyterServer, execute_via_websocket, running_server

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("no_kernel_jobs_left")]

START_TIMEOUT = 400.0  # a first start imports the image: minutes on a loaded 2-core machine


@pytest.fixture
def server(tmp_path: Path, slurm_cluster: LocalCluster) -> Iterator[JupyterServer]:
    config_dir = tmp_path / "enroot"
    slurm_cluster.write_enroot_credentials(config_dir)
    site = (
        "c.SlurmMonitor.poll_interval = 0.5\n"
        f"c.PyxisProvisioner.image_cache_dir = {str(tmp_path / 'cache')!r}\n"
        f"c.PyxisProvisioner.start_timeout = {START_TIMEOUT}\n"
    )
    with running_server(
        tmp_path / "home",
        site,
        {**os.environ, "ENROOT_CONFIG_PATH": str(config_dir), "ENROOT_CACHE_PATH": str(tmp_path / "enroot-cache")},
    ) as running:
        yield running


@pytest.fixture
def containers(slurm_cluster: LocalCluster) -> Iterator[list[tuple[str, str]]]:
    """The (node, name) of the containers the test makes: their unpacked images removed afterwards."""
    made: list[tuple[str, str]] = []
    yield made
    for node, name in made:
        for path in container_storage(slurm_cluster, node, name):
            shutil.rmtree(path, ignore_errors=True)


def registry_kernel(
    kernelspecs: KernelSpecs, slurm_cluster: LocalCluster, node: str, made: list[tuple[str, str]]
) -> str:
    """A kernelspec of the registry's image on node, with a container name of its own (a new container)."""
    container = f"asgard-registry-{uuid.uuid4().hex[:8]}"
    made.append((node, container))
    return kernelspecs.make(
        f"asgard-registry-{node}",
        gpus=None,
        image=slurm_cluster.pytorch_registry_image(),
        container_name=container,
        salloc_args=[f"--nodelist={node}"],
    )


def started_watching_phases(server: JupyterServer, name: str) -> tuple[str, list[str]]:
    """Start a kernel and keep the phases its row shows until it answers."""
    phases: list[str] = []
    started = threading.Event()

    def watch() -> None:
        while not started.is_set():
            for row in server.request("GET", "/asgard/api/kernels").body["kernels"]:
                if row["phase"] and row["phase"] not in phases:
                    phases.append(row["phase"])
            started.wait(0.2)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        kernel_id = server.start_kernel(name, timeout=START_TIMEOUT)
    finally:
        started.set()
        watcher.join()
    return kernel_id, phases


def blob_requests(slurm_cluster: LocalCluster, node: str, since: int) -> list[str]:
    with open(slurm_cluster.registry_log, "rb") as log:
        log.seek(since)
        lines = log.read().decode(errors="replace").splitlines()
    address = slurm_cluster.node_addr(node)
    return [line for line in lines if line.startswith(f"{address} - - [") and "/blobs/" in line]


def test_a_registry_kernel_imports_its_image_once_for_every_container_and_node_and_follows_a_moved_tag(
    server: JupyterServer,
    kernelspecs: KernelSpecs,
    slurm_cluster: LocalCluster,
    tmp_path: Path,
    containers: list[tuple[str, str]],
) -> None:
    reference = REFERENCES["python-ipykernel"]
    digest = slurm_cluster.registry_digest(reference)
    cached = tmp_path / "cache" / f"sha256-{digest.removeprefix('sha256:')}.sqsh"

    first, phases = started_watching_phases(server, registry_kernel(kernelspecs, slurm_cluster, "gpu01", containers))
    assert any(phase.startswith("importing its image") for phase in phases), phases
    assert cached.is_file() and (tmp_path / "cache" / f"{cached.name}.json").is_file()
    assert execute_via_websocket(server, first, "print(6 * 7)").strip() == "42"

    since = slurm_cluster.registry_log.stat().st_size
    second = server.start_kernel(
        registry_kernel(kernelspecs, slurm_cluster, "gpu02", containers), timeout=START_TIMEOUT
    )
    assert execute_via_websocket(server, second, "print(6 * 7)").strip() == "42"
    assert blob_requests(slurm_cluster, "gpu02", since) == []  # the node looked the tag up, and fetched nothing
    rows = {row["kernel_id"]: row for row in server.request("GET", "/asgard/api/kernels").body["kernels"]}
    assert (rows[first]["node"], rows[second]["node"]) == ("gpu01", "gpu02")
    assert sorted(path.name for path in (tmp_path / "cache").iterdir()) == [cached.name, f"{cached.name}.json"]

    slurm_cluster.push_image("python-ipykernel7", reference)  # the tag moves to another image
    try:
        moved = slurm_cluster.registry_digest(reference)
        assert moved != digest
        third = server.start_kernel(
            registry_kernel(kernelspecs, slurm_cluster, "gpu01", containers), timeout=START_TIMEOUT
        )
        assert execute_via_websocket(server, third, "import ipykernel; print(ipykernel.__version__[0])").strip() == "7"
        assert (tmp_path / "cache" / f"sha256-{moved.removeprefix('sha256:')}.sqsh").is_file()
    finally:
        slurm_cluster.push_image("python-ipykernel", reference)


def test_a_registry_kernel_with_an_unknown_tag_fails_its_start_saying_so_and_leaves_nothing(
    server: JupyterServer, kernelspecs: KernelSpecs, slurm_cluster: LocalCluster, tmp_path: Path
) -> None:
    image = slurm_cluster.pytorch_registry_image().rpartition(":")[0] + ":no-such-tag"
    name = kernelspecs.make("asgard-registry-missing", gpus=None, image=image)
    answer = server.request("POST", "/api/kernels", {"name": name})
    assert answer.status == 201, answer.body
    reason = server.failed_start(answer.body["id"])
    assert f"the kernel's image {image} cannot be used" in reason and "no-such-tag" in reason, reason
    assert not [path for path in (tmp_path / "cache").iterdir() if not path.name.startswith(".")]
