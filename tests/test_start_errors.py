"""Every way a user can get an Asgard kernel's settings wrong: a clear message, fast, and no job left behind."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from jupyter_asgard.errors import KernelStartError
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, start

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")


async def start_fails(kernel_name: str, cwd: Path) -> str:
    """Start the kernel, expect KernelStartError within seconds, return its message."""
    started = time.monotonic()
    with pytest.raises(KernelStartError) as failure:
        await start(kernel_name, cwd)
    assert time.monotonic() - started < 30
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
    message = await start_fails(kernelspecs.make("err-node-image", image=str(image), check_paths=False), tmp_path)
    assert f"[ERROR] No such file or directory: {image}" in message
    assert "pyxis" in message


async def test_malformed_mount_is_refused(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    message = await start_fails(kernelspecs.make("err-mount", mounts=["data:/data"]), tmp_path)
    assert "invalid mount 'data:/data'" in message
    assert "source must be an absolute path" in message


async def test_missing_mount_source_on_the_node_reports_pyxis_words(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    source = slurm_cluster.root / "no-such-dir"
    name = kernelspecs.make("err-node-mount", mounts=[f"{source}:/data"], check_paths=False)
    message = await start_fails(name, tmp_path)
    assert f"No such file or directory: {source}" in message


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
    name = kernelspecs.make("err-no-ipykernel", image=str(slurm_cluster.images_dir / "ubuntu_22.04.sqsh"))
    message = await start_fails(name, tmp_path)
    assert "No module named ipykernel_launcher" in message
    assert "the image has no ipykernel" in message


async def test_missing_workdir_in_the_container(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    message = await start_fails(kernelspecs.make("err-workdir", workdir="/no/such/workdir"), tmp_path)
    assert "couldn't chdir to /no/such/workdir" in message


async def test_unknown_kernelspec_setting(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    message = await start_fails(kernelspecs.make("err-setting", gpu=1), tmp_path)
    assert "unknown setting 'gpu'" in message


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
