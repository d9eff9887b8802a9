"""A running kernel's container from outside: a terminal on its node, and its filesystem saved as an image of
the user's own (real Pyxis: NAME:exec attaches to the kernel's running container; real enroot exports it)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from jupyter_asgard.containers.image_saves import ImageSaves
from jupyter_asgard.errors import ImageRefused
from jupyter_asgard.slurm.slurm_client import SlurmClient
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, kernel_jobs
from tests.server import JupyterServer, execute_via_websocket, running_server, terminal_ends, terminal_session
from tests.unix_users import UnixUser
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")


def row(server: JupyterServer, kernel_id: str) -> dict[str, Any]:
    return server.request("GET", f"/asgard/api/kernels/{kernel_id}").body


def test_a_terminal_runs_in_the_kernels_container_on_its_node_and_ends_with_the_kernel(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster
) -> None:
    server = jupyter_server
    kernel_id = server.start_kernel("asgard-test")
    try:
        scratch = f"{slurm_cluster.netscratch}/root"
        marker = f"written-by-kernel-{uuid.uuid4().hex[:8]}"
        workdir = execute_via_websocket(
            server, kernel_id, f"import os; open({scratch!r} + '/{marker}', 'w').write('x'); print(os.getcwd())"
        ).strip()
        opened = server.request("POST", f"/asgard/api/kernels/{kernel_id}/terminal")
        assert opened.status == 201, opened.body
        node = row(server, kernel_id)["node"]
        assert opened.body["node"] == node and opened.body["title"].startswith(f"{node}: ")
        name = opened.body["name"]
        assert name in [terminal["name"] for terminal in server.request("GET", "/api/terminals").body]
        typed = f"echo host=$(hostname) dir=$(pwd) image=$TEST_IMAGE; ls {scratch}; echo DONE-$((6*7))\r"
        shown = terminal_session(server, name, typed, "DONE-42")
        assert f"host={node} dir={workdir} image=python-ipykernel" in shown  # the node, the kernel's workdir and image
        assert marker in shown  # the kernel's mounts and files
    finally:
        server.request("DELETE", f"/api/kernels/{kernel_id}")
    assert terminal_ends(server, name), "the terminal outlived its kernel's allocation"
    wait_for(
        lambda: name not in [terminal["name"] for terminal in server.request("GET", "/api/terminals").body],
        30,
        "the terminal gone from jupyter_server's list",
    )


def test_a_terminal_for_a_kernel_that_waits_in_the_queue_or_is_unknown_is_refused(
    jupyter_server: JupyterServer, gpus_taken: list[str]
) -> None:
    kernel_id = jupyter_server.request("POST", "/api/kernels", {"name": "asgard-test"}).body["id"]
    try:
        wait_for(lambda: row(jupyter_server, kernel_id).get("state") == "PENDING", 30, "the kernel queued")
        refused = jupyter_server.request("POST", f"/asgard/api/kernels/{kernel_id}/terminal")
        assert refused.status == 409 and "not running yet" in refused.message
        saved = jupyter_server.request("POST", f"/asgard/api/kernels/{kernel_id}/save-image", {"name": "x"})
        assert saved.status == 409 and "not running yet" in saved.message
        assert jupyter_server.request("POST", "/asgard/api/kernels/no-such-kernel/terminal").status == 404
    finally:
        jupyter_server.request("DELETE", f"/api/kernels/{kernel_id}")


# --- save as image ------------------------------------------------------------------------------------------

GREETING = "hello from a saved environment"


def local_wheel(directory: Path) -> Path:
    """A small pure-Python wheel, as a user brings a package along where the nodes reach no index."""
    files = {
        "asgard_hello/__init__.py": f"GREETING = {GREETING!r}\n",
        "asgard_hello-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: asgard-hello\nVersion: 1.0\n",
        "asgard_hello-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        "Tag: py3-none-any\n",
    }
    record = [
        f"{path},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
        f"{len(text.encode())}"
        for path, text in files.items()
    ]
    files["asgard_hello-1.0.dist-info/RECORD"] = "\n".join([*record, "asgard_hello-1.0.dist-info/RECORD,,"]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    wheel = directory / "asgard_hello-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in files.items():
            archive.writestr(path, text)
    return wheel


def save_image_cli(server: JupyterServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jupyter", "asgard", "save-image", *args],
        env={**os.environ, "JUPYTER_RUNTIME_DIR": server.env["JUPYTER_RUNTIME_DIR"]},
        capture_output=True,
        text=True,
        timeout=300,
    )


def listings_until(
    server: JupyterServer, saving: Future[Any], directory: Path
) -> list[tuple[dict[str, Any] | None, bool]]:
    """GET /asgard/api/images until the save has ended: each time the image's entry (None while not listed)
    and whether Pyxis was writing in a private directory beside it then."""
    listings = []
    while not saving.done():
        staging = (
            any(entry.name.startswith(".saving-") for entry in directory.iterdir()) if directory.exists() else False
        )
        images = server.request("GET", "/asgard/api/images").body["images"]
        entry = next((image for image in images if image["path"].startswith(f"{directory}/hello-env-")), None)
        listings.append((entry, staging))
        time.sleep(0.2)
    return listings


@pytest.fixture
def saved_images(slurm_cluster: LocalCluster) -> Iterator[Path]:
    directory = slurm_cluster.netscratch / "root" / "images"
    before = set(directory.glob("*")) if directory.exists() else set()
    yield directory
    for path in set(directory.glob("*")) - before:
        path.unlink()


def test_an_environment_built_in_a_kernel_is_saved_as_an_image_a_new_kernel_starts_from(
    jupyter_server: JupyterServer, kernelspecs: KernelSpecs, slurm_cluster: LocalCluster, saved_images: Path
) -> None:
    server = jupyter_server
    tag = uuid.uuid4().hex[:8]
    source = kernelspecs.make(
        "asgard-save-source", image=str(slurm_cluster.ipykernel7_image()), container_name=f"save-source-{tag}"
    )
    wheels = local_wheel(slurm_cluster.netscratch / "root" / f"wheels-{tag}").parent
    kernel_id = server.start_kernel(source)
    kernels = [kernel_id]
    try:
        installed = execute_via_websocket(
            server,
            kernel_id,
            "import subprocess, sys\n"
            "done = subprocess.run([sys.executable, '-m', 'pip', 'install', '--break-system-packages', "
            f"'--no-index', '--find-links', {str(wheels)!r}, 'asgard-hello'], capture_output=True, text=True)\n"
            "print(done.returncode, done.stdout[-300:], done.stderr[-600:])\n"
            "import asgard_hello; print(asgard_hello.GREETING)",
            timeout=120,
        )
        assert GREETING in installed, installed
        path = saved_images / f"hello-env-{tag}.sqsh"
        with ThreadPoolExecutor(1) as pool:  # a prefix of the id will do
            saving = pool.submit(save_image_cli, server, kernel_id[:8], f"hello-env-{tag}")
            listings = listings_until(server, saving, saved_images)
            saved = saving.result()
        assert saved.returncode == 0, saved.stderr
        shown = [entry for entry, _ in listings if entry]
        assert {entry["size"] for entry in shown} == {path.stat().st_size}, shown  # never listed half-written
        assert all(entry.get("manifest", {}).get("name") == f"hello-env-{tag}" for entry in shown), shown
        assert any(staging for _, staging in listings), "the listing was never asked while Pyxis wrote the image"
        assert f"saved {path}" in saved.stdout
        assert execute_via_websocket(server, kernel_id, "print(6 * 7)").strip() == "42"  # undisturbed

        manifest = json.loads(Path(f"{path}.json").read_text())
        assert "asgard-hello==1.0" in manifest["packages"]
        assert any(package.startswith("ipykernel==7.4") for package in manifest["packages"])
        assert manifest["source_image"] == str(slurm_cluster.ipykernel7_image())
        assert manifest["kernel"]["id"] == kernel_id and manifest["container_name"] == f"save-source-{tag}"
        status = server.request("GET", f"/asgard/api/kernels/{kernel_id}/save-image").body
        assert status["state"] == "saved" and status["path"] == str(path) and status["packages"] >= 2
        listed = [
            image for image in server.request("GET", "/asgard/api/images").body["images"] if image["path"] == str(path)
        ]
        assert listed and listed[0]["manifest"]["packages"] == manifest["packages"]

        again = server.request("POST", f"/asgard/api/kernels/{kernel_id}/save-image", {"name": f"hello-env-{tag}"})
        assert again.status == 409 and "exists already" in again.message

        copy = kernelspecs.make("asgard-from-saved", image=str(path), container_name=f"from-saved-{tag}")
        kernels.append(server.start_kernel(copy))
        assert GREETING in execute_via_websocket(
            server, kernels[-1], "import asgard_hello; print(asgard_hello.GREETING)"
        )
    finally:
        for kernel in kernels:
            server.request("DELETE", f"/api/kernels/{kernel}")


def test_a_bad_image_name_is_refused_before_slurm_is_asked(jupyter_server: JupyterServer) -> None:
    kernel_id = jupyter_server.start_kernel("asgard-test")
    try:
        before = jupyter_server.request("GET", "/asgard/api/monitor").body["calls"].get("srun", 0)
        for name in ("../escape", "", "a b", "x" * 65):
            answer = jupyter_server.request("POST", f"/asgard/api/kernels/{kernel_id}/save-image", {"name": name})
            assert answer.status == 400 and "is not allowed" in answer.message, (name, answer.body)
        assert jupyter_server.request("POST", f"/asgard/api/kernels/{kernel_id}/save-image", {}).status == 400
        assert jupyter_server.request("GET", "/asgard/api/monitor").body["calls"].get("srun", 0) == before
        assert jupyter_server.request("GET", f"/asgard/api/kernels/{kernel_id}/save-image").status == 404
    finally:
        jupyter_server.request("DELETE", f"/api/kernels/{kernel_id}")


@pytest.fixture
def unwritable_site(kernelspecs: KernelSpecs, tmp_path: Path) -> Iterator[JupyterServer]:
    """A server whose image directory cannot be made: a file stands where its parent should be."""
    (tmp_path / "not-a-directory").write_text("")
    with running_server(
        tmp_path / "server",
        "c.SlurmMonitor.poll_interval = 0.5\n"
        f"c.PyxisProvisioner.saved_images_dir = '{tmp_path}/not-a-directory/images'\n",
    ) as server:
        yield server


def test_a_save_to_a_directory_that_cannot_be_written_says_why_and_the_kernel_runs_on(
    unwritable_site: JupyterServer, tmp_path: Path
) -> None:
    server = unwritable_site
    kernel_id = server.start_kernel("asgard-test")
    try:
        answer = server.request("POST", f"/asgard/api/kernels/{kernel_id}/save-image", {"name": "env"})
        assert answer.status == 400, answer.body
        assert f"cannot create the image directory {tmp_path}/not-a-directory/images: Not a directory" in answer.message
        assert "c.PyxisProvisioner.saved_images_dir" in answer.message
        cli = save_image_cli(server, kernel_id, "env")
        assert cli.returncode == 1 and "cannot create the image directory" in cli.stderr
        assert execute_via_websocket(server, kernel_id, "print(6 * 7)").strip() == "42"
        assert not [line for line in kernel_jobs() if "jupyter-save-image" in line]
    finally:
        server.request("DELETE", f"/api/kernels/{kernel_id}")


async def test_a_kernel_without_a_named_container_cannot_be_saved_and_slurm_is_not_asked() -> None:
    """A server that starts kernels without Pyxis (c.PyxisProvisioner.containers = False) has no container."""
    client = SlurmClient()
    kernel = SimpleNamespace(kernel_id="k1", node="gpu01", step=object(), container="", job_id="7")
    with pytest.raises(ImageRefused) as refused:
        await ImageSaves(client).start(kernel, "env", "/tmp", 60)
    assert refused.value.status == 409
    assert "without a named container" in refused.value.message and "containers = False" in refused.value.message
    assert not client.calls


async def test_one_save_at_a_time_per_kernel_and_per_image_and_a_failed_one_leaves_no_file(tmp_path: Path) -> None:
    """Bookkeeping only: job 999999 does not exist, so Slurm refuses the save step at once."""
    saves = ImageSaves(SlurmClient())
    kernel = SimpleNamespace(kernel_id="k1", node="gpu01", step=object(), container="env", job_id="999999")
    other = SimpleNamespace(kernel_id="k2", node="gpu01", step=object(), container="env2", job_id="999998")
    first = await saves.start(kernel, "env", str(tmp_path), 60)
    for provisioner, name, says in (
        (kernel, "env2", "this kernel's container is being saved"),
        (other, "env", "another"),
    ):
        with pytest.raises(ImageRefused) as refused:
            await saves.start(provisioner, name, str(tmp_path), 60)
        assert refused.value.status == 409 and says in refused.value.message
    await asyncio.wait_for(asyncio.gather(*saves._tasks), 60)
    assert first.state == "failed" and first.message.startswith("saving the container failed: ")
    assert not list(tmp_path.iterdir())


async def test_a_save_whose_srun_cannot_start_ends_as_failed_and_the_kernel_may_save_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An srun that cannot be spawned (here: its interpreter is missing) raises OSError, not SlurmError."""
    broken = tmp_path / "bin"
    broken.mkdir()
    (broken / "srun").write_text("#!/no/such/interpreter\n")
    (broken / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{broken}:{os.environ['PATH']}")
    images = tmp_path / "images"
    saves = ImageSaves(SlurmClient())
    kernel = SimpleNamespace(kernel_id="k1", node="gpu01", step=object(), container="env", job_id="999999")
    first = await saves.start(kernel, "env", str(images), 60)
    await asyncio.wait_for(asyncio.gather(*saves._tasks), 60)
    assert first.state == "failed" and first.finished, first
    assert first.message.startswith("saving the container failed: ") and "srun" in first.message
    assert not list(images.iterdir())  # neither the image nor the private directory it was written in
    second = await saves.start(kernel, "env", str(images), 60)
    await asyncio.wait_for(asyncio.gather(*saves._tasks), 60)
    assert second.state == "failed"


# --- save: a directory of the user's own, and a save that takes too long ---------------------------------


@pytest.fixture
def impatient_site(
    kernelspecs: KernelSpecs, slurm_cluster: LocalCluster, tmp_path: Path
) -> Iterator[tuple[JupyterServer, Path]]:
    """A server that saves into a directory of netscratch the test hands to another user, and gives a save 3 s."""
    directory = slurm_cluster.netscratch / f"shared-{uuid.uuid4().hex[:8]}"
    with running_server(
        tmp_path / "server",
        "c.SlurmMonitor.poll_interval = 0.5\n"
        f"c.PyxisProvisioner.saved_images_dir = '{directory}'\n"
        "c.PyxisProvisioner.save_timeout = 3\n",
    ) as server:
        try:
            yield server, directory
        finally:
            subprocess.run(["rm", "-rf", str(directory)], check=True)


def test_a_save_into_a_directory_another_user_controls_is_refused_and_a_slow_one_is_cancelled_before_cleanup(
    impatient_site: tuple[JupyterServer, Path], another_user: UnixUser, slurm_cluster: LocalCluster
) -> None:
    server, directory = impatient_site
    victim = slurm_cluster.netscratch / "root" / f"victim-{directory.name}"
    victim.write_text("precious\n")
    kernel_id = server.start_kernel("asgard-test")
    try:
        made = another_user.run("mkdir", "-m", "700", str(directory))
        assert made.returncode == 0, made.stderr
        answer = server.request("POST", f"/asgard/api/kernels/{kernel_id}/save-image", {"name": "env"})
        assert answer.status == 400, answer.body
        assert f"{directory} belongs to another user (uid {another_user.uid})" in answer.message

        os.chown(directory, 0, 0)  # now root's, but still anyone's to write: they plant a link at the name
        directory.chmod(0o777)
        planted = another_user.run("ln", "-s", str(victim), str(directory / "env.sqsh"))
        assert planted.returncode == 0, planted.stderr
        answer = server.request("POST", f"/asgard/api/kernels/{kernel_id}/save-image", {"name": "env"})
        assert answer.status == 400 and f"{directory} can be written by other users" in answer.message, answer.body
        assert f"chmod go-w {directory}" in answer.message
        assert victim.read_text() == "precious\n" and (directory / "env.sqsh").is_symlink()
        assert not [line for line in kernel_jobs() if "jupyter-save-image" in line]

        (directory / "env.sqsh").unlink()
        directory.chmod(0o700)
        answer = server.request("POST", f"/asgard/api/kernels/{kernel_id}/save-image", {"name": "env"})
        assert answer.status == 202, answer.body
        status = wait_for(lambda: save_ended(server, kernel_id), timeout=120, what="the slow save ended")
        job_id = row(server, kernel_id)["job_id"]
        steps = slurm_steps(job_id)  # at once: the save step was ended before the save was given up
        assert status["state"] == "failed" and "c.PyxisProvisioner.save_timeout" in status["message"], status
        assert "jupyter-save-image" not in steps, steps
        assert list(directory.iterdir()) == []  # neither the image nor the private directory Pyxis wrote in
        assert execute_via_websocket(server, kernel_id, "print(6 * 7)").strip() == "42"
    finally:
        server.request("DELETE", f"/api/kernels/{kernel_id}")
        victim.unlink()


def save_ended(server: JupyterServer, kernel_id: str) -> dict[str, Any] | None:
    status = server.request("GET", f"/asgard/api/kernels/{kernel_id}/save-image").body
    return status if status["state"] != "saving" else None


def slurm_steps(job_id: str) -> str:
    return subprocess.run(
        ["squeue", "--steps", "-h", "-j", job_id, "-o", "%i %j"], capture_output=True, text=True, timeout=60
    ).stdout
