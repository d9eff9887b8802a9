"""'Import image' through a running Jupyter server's REST API, on the real test cluster against its real registry:
the import is a Slurm job on a compute node running the real `enroot import`, its progress is what the API
shows, the image is listed only once complete and with its manifest, two imports of one URI are one import, a
cancelled import leaves neither a job nor a file, and a wrong password is said in the user's words."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import LocalCluster
from tests.kernels import kernel_jobs, wait_until_no_kernel_jobs
from tests.server import JupyterServer, running_server
from tests.unix_users import UnixUser

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("no_kernel_jobs_left")]

IMPORTS = "/asgard/api/images/import"
IMPORT_TIMEOUT = 300.0  # seconds, on a loaded 2-core machine


@pytest.fixture
def importing_server(tmp_path: Path, slurm_cluster: LocalCluster) -> Iterator[JupyterServer]:
    """A Jupyter server whose user keeps the test registry's credentials where enroot reads them, and whose
    images go to a directory of the test's."""
    config_dir = tmp_path / "enroot"
    slurm_cluster.write_enroot_credentials(config_dir)
    site = f"c.PyxisProvisioner.saved_images_dir = {str(tmp_path / 'images')!r}\nc.PyxisProvisioner.import_cpus = 2\n"
    with running_server(
        tmp_path / "home",
        site,
        {**os.environ, "ENROOT_CONFIG_PATH": str(config_dir), "ENROOT_CACHE_PATH": str(tmp_path / "enroot-cache")},
    ) as server:
        yield server


