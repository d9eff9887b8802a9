"""Helpers for tests that run Asgard kernels on the test cluster with real Jupyter clients."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from traitlets.config import Config

from tests.cluster import LocalCluster

KERNEL_ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
TEST_CONTAINER = "asgard-tests"


class KernelSpecs:
    """Writes Asgard kernelspecs for the test cluster into a directory on JUPYTER_PATH."""

    def __init__(self, kernels_dir: Path, cluster: LocalCluster) -> None:
        self.kernels_dir = kernels_dir
        self.cluster = cluster

    def base_config(self) -> dict[str, Any]:
        """One named container for all test kernelspecs: each new name costs a node an unpacked image (seconds,
        and 370 MB of disk) at its first start; a test about names or first starts names its own."""
        scratch, datasets = self.cluster.netscratch, self.cluster.datasets
        return {
            "image": str(self.cluster.pytorch_image()),
            "mounts": [f"{scratch}/$USER:{scratch}/$USER", f"{datasets}:{datasets}:ro"],
            "gpus": 1,
            "container_writable": True,
            "container_name": TEST_CONTAINER,
        }

    def make(
        self,
        name: str,
        interrupt_mode: str = "message",
        env: dict[str, str] | None = None,
        argv: list[str] | None = None,
        encryption: bool = True,
        **config: Any,
    ) -> str:
        """A kernelspec named name: the base config with overrides (a value of None removes a key); it declares
        CurveZMQ support, as Asgard's kernelspecs do, unless encryption is False."""
        merged = {**self.base_config(), **config}
        if "image" in config and "container_name" not in config:  # a named container keeps its first image
            image_hash = hashlib.sha256(str(config["image"]).encode()).hexdigest()[:8]
            merged["container_name"] = f"{TEST_CONTAINER}-{image_hash}"
        spec = {
            "argv": argv or KERNEL_ARGV,
            "display_name": f"Asgard test ({name})",
            "language": "python",
            "interrupt_mode": interrupt_mode,
            "env": env or {},
            "metadata": {
                **({"supported_encryption": ["curve"]} if encryption else {}),
                "kernel_provisioner": {
                    "provisioner_name": "pyxis-provisioner",
                    "config": {key: value for key, value in merged.items() if value is not None},
                },
            },
        }
        directory = self.kernels_dir / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "kernel.json").write_text(json.dumps(spec, indent=1))
        return name


def cluster_site(cluster: LocalCluster) -> str:
    """The site configuration (jupyter_server_config.py) of the session's servers on the test cluster."""
    return (
        "c.SlurmMonitor.poll_interval = 0.5\n"
        f"c.AsgardSite.image_dirs = [{str(cluster.images_dir)!r}, '/no/such/image/dir']\n"
        "c.AsgardSite.registry_images = ['docker://nvcr.io#nvidia/pytorch:24.05-py3']\n"
        "c.AsgardSite.resources_cache_seconds = 0.5\n"
        "c.AsgardSite.estimate_cache_seconds = 0\n"  # estimates are held to what Slurm does at that moment
        f"c.PyxisProvisioner.saved_images_dir = '{cluster.netscratch}/$USER/images'\n"
    )


def slurm(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60).stdout


def kernel_jobs() -> list[str]:
    """Jobs of Asgard kernels still in the queue (pending, running or completing)."""
    return [line for line in slurm("squeue", "-h", "-o", "%i %j %T").splitlines() if "jupyter-asgard-" in line]


def wait_until_no_kernel_jobs(timeout: float = 20) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and kernel_jobs():
        time.sleep(0.2)
    return kernel_jobs()


def running_steps(job_id: str) -> list[str]:
    """The job's steps Slurm runs now (``JOB.STEP``), the kernel's among them."""
    steps = slurm("squeue", "--steps", "-h", "-j", job_id, "-o", "%i").split()
    return [step for step in steps if step.split(".")[-1].isdigit()]


# What a kernel sees of its container: the image (its ENV names it), its Python, and each mount point with
# its options as the kernel's own /proc/self/mountinfo shows them.
CONTAINER_PROBE = """
import json, os, sys
mounts = {}
for line in open('/proc/self/mountinfo'):
    fields = line.split()
    mounts[fields[4].replace(chr(92) + '040', ' ')] = fields[5].split(',')
print(json.dumps({'image': os.environ.get('TEST_IMAGE'), 'python': sys.executable, 'cwd': os.getcwd(),
                  'mounts': mounts}))
"""


async def container_view(km: AsyncKernelManager) -> dict[str, Any]:
    """CONTAINER_PROBE's answer from the kernel."""
    return json.loads((await execute(km, CONTAINER_PROBE))["stdout"])


def container_storage(cluster: LocalCluster, node: str, name: str) -> list[Path]:
    """The filesystem of Pyxis's named container NAME on node (any user's)."""
    return list((cluster.node_storage(node) / "data").glob(f"user-*/pyxis_{name}"))


async def execute(km: AsyncKernelManager, code: str, timeout: float = 30) -> dict[str, Any]:
    """Run code on the kernel; return its reply content plus the collected stdout."""
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=timeout)
        stdout: list[str] = []

        def output(message: dict[str, Any]) -> None:
            if message["msg_type"] == "stream":
                stdout.append(message["content"]["text"])

        reply = await client.execute_interactive(code, timeout=timeout, output_hook=output)
        return {**reply["content"], "stdout": "".join(stdout)}
    finally:
        client.stop_channels()


async def start(kernel_name: str, cwd: Path, site: Config | None = None, **kwargs: Any) -> AsyncKernelManager:
    """site: the site's configuration (c.PyxisProvisioner...), which only the server's config files may set."""
    km = AsyncKernelManager(kernel_name=kernel_name, config=site or Config())
    await km.start_kernel(cwd=str(cwd), **kwargs)
    return km


async def shutdown(km: AsyncKernelManager) -> None:
    if km.has_kernel or km.provisioner is not None:
        await asyncio.wait_for(km.shutdown_kernel(now=True), 60)


async def wait_for_state(km: AsyncKernelManager, state: str, timeout: float = 20) -> None:
    """Until the kernel's Slurm job is in state (PENDING, RUNNING, ...)."""
    for _ in range(int(timeout / 0.1)):
        if km.provisioner is not None and km.provisioner.job_state == state:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"kernel job never reached {state}")


def pending_kernel(kernel_name: str, cwd: Path) -> tuple[AsyncKernelManager, asyncio.Future[None]]:
    """Start a kernel in the background; return its manager-to-be and the start task."""
    km = AsyncKernelManager(kernel_name=kernel_name)
    return km, asyncio.ensure_future(km.start_kernel(cwd=str(cwd)))
