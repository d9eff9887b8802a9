"""What real Pyxis and enroot containers showed, each on the test cluster's real Pyxis: named containers
shared by notebooks, first starts at once, notebook paths as mount specs, and the environment enroot reads."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

import pytest

from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, container_storage, container_view, execute, pending_kernel, shutdown, start
from tests.server import JupyterServer, execute_via_websocket

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

OWN_FILE = "import os; print(os.getcwd(), open('mine.txt').read())"


def notebook_dirs(tmp_path: Path, *names: str) -> list[Path]:
    """One directory per notebook, each with a file of its own."""
    dirs = []
    for name in names:
        directory = tmp_path / name
        directory.mkdir()
        (directory / "mine.txt").write_text(name)
        dirs.append(directory)
    return dirs


async def test_two_notebooks_of_one_kernelspec_on_one_node_each_see_their_own_directory(
    kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    """Both kernels use the kernelspec's named container; the second must not attach to the first's running
    container (Pyxis would ignore its mounts and fail to chdir into its notebook directory)."""
    name = kernelspecs.make("asgard-pair", salloc_args=["--nodelist=gpu01"])
    dirs = notebook_dirs(tmp_path, "first", "second")
    kms = []
    try:
        for directory in dirs:
            kms.append(await start(name, directory))
        seen = [(await execute(km, OWN_FILE))["stdout"].split() for km in kms]
        assert seen == [[str(directory), directory.name] for directory in dirs]
    finally:
        await asyncio.gather(*(shutdown(km) for km in kms))


async def test_three_first_starts_of_one_new_named_container_on_one_node_all_start(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    """enroot unpacks a new named container once; starts at the same moment must not race it."""
    container = f"first-{uuid.uuid4().hex[:8]}"
    name = kernelspecs.make(
        "asgard-first-starts", container_name=container, gpus=None, salloc_args=["--nodelist=gpu02"]
    )
    dirs = notebook_dirs(tmp_path, "a", "b", "c")
    kms = await asyncio.gather(*(start(name, directory) for directory in dirs), return_exceptions=True)
    try:
        assert [km for km in kms if isinstance(km, BaseException)] == []
        seen = [(await execute(km, OWN_FILE))["stdout"].split() for km in kms]
        assert seen == [[str(directory), directory.name] for directory in dirs]
        assert len(container_storage(slurm_cluster, "gpu02", container)) == 1
    finally:
        await asyncio.gather(*(shutdown(km) for km in kms if not isinstance(km, BaseException)))


async def test_a_notebook_directory_with_spaces_is_mounted_and_used(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    """Pyxis escapes spaces (and tabs) for enroot's fstab: such a directory must just work."""
    (directory,) = notebook_dirs(tmp_path, "my project 2")
    km = await start("asgard-test", directory)
    try:
        view = await container_view(km)
        assert view["cwd"] == str(directory)
        assert str(directory) in view["mounts"]
        assert (await execute(km, "print(open('mine.txt').read())"))["stdout"].strip() == "my project 2"
    finally:
        await shutdown(km)


async def test_enroot_settings_of_the_server_do_not_reach_the_kernels_container(
    kernelspecs: KernelSpecs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pyxis hands the step's environment to enroot: a server started with ENROOT_ROOTFS_WRITABLE=yes would
    make every kernel's container writable, whatever the kernelspec or the site says."""
    monkeypatch.setenv("ENROOT_ROOTFS_WRITABLE", "yes")
    monkeypatch.setenv("ENROOT_MOUNT_HOME", "yes")
    km = await start(kernelspecs.make("asgard-site-default", container_writable=None), tmp_path)
    try:
        code = (
            "import errno, json, os\ntry:\n    open('/opt/probe', 'w').close(); writable = True\n"
            "except OSError as error:\n    writable = errno.errorcode[error.errno]\n"
            "print(json.dumps([writable, sorted(k for k in os.environ if k.startswith('ENROOT_'))]))"
        )
        assert json.loads((await execute(km, code))["stdout"]) == ["EROFS", []]
    finally:
        await shutdown(km)


async def test_the_kernelspecs_env_wins_over_the_images_env(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    """The image's ENV (its /etc/environment) sets TEST_IMAGE; Pyxis lets a value from srun win only
    for names in --container-env, which the kernelspec's env is put in."""
    km = await start(kernelspecs.make("asgard-env-wins", env={"TEST_IMAGE": "from-kernelspec"}), tmp_path)
    plain = await start("asgard-test", tmp_path)
    try:
        assert (await container_view(km))["image"] == "from-kernelspec"
        assert (await container_view(plain))["image"] == "python-ipykernel"
    finally:
        await asyncio.gather(shutdown(km), shutdown(plain))


async def test_a_start_stopped_while_enroot_unpacks_its_container_leaves_no_half_made_container(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    """Stopped then (a shutdown, Ctrl-C in nbclient), enroot has written part of the named container, and
    Pyxis would reuse it at every later start, which would then fail ("/bin/sh: No such file"): the start's
    release removes it, and the next start of that container works."""
    container = f"half-{uuid.uuid4().hex[:8]}"
    name = kernelspecs.make("asgard-half-made", container_name=container, gpus=None, salloc_args=["--nodelist=gpu02"])
    km, starting = pending_kernel(name, tmp_path)
    try:
        for _ in range(3000):  # until enroot is writing the container's files
            unpacking = km.provisioner is not None and km.provisioner.phase[0] == "creating container filesystem"
            if unpacking and container_storage(slurm_cluster, "gpu02", container):
                break
            await asyncio.sleep(0.01)
        assert km.provisioner.phase[0] == "creating container filesystem"
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting
    finally:
        await shutdown(km)
    assert container_storage(slurm_cluster, "gpu02", container) == []
    km = await start(name, tmp_path)
    try:
        assert (await execute(km, "print(6 * 7)"))["stdout"].strip() == "42"
    finally:
        await shutdown(km)


def test_a_kernel_shut_down_while_enroot_unpacks_its_container_leaves_no_half_made_container(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster, kernelspecs: KernelSpecs
) -> None:
    """The same through the server, as JupyterLab's shutdown of a kernel whose cold start takes a while."""
    container = f"half-{uuid.uuid4().hex[:8]}"
    name = kernelspecs.make("asgard-half-shut", container_name=container, gpus=None, salloc_args=["--nodelist=gpu02"])
    kernel_id = jupyter_server.request("POST", "/api/kernels", {"name": name}).body["id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until enroot is writing the container's files
        row = jupyter_server.request("GET", f"/asgard/api/kernels/{kernel_id}").body
        if row.get("phase") == "creating container filesystem" and container_storage(slurm_cluster, "gpu02", container):
            break
        time.sleep(0.02)
    assert row.get("phase") == "creating container filesystem", row
    assert jupyter_server.request("DELETE", f"/api/kernels/{kernel_id}").status == 204
    assert container_storage(slurm_cluster, "gpu02", container) == []
    again = jupyter_server.start_kernel(name)
    try:
        assert execute_via_websocket(jupyter_server, again, "print(6 * 7)").strip() == "42"
    finally:
        jupyter_server.request("DELETE", f"/api/kernels/{again}")
