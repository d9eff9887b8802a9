"""Imports as the server runs them: the importer (node/importer.py) as a step of an allocation on gpu01, through
srun (import_step_argv, digest_step_argv), running the node's real enroot against the test cluster's registry,
with the tiny test image (three layers; it imports in about a second).

As in test_registry.py, ENROOT_CONFIG_PATH in the step's environment names a directory with the `.credentials`
a user would keep; each import here also has an enroot cache of its own, so that its layers are downloaded.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jupyter_asgard.containers.container_steps import digest_step_argv, import_step_argv
from jupyter_asgard.containers.image_import_progress import ImportProgress, import_failure
from jupyter_asgard.node.importer import PHASES, parse_event
from tests.cluster import LocalCluster
from tests.cluster.images import IMAGE_VARIABLE, TINY
from tests.cluster.registry import TINY_REFERENCE

pytestmark = pytest.mark.cluster

NODE = "gpu01"
STEP_TIMEOUT = 120  # an import of the tiny image takes a second or two, on a loaded 2-core machine more


@pytest.fixture
def allocation(slurm_cluster: LocalCluster) -> Iterator[str]:
    """An allocation on NODE (no GPU), as the server makes one for imports; its job id."""
    granted = subprocess.run(
        ["salloc", "--no-shell", f"--nodelist={NODE}", "--job-name=jupyter-asgard-import-test", "--time=10"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    job = re.search(r"Granted job allocation (\d+)", granted.stderr)
    assert job, granted.stderr
    yield job.group(1)
    subprocess.run(["scancel", job.group(1)], capture_output=True, timeout=30)


@dataclass
class Step:
    lines: list[str]  # the importer's stdout
    arrived: list[float]  # when each line reached this process, in seconds since the step began
    stderr: str  # srun's
    returncode: int

    def events(self, kind: str) -> list[str]:
        return [" ".join(parsed[1]) for line in self.lines if (parsed := parse_event(line)) and parsed[0] == kind]

    def failure(self, uri: str) -> tuple[str, str]:
        return import_failure(self.lines + self.stderr.splitlines(), uri)


def run_step(argv: list[str], config: Path, cache: Path | None = None) -> Step:
    """argv (a step of the importer), with enroot's settings in config (and its cache in cache), read line by
    line as srun passes the lines on."""
    env = {**os.environ, "ENROOT_CONFIG_PATH": str(config)}
    if cache is not None:
        env["ENROOT_CACHE_PATH"] = str(cache)
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines, arrived = [], []
    try:
        assert process.stdout is not None and process.stderr is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            arrived.append(time.monotonic() - started)
        returncode = process.wait(timeout=STEP_TIMEOUT)
        return Step(lines, arrived, process.stderr.read(), returncode)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def squashfs_paths(image: Path) -> set[str]:
    listing = subprocess.run(["unsquashfs", "-l", "-d", "", str(image)], capture_output=True, text=True, check=True)
    return {line for line in listing.stdout.splitlines() if line.startswith("/")}


def test_an_import_reports_its_progress_as_it_goes_and_leaves_the_squashfs_and_the_digest(
    slurm_cluster: LocalCluster, allocation: str, tmp_path: Path
) -> None:
    """The tag's digest first (what the registry has for the tag now), then the import of exactly that image: the
    phases in order, the three layers counted as they download, the lines as they come (not all at the end), the
    squashfs image with the layers applied (the third one's whiteout too); and the digest step says the same
    digest."""
    config, uri = tmp_path / "enroot-config", slurm_cluster.tiny_registry_image()
    slurm_cluster.write_enroot_credentials(config)
    out = tmp_path / "images" / "tiny.sqsh"
    out.parent.mkdir()

    step = run_step(import_step_argv(allocation, NODE, str(out), uri), config, cache=tmp_path / "cache")

    assert step.returncode == 0, [*step.lines, step.stderr]
    registry_digest = slurm_cluster.registry_digest(TINY_REFERENCE)
    assert step.events("digest") == [registry_digest]
    assert step.events("phase") == ["authenticating", *PHASES]  # the digest's lookup, then the import's phases
    assert step.events("layers") == ["0 3", "1 3", "2 3", "3 3"]
    assert "[INFO] Downloading 3 missing layers..." in step.events("log")
    assert step.arrived[-1] - step.arrived[0] > 0.2, "srun passed the lines on only at the end"
    progress = ImportProgress()
    for line in step.lines:
        progress.feed(line)
    assert progress.describe() == "creating the squashfs image (100%)"
    paths = squashfs_paths(out)
    assert {"/app/hello.txt", "/data/noise.bin", "/etc/os-release"} <= paths
    assert "/data/obsolete.txt" not in paths  # the third layer removes it
    environment = subprocess.run(["unsquashfs", "-cat", str(out), "/etc/environment"], capture_output=True, text=True)
    assert f"{IMAGE_VARIABLE}={TINY}" in environment.stdout.splitlines()

    digest = run_step(digest_step_argv(allocation, NODE, uri), config)

    assert digest.returncode == 0, [*digest.lines, digest.stderr]
    assert digest.events("digest") == [registry_digest]


def test_refused_imports_say_why_in_the_users_words(
    slurm_cluster: LocalCluster, allocation: str, tmp_path: Path
) -> None:
    """A wrong password, an unknown tag, a registry that is down: enroot's own words, made the user's."""
    config, uri = tmp_path / "enroot-config", slurm_cluster.tiny_registry_image()
    slurm_cluster.write_enroot_credentials(config, password="not-the-password")
    out = str(tmp_path / "tiny.sqsh")
    registry, host = slurm_cluster.registry_address, slurm_cluster.registry_address.split(":")[0]

    wrong_password = run_step(import_step_argv(allocation, NODE, out, uri), config)
    assert wrong_password.returncode != 0
    message, hint = wrong_password.failure(uri)
    assert message == (
        f"the registry {registry} refused the credentials of asgard-tester from {config}/.credentials "
        "(HTTP 401 Unauthorized)"
    )
    assert f"`machine {host} login asgard-tester password PASSWORD`" in hint

    slurm_cluster.write_enroot_credentials(config)
    unknown = uri.replace(":1.0", ":no-such-tag")
    unknown_tag = run_step(import_step_argv(allocation, NODE, out, unknown), config)
    assert unknown_tag.failure(unknown)[0] == (
        f"the registry {registry} has no image asgard/tiny:no-such-tag (HTTP 404 Not Found): the repository or the "
        "tag does not exist"
    )

    slurm_cluster.stop_registry()
    try:
        down = run_step(digest_step_argv(allocation, NODE, uri), config)
    finally:
        slurm_cluster.start_registry()
    assert down.returncode != 0 and not down.events("digest")
    assert down.failure(uri)[0] == (
        f"the compute node cannot reach the registry at {host} port {registry.split(':')[1]}: Couldn't connect to "
        "server"
    )
    assert not os.path.exists(out)


def test_an_image_directory_without_room_says_so(slurm_cluster: LocalCluster, allocation: str, tmp_path: Path) -> None:
    """The image's directory on a 512 KiB tmpfs (mounted in the node's own mount namespace, where the step
    writes): the squashfs image (over 1 MiB) does not fit, and the failure says where."""
    config, uri = tmp_path / "enroot-config", slurm_cluster.tiny_registry_image()
    slurm_cluster.write_enroot_credentials(config)
    full = tmp_path / "full"
    full.mkdir()
    node_mounts = ["nsenter", f"--mount=/proc/{slurm_cluster.state.pids[f'slurmd-{NODE}']}/ns/mnt", "--"]
    subprocess.run([*node_mounts, "mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(full)], check=True)
    try:
        step = run_step(import_step_argv(allocation, NODE, str(full / "tiny.sqsh"), uri), config, tmp_path / "cache")
    finally:
        subprocess.run([*node_mounts, "umount", str(full)], check=True)

    assert step.returncode != 0
    assert "Write failed because No space left on device" in step.events("log")
    assert step.failure(uri)[0] == (
        f"no space is left in {full}, where the image is written: the squashfs image did not fit"
    )
