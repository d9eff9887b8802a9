"""Every way a user can get an Asgard kernel's settings wrong: a clear message, fast, and no job left behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from traitlets.config import Config

from jupyter_asgard.errors import KernelStartError
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, kernel_jobs, shutdown, slurm, start, wait_until_no_kernel_jobs

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

NO_PATH_CHECKS = Config({"PyxisProvisioner": {"check_paths": False}})  # what Pyxis says on the node, then


async def start_fails(kernel_name: str, cwd: Path, site: Config | None = None) -> str:
    """Start the kernel, expect KernelStartError (not a wait for the start timeout: 120 s guards a hang), return
    its message."""
    with pytest.raises(KernelStartError) as failure:
        await asyncio.wait_for(start(kernel_name, cwd, site=site), 120)
    return str(failure.value)


async def test_missing_image_is_refused_before_submitting(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    image = slurm_cluster.images_dir / "nvcr.io_nvidia_pytorch_99.99-py3.sqsh"
    message = await start_fails(kernelspecs.make("err-image", image=str(image)), tmp_path)
    assert f"image {image} does not exist" in message
    assert "How to fix:" in message


async def test_missing_image_on_the_node_reports_pyxis_words(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    image = slurm_cluster.images_dir / "gone.sqsh"
    message = await start_fails(kernelspecs.make("err-node-image", image=str(image)), tmp_path, NO_PATH_CHECKS)
    assert f"pyxis: failed to create container filesystem for image: {image}" in message
    assert f"[ERROR] No such file or directory: {image}" in message


async def test_an_image_that_cannot_be_pulled_reports_why(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    """The test nodes resolve no host name: looking the image up on the node fails, and the start says why."""
    image = "docker://registry.invalid#team/image:1.0"
    message = await start_fails(kernelspecs.make("err-pull", image=image), tmp_path)
    assert f"the kernel's image {image} cannot be used: the compute node cannot find the registry registry.invalid" in (
        message
    )
    assert "check the registry's name" in message
    assert not wait_until_no_kernel_jobs()  # its allocation released (Slurm may say COMPLETING for a moment)


async def test_an_image_pyxis_cannot_pull_reports_pyxis_and_enroots_words(
    kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    """Where the site leaves pulls to Pyxis (c.PyxisProvisioner.import_registry_images = False): enroot's pull
    fails, and Pyxis says why."""
    image = "docker://registry.invalid#team/image:1.0"
    pyxis_pulls = Config({"PyxisProvisioner": {"import_registry_images": False}})
    message = await start_fails(kernelspecs.make("err-pull", image=image), tmp_path, pyxis_pulls)
    assert f"pyxis: failed to import docker image: {image}" in message
    assert "Could not resolve host: registry.invalid" in message
    assert "check the image URI" in message


async def test_an_image_scheme_pyxis_does_not_take_is_refused(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    message = await start_fails(kernelspecs.make("err-podman", image="podman://ubuntu:22.04"), tmp_path)
    assert "Pyxis does not take podman:// images (it would pull docker://podman://ubuntu:22.04)" in message
    assert kernel_jobs() == []


@pytest.mark.parametrize("name", ["p,x", "p:x", 'p"x', "p$x", "p`x"])
async def test_a_notebook_directory_pyxis_cannot_mount_is_refused_before_submitting(
    kernelspecs: KernelSpecs, tmp_path: Path, name: str
) -> None:
    """In --container-mounts a ',' or ':' would split the path into other mounts (another user's folder over
    the team's), and Pyxis writes each path into a bash script for enroot where '"', '$' and '`' act."""
    notebook_dir = tmp_path / name
    notebook_dir.mkdir()
    message = await start_fails("asgard-test", notebook_dir)
    assert f"the notebook's directory {str(notebook_dir)!r} cannot be mounted into the container" in message
    assert f"it contains {name[1]!r}" in message
    assert kernel_jobs() == []


async def test_malformed_mount_is_refused(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    message = await start_fails(kernelspecs.make("err-mount", mounts=["data:/data"]), tmp_path)
    assert "invalid mount 'data:/data'" in message
    assert "source must be an absolute path" in message


async def test_missing_mount_source_on_the_node_reports_pyxis_words(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    source = slurm_cluster.root / "no-such-dir"
    name = kernelspecs.make("err-node-mount", mounts=[f"{source}:/data"])
    message = await start_fails(name, tmp_path, NO_PATH_CHECKS)
    assert f"pyxis: --container-mounts: source path does not exist: {source}" in message
    assert "every source must exist on the compute node" in message


async def test_unknown_partition_reports_slurms_words(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    message = await start_fails(kernelspecs.make("err-partition", partition="nope"), tmp_path)
    assert "invalid partition specified: nope" in message.lower()
    assert "sinfo" in message


async def test_more_gpus_than_the_site_allows(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    message = await start_fails(kernelspecs.make("err-gpus", gpus=16), tmp_path)
    assert "16 GPUs requested but this site allows at most 8" in message


async def test_more_gpus_than_any_node_has(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    message = await start_fails(kernelspecs.make("err-gpus-node", gpus=3), tmp_path)
    assert "Requested node configuration is not available" in message
    assert "ask for less" in message


async def test_image_without_ipykernel(slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    name = kernelspecs.make("err-no-ipykernel", image=str(slurm_cluster.bare_image()))
    message = await start_fails(name, tmp_path)
    assert "No module named ipykernel_launcher" in message
    assert "the image has no ipykernel" in message


async def test_missing_workdir_in_the_container(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    message = await start_fails(kernelspecs.make("err-workdir", workdir="/no/such/workdir"), tmp_path)
    assert "couldn't chdir to /no/such/workdir" in message


async def test_unknown_kernelspec_setting(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    message = await start_fails(kernelspecs.make("err-setting", gpu=1), tmp_path)
    assert "unknown setting 'gpu'" in message


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("max_gpus", 16),
        ("allowed_partitions", []),
        ("check_paths", False),
        ("bootstrap_python", "sh"),
        ("start_timeout", 1.0),
    ],
)
async def test_a_site_setting_in_a_kernelspec_is_refused(
    kernelspecs: KernelSpecs, tmp_path: Path, setting: str, value: object
) -> None:
    """The site's policy (c.PyxisProvisioner in the server's configuration) is not the kernelspec's to change."""
    message = await start_fails(kernelspecs.make("err-site-setting", **{setting: value}), tmp_path)
    assert (
        f"the kernelspec 'err-site-setting' sets {setting!r}, a site setting: only the site's configuration "
        f"may set it (c.PyxisProvisioner.{setting})"
    ) in message
    assert kernel_jobs() == []


async def test_a_kernelspec_cannot_lift_the_sites_limits_it_names(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    """Refused for naming site settings, and the site's own limits still apply, all named at once."""
    site = Config({"PyxisProvisioner": {"max_gpus": 1, "allowed_partitions": ["debug"]}})
    name = kernelspecs.make("err-greedy", gpus=2, partition="gpu", max_gpus=8, allowed_partitions=[])
    message = await start_fails(name, tmp_path, site)
    for words in (
        "sets 'allowed_partitions', a site setting",
        "sets 'max_gpus', a site setting",
        "2 GPUs requested but this site allows at most 1",
        "partition 'gpu' is not offered for kernels",
    ):
        assert words in message
    assert kernel_jobs() == []


async def test_a_kernelspec_without_a_partition_is_refused_where_the_site_limits_partitions(
    kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    """Slurm's default partition (gpu on the test cluster) is not among those the site allows."""
    site = Config({"PyxisProvisioner": {"allowed_partitions": ["debug"]}})
    message = await start_fails("asgard-test", tmp_path, site)
    assert (
        "partition: none is chosen, so Slurm would use its default one, which may not be offered for kernels; "
        "choose one of debug"
    ) in message
    assert kernel_jobs() == []


async def test_a_kernelspec_without_a_partition_gets_the_sites_default(
    kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    """Also where the kernelspec names an empty one, which would otherwise leave the choice to Slurm."""
    site = Config({"PyxisProvisioner": {"allowed_partitions": ["debug"], "partition": "debug"}})
    km = await start(kernelspecs.make("asgard-no-partition", partition=""), tmp_path, site=site)
    try:
        assert km.provisioner.launch.partition == "debug"
        assert slurm("squeue", "-h", "-j", km.provisioner.job_id, "-o", "%P").strip() == "debug"
    finally:
        await shutdown(km)


async def test_slurm_down(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead = tmp_path / "slurm.conf"
    config = slurm_cluster.slurm_conf.read_text().replace("SlurmctldPort=", "SlurmctldPort=1#")
    dead.write_text(config)
    monkeypatch.setenv("SLURM_CONF", str(dead))
    message = await start_fails("asgard-test", tmp_path)
    assert "Unable to contact slurm controller" in message
    assert "not reachable from this host" in message


async def test_srun_not_on_path(kernelspecs: KernelSpecs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    message = await start_fails("asgard-test", tmp_path)
    assert "`srun` was not found on PATH" in message


@pytest.mark.parametrize("name", ["SLURM_STEP_GRES", "SLURM_CONF", "PYXIS_CONTAINER_MOUNTS", "ENROOT_REMAP_ROOT"])
async def test_a_kernelspec_env_that_would_steer_slurm_or_pyxis_is_refused(
    kernelspecs: KernelSpecs, tmp_path: Path, name: str
) -> None:
    message = await start_fails(kernelspecs.make("err-steering", env={name: "gpu:8"}), tmp_path)
    assert f"the kernelspec's env sets {name}" in message
    assert kernel_jobs() == []
