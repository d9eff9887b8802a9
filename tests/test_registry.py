"""The test cluster's registry, as a compute node's enroot meets it: token authentication as on nvcr.io, the
suite's images pushed to it, plain HTTP allowed by the nodes' enroot settings.

Each import runs the real `enroot import` on gpu01 through srun, with ENROOT_CONFIG_PATH naming a directory
with the `.credentials` a user would keep, and the registry's log tells what the node asked it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.cluster import LocalCluster
from tests.cluster.images import ensure_images
from tests.cluster.registry import REFERENCES

pytestmark = pytest.mark.cluster

NODE = "gpu01"
IMAGE = "python"  # the smallest test image: the import squashes some 120 MB
REPOSITORY, _, TAG = REFERENCES[IMAGE].rpartition(":")
IMPORT_TIMEOUT = 300  # on a loaded 2-core machine


def enroot_import(cluster: LocalCluster, config_dir: Path, uri: str, output: Path) -> subprocess.CompletedProcess:
    """`enroot import -o output uri` on NODE, as a job step, with enroot's settings (.credentials) in config_dir
    and a layer cache of its own beside it: layers other tests imported on NODE are not fetched again."""
    return subprocess.run(
        ["srun", f"--nodelist={NODE}", "enroot", "import", "-o", str(output), uri],
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT,
        env={
            **os.environ,
            "ENROOT_CONFIG_PATH": str(config_dir),
            "ENROOT_CACHE_PATH": str(config_dir.with_name(f"{config_dir.name}-cache")),
        },
    )


def log_end(cluster: LocalCluster) -> int:
    """Where the registry's log ends now: requests_from() reads what comes after."""
    return cluster.registry_log.stat().st_size


def requests_from(cluster: LocalCluster, node: str, since: int) -> list[str]:
    """The registry's access-log lines (`ADDRESS - - [date] "METHOD PATH HTTP/1.1" STATUS ...`) of the requests
    node made since offset since of the log."""
    with open(cluster.registry_log, "rb") as log:
        log.seek(since)
        text = log.read().decode(errors="replace")
    return [line for line in text.splitlines() if line.startswith(f"{cluster.node_addr(node)} - - [")]


def squashfs_paths(image: Path) -> set[str]:
    """Every path in a squashfs image (`/usr/bin/python3`, ...)."""
    listing = subprocess.run(["unsquashfs", "-l", "-d", "", str(image)], capture_output=True, text=True, check=True)
    return {line for line in listing.stdout.splitlines() if line.startswith("/")}


def squashfs_file(image: Path, path: str) -> bytes:
    return subprocess.run(["unsquashfs", "-cat", str(image), path], capture_output=True, check=True).stdout


def test_a_node_imports_a_test_image_with_the_users_credentials(slurm_cluster: LocalCluster, tmp_path: Path) -> None:
    """The pushed image is the squashfs image's root filesystem (its Python, byte for byte, and every path),
    with the recipe's ENV as enroot writes it; the registry saw the node fetch its manifest and layer."""
    config = tmp_path / "enroot-config"
    slurm_cluster.write_enroot_credentials(config)
    output, since = tmp_path / "imported.sqsh", log_end(slurm_cluster)

    result = enroot_import(slurm_cluster, config, slurm_cluster.bare_registry_image(), output)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Using credentials from file: {config / '.credentials'}" in result.stderr
    original, python = ensure_images()[IMAGE], squashfs_file(output, "/usr/bin/python3.11")
    assert python.startswith(b"\x7fELF") and python == squashfs_file(original, "/usr/bin/python3.11")
    missing = {path for path in squashfs_paths(original) - squashfs_paths(output) if not path.startswith("/dev/")}
    assert not missing, f"the imported image lacks {sorted(missing)[:10]}"
    assert f"TEST_IMAGE={IMAGE}" in squashfs_file(output, "/etc/environment").decode().splitlines()
    requests = requests_from(slurm_cluster, NODE, since)
    assert any(f'"GET /v2/{REPOSITORY}/manifests/{TAG} HTTP/1.1" 200' in line for line in requests), requests
    assert any(f'"GET /v2/{REPOSITORY}/blobs/sha256:' in line and '" 200 ' in line for line in requests), requests


def test_a_wrong_password_gets_401_unauthorized(slurm_cluster: LocalCluster, tmp_path: Path) -> None:
    """As from nvcr.io: the token server refuses the password, enroot says so and fetches nothing."""
    config = tmp_path / "enroot-config"
    slurm_cluster.write_enroot_credentials(config, password="not-the-password")
    output, since = tmp_path / "imported.sqsh", log_end(slurm_cluster)

    result = enroot_import(slurm_cluster, config, slurm_cluster.bare_registry_image(), output)

    assert result.returncode != 0
    assert f"{slurm_cluster.registry.realm} returned error code: 401 Unauthorized" in result.stderr, result.stderr
    assert not output.exists()
    requests = requests_from(slurm_cluster, NODE, since)
    assert requests and all('" 401 ' in line for line in requests), requests  # asked, and was sent to the realm


@pytest.mark.parametrize("reference", [f"{REPOSITORY}:no-such-tag", "no/such-repository:1.0"])
def test_an_unknown_tag_or_repository_is_404_not_found(
    slurm_cluster: LocalCluster, tmp_path: Path, reference: str
) -> None:
    config = tmp_path / "enroot-config"
    slurm_cluster.write_enroot_credentials(config)
    output = tmp_path / "imported.sqsh"
    repository, _, tag = reference.rpartition(":")

    result = enroot_import(slurm_cluster, config, slurm_cluster.registry.uri(reference), output)

    assert result.returncode != 0
    manifest = f"http://{slurm_cluster.registry_address}/v2/{repository}/manifests/{tag}"
    assert f"URL {manifest} returned error code: 404 Not Found" in result.stderr, result.stderr
    assert not output.exists()


def test_a_registry_that_is_down_is_not_reached_and_comes_back(slurm_cluster: LocalCluster, tmp_path: Path) -> None:
    config = tmp_path / "enroot-config"
    slurm_cluster.write_enroot_credentials(config)
    slurm_cluster.stop_registry()
    try:
        result = enroot_import(slurm_cluster, config, slurm_cluster.bare_registry_image(), tmp_path / "down.sqsh")
    finally:
        slurm_cluster.start_registry()
    assert result.returncode != 0
    host, port = slurm_cluster.registry_address.split(":")
    assert f"Failed to connect to {host} port {port}" in result.stderr, result.stderr
    assert slurm_cluster.registry_digest(REFERENCES[IMAGE])  # up again, with its images


def test_a_tag_pushed_again_moves_to_the_new_images_digest(slurm_cluster: LocalCluster) -> None:
    """What a moving tag (`:latest`, a nightly) does: the same REPO:TAG, another manifest. On a tag of the
    test's own, so that no other test sees it move."""
    reference = "asgard/moving:latest"
    slurm_cluster.push_image("python", reference)
    first = slurm_cluster.registry_digest(reference)
    assert first == slurm_cluster.registry_digest(REFERENCES["python"])  # the same image: the same manifest

    slurm_cluster.push_image("python-ipykernel7", reference)

    moved = slurm_cluster.registry_digest(reference)
    assert moved != first
    assert moved == slurm_cluster.registry_digest(REFERENCES["python-ipykernel7"])
