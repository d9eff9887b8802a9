"""Pyxis's container setup as the kernel's phase while it starts, on real Pyxis and enroot."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import pytest

from jupyter_asgard.containers.container_phases import phase_of
from jupyter_asgard.errors import KernelStartError
from jupyter_asgard.server.kernel_jobs import kernel_job
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, container_storage, pending_kernel, shutdown


def test_pyxis_progress_lines_and_nothing_else_are_phases() -> None:
    assert (
        phase_of("slurmstepd-gpu01: pyxis: creating container filesystem: pyxis_x") == "creating container filesystem"
    )
    assert phase_of("slurmstepd-gpu02: pyxis: completed container setup in 3023 ms") == (
        "completed container setup in 3023 ms"
    )
    assert phase_of("slurmstepd-gpu01: pyxis: starting container: pyxis_x") == "starting container"
    assert phase_of("pyxis: creating container filesystem: pyxis_x") == ""  # not from slurmstepd's progress
    assert phase_of("slurmstepd-gpu01: error: pyxis: failed to create container filesystem") == ""
    assert phase_of("creating container filesystem") == ""  # a kernel's own output


@pytest.mark.usefixtures("no_kernel_jobs_left")
async def test_a_cold_start_shows_creating_the_container_filesystem_before_the_kernel_is_ready(
    kernelspecs: KernelSpecs, slurm_cluster: LocalCluster, tmp_path: Path
) -> None:
    container = f"asgard-phase-{uuid.uuid4().hex[:8]}"  # a new named container: enroot unpacks the image
    km, starting = pending_kernel(kernelspecs.make("asgard-phase", gpus=None, container_name=container), tmp_path)
    seen: list[str] = []
    try:
        while not starting.done():
            if km.provisioner is not None:
                phase = kernel_job(km.provisioner, km.provisioner.monitor)["phase"]
                if phase and phase not in seen:
                    seen.append(phase)
            await asyncio.sleep(0.05)
        await starting
        assert "creating container filesystem" in seen, seen
        row = kernel_job(km.provisioner, km.provisioner.monitor)
        assert (row["phase"], row["phase_seconds"]) == ("", None)  # running: no phase any more
    finally:
        starting.cancel()
        node = km.provisioner.node if km.provisioner else ""
        await shutdown(km)
        for path in container_storage(slurm_cluster, node, container) if node else []:
            shutil.rmtree(path, ignore_errors=True)


@pytest.mark.usefixtures("no_kernel_jobs_left")
async def test_a_failed_container_start_names_the_phase_it_failed_in(
    kernelspecs: KernelSpecs, slurm_cluster: LocalCluster, tmp_path: Path
) -> None:
    broken = slurm_cluster.images_dir / f"broken-{uuid.uuid4().hex[:8]}.sqsh"
    broken.write_bytes(b"\0" * 4096)  # no squashfs: enroot cannot unpack it
    name = kernelspecs.make("asgard-broken", gpus=None, image=str(broken))
    km, starting = pending_kernel(name, tmp_path)
    try:
        with pytest.raises(KernelStartError, match=r"the container's last step: creating container filesystem"):
            await starting
    finally:
        broken.unlink()
        await shutdown(km)
