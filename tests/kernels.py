"""Helpers for tests that run Asgard kernels on the test cluster with real Jupyter clients."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from traitlets.config import Config

from tests.cluster import LocalCluster

KERNEL_ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]


class KernelSpecs:
    """Writes Asgard kernelspecs for the test cluster into a directory on JUPYTER_PATH."""

    def __init__(self, kernels_dir: Path, cluster: LocalCluster) -> None:
        self.kernels_dir = kernels_dir
        self.cluster = cluster

    def base_config(self) -> dict[str, Any]:
        scratch, datasets = self.cluster.netscratch, self.cluster.datasets
        return {
            "image": str(self.cluster.pytorch_image()),
            "mounts": [f"{scratch}/$USER:{scratch}/$USER", f"{datasets}:{datasets}:ro"],
            "gpus": 1,
            "container_writable": True,
        }

    def make(self, name: str, interrupt_mode: str = "message", env: dict[str, str] | None = None,
             argv: list[str] | None = None, **config: Any) -> str:
        """A kernelspec named name: the base config with overrides (a value of None removes a key)."""
        merged = {**self.base_config(), **config}
        spec = {
            "argv": argv or KERNEL_ARGV,
            "display_name": f"Asgard test ({name})",
            "language": "python",
            "interrupt_mode": interrupt_mode,
            "env": env or {},
            "metadata": {"kernel_provisioner": {
                "provisioner_name": "pyxis-provisioner",
                "config": {key: value for key, value in merged.items() if value is not None},
            }},
        }
        directory = self.kernels_dir / name
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "kernel.json").write_text(json.dumps(spec, indent=1))
        return name


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


def records(cluster: LocalCluster, job_id: str) -> list[dict[str, Any]]:
    """The Pyxis stand-in's records of the job's container steps, in step order."""
    found = [json.loads(path.read_text()) for path in cluster.records_dir.glob(f"{job_id}.*.json")]
    return sorted(found, key=lambda record: int(record["step_id"]))


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