def until(server: JupyterServer, import_id: str, done: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """The import's states as GET shows them, polled until done says so."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + IMPORT_TIMEOUT
    while time.monotonic() < deadline:
        found = server.request("GET", f"{IMPORTS}/{import_id}").body
        if not seen or found != seen[-1]:
            seen.append(found)
        if done(found):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"the import did not get there in {IMPORT_TIMEOUT:.0f}s: {seen[-1]}\n{server.log()[-3000:]}")


def ended(found: dict[str, Any]) -> bool:
    return found["state"] not in ("queued", "importing")


def enroot_running(server: JupyterServer, slurm_cluster: LocalCluster, name: str) -> str:
    """An import of the (bare) test image that takes seconds, once enroot runs on the node; its id."""
    answer = server.request("POST", IMPORTS, {"uri": slurm_cluster.bare_registry_image(), "name": name})
    assert answer.status == 202, answer.body
    until(server, answer.body["id"], lambda found: found["progress"]["phase"] != "" or ended(found))
    return str(answer.body["id"])


def listed(server: JupyterServer) -> dict[str, dict[str, Any]]:
    return {image["path"]: image for image in server.request("GET", "/asgard/api/images").body["images"]}


def test_an_import_shows_its_progress_and_its_image_is_listed_once_complete_with_its_manifest(
    importing_server: JupyterServer, slurm_cluster: LocalCluster, tmp_path: Path
) -> None:
    uri = slurm_cluster.tiny_registry_image()
    answer = importing_server.request("POST", IMPORTS, {"uri": uri, "name": "python-env"})
    assert answer.status == 202, answer.body
    path = str(tmp_path / "images" / "python-env.sqsh")
    assert answer.body["path"] == path and answer.body["state"] in ("queued", "importing")
    again = importing_server.request("POST", IMPORTS, {"uri": uri})  # a second click: the same import
    assert again.status == 200 and again.body["id"] == answer.body["id"]
    jobs = [line for line in kernel_jobs() if "jupyter-asgard-import-" in line]
    assert len(jobs) <= 1, jobs

    seen = until(importing_server, answer.body["id"], lambda found: found["state"] != "queued" or ended(found))
    assert path not in listed(importing_server)  # on its way: not an image yet
    seen += until(importing_server, answer.body["id"], ended)
    final = seen[-1]
    assert final["state"] == "imported", final
    statuses = [found["status"] for found in seen]
    assert any("layers" in status or "squashfs" in status for status in statuses), statuses
    assert final["status"] == f"imported as {path}"

    image = listed(importing_server)[path]
    reference = uri.partition("#")[2]
    manifest = image["manifest"]
    assert manifest["source_uri"] == uri and manifest["digest"] == slurm_cluster.registry_digest(reference)
    assert manifest["size"] == os.path.getsize(path) == final["size"] > 0
    assert sorted(entry.name for entry in (tmp_path / "images").iterdir()) == [
        "python-env.sqsh",
        "python-env.sqsh.json",
    ]
    assert json.loads((tmp_path / "images" / "python-env.sqsh.json").read_text()) == manifest
    assert importing_server.request("GET", IMPORTS).body["imports"][0]["id"] == answer.body["id"]


def test_a_cancelled_import_leaves_no_job_and_no_file(
    importing_server: JupyterServer, slurm_cluster: LocalCluster, tmp_path: Path
) -> None:
    import_id = enroot_running(importing_server, slurm_cluster, "gone")
    cancelled = importing_server.request("DELETE", f"{IMPORTS}/{import_id}")
    assert cancelled.status == 200 and cancelled.body["state"] == "cancelled", cancelled.body
    assert not wait_until_no_kernel_jobs()  # its job ended (Slurm may say COMPLETING for a moment)
    assert list((tmp_path / "images").iterdir()) == []
    again = importing_server.request("DELETE", f"{IMPORTS}/{import_id}")
    assert again.status == 409 and "has ended already (cancelled)" in again.body["message"]


def test_a_wrong_password_is_said_as_such(
    importing_server: JupyterServer, slurm_cluster: LocalCluster, tmp_path: Path
) -> None:
    slurm_cluster.write_enroot_credentials(tmp_path / "enroot", password="not-the-password")
    answer = importing_server.request("POST", IMPORTS, {"uri": slurm_cluster.tiny_registry_image(), "name": "denied"})
    final = until(importing_server, answer.body["id"], ended)[-1]
    assert final["state"] == "failed", final
    assert "credentials" in final["message"] and ".credentials" in final["hint"], final
    assert list((tmp_path / "images").iterdir()) == []


def test_bad_input_is_refused_before_slurm_is_asked(importing_server: JupyterServer) -> None:
    for body, status, words in [
        ({"uri": "docker://nvcr.io#nvidia/pytorch:24.05-py3,/etc:/x"}, 400, "docker://"),
        ({"uri": "docker://nvcr.io#nvidia/pytorch:24.05-py3", "name": "../elsewhere"}, 400, "not allowed"),
        ({"name": "x"}, 400, "must name the image"),
    ]:
        answer = importing_server.request("POST", IMPORTS, body)
        assert answer.status == status and words in answer.body["message"], answer.body
    assert importing_server.request("GET", f"{IMPORTS}/nope").status == 404
    assert not kernel_jobs()


@pytest.fixture
def shared_images(slurm_cluster: LocalCluster, tmp_path: Path) -> Iterator[tuple[JupyterServer, Path]]:
    """A server whose image directory is on the cluster's /netscratch (sticky, writable by all), where the other
    researcher can get at it; removed afterwards."""
    directory = slurm_cluster.netscratch / f"images-{uuid.uuid4().hex[:8]}"
    config_dir = tmp_path / "enroot"
    slurm_cluster.write_enroot_credentials(config_dir)
    site = f"c.PyxisProvisioner.saved_images_dir = {str(directory)!r}\nc.PyxisProvisioner.import_cpus = 2\n"
    try:
        with running_server(
            tmp_path / "home",
            site,
            {**os.environ, "ENROOT_CONFIG_PATH": str(config_dir), "ENROOT_CACHE_PATH": str(tmp_path / "enroot-cache")},
        ) as server:
            yield server, directory
    finally:
        subprocess.run(["rm", "-rf", str(directory)], check=True)


def test_another_user_can_neither_own_the_image_directory_nor_cancel_or_swap_an_import(
    shared_images: tuple[JupyterServer, Path], another_user: UnixUser, slurm_cluster: LocalCluster
) -> None:
    server, directory = shared_images
    made = another_user.run("mkdir", "-m", "755", str(directory))  # theirs, before the user's first import
    assert made.returncode == 0, made.stderr
    uri = slurm_cluster.bare_registry_image()
    refused = server.request("POST", IMPORTS, {"uri": uri, "name": "mine"})
    assert refused.status == 400 and f"{directory} belongs to another user" in refused.body["message"], refused.body
    assert not kernel_jobs()

    subprocess.run(["rm", "-rf", str(directory)], check=True)
    answer = server.request("POST", IMPORTS, {"uri": uri, "name": "mine"})
    assert answer.status == 202, answer.body
    running = until(server, answer.body["id"], lambda found: bool(found["job_id"]) or ended(found))[-1]
    cancelling = another_user.run("scancel", running["job_id"], env=slurm_cluster.env)  # Slurm itself refuses
    assert "Access/permission denied" in cancelling.stderr, cancelling
    final = until(server, answer.body["id"], ended)[-1]
    assert final["state"] == "imported", final
    swapping = another_user.run("cp", "/etc/hostname", final["path"])
    planting = another_user.run("ln", "-s", "/etc/hostname", str(directory / "theirs.sqsh"))
    assert swapping.returncode != 0 and planting.returncode != 0
    assert sorted(entry.name for entry in directory.iterdir()) == ["mine.sqsh", "mine.sqsh.json"]


def test_a_server_that_stops_mid_import_cancels_it_and_leaves_nothing(
    importing_server: JupyterServer, slurm_cluster: LocalCluster, tmp_path: Path
) -> None:
    enroot_running(importing_server, slurm_cluster, "left")
    importing_server.stop()
    assert not wait_until_no_kernel_jobs()
    assert list((tmp_path / "images").iterdir()) == []
