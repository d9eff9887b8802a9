"""Cold start, warm start and restart of an Asgard kernel against the same done by hand with Slurm and Pyxis.

Runs on the local Slurm test cluster (needs root), with real Pyxis and
enroot and a real squashfs image, on one node (gpu01) for both:

- Asgard: a kernelspec of the pyxis-provisioner, started as a Jupyter server
  starts it (AsyncKernelManager.start_kernel, then a client's wait_for_ready)
  and restarted with restart_kernel(now=True), as jupyter_client restarts a
  crashed kernel (the old step ended at once, as the bare path's SIGTERM ends
  it, then a new srun step in the same allocation and container; JupyterLab's
  Restart first asks the kernel politely to shut down, which adds jupyter_client's
  own shutdown wait to both ways alike).
- Bare: what a user would type instead: ``salloc --no-shell``, a connection
  file in a directory mounted into the container, ``srun --jobid=J --overlap
  --container-image=IMG --container-name=NAME:no_exec --container-mounts=DIR:DIR
  --container-workdir=DIR python3 -m ipykernel_launcher -f DIR/conn.json``,
  then a client's wait_for_ready; restarted by ending that srun (SIGTERM) and
  running another in the same allocation and container.

Each figure runs from the request until the kernel answers a kernel_info
request.  Cold start: a container name new in each round, so enroot unpacks
the image; warm start: a container made once before measuring; restart: of
the warm kernel.  Asgard and bare rounds alternate (each goes first in every
other round), so machine noise hits both alike; the figures that matter are
the ratios of the medians.  Targets: cold start at most 1.1x the bare path,
warm start and restart at most 1.15x.

    sudo python3 -m benchmarks.kernel_start [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager
from traitlets.config import Config

from benchmarks.on_cluster import cluster_kernelspecs
from jupyter_asgard.slurm.monitor import SlurmMonitor
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, container_storage
from tests.kernels import start as start_kernel

NODE = "gpu01"
TARGETS = {"cold": 1.1, "warm": 1.15, "restart": 1.15}
READY_TIMEOUT = 120.0  # seconds; a cold start unpacks the image first
# The node has a network of its own, where only this benchmark's kernels listen; below Linux's ephemeral ports
# (32768-60999), which the node's outgoing connections (slurmstepd's to srun) take.
KERNEL_PORTS = range(20000, 32768)
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")

T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")


async def ready(km: AsyncKernelManager) -> None:
    """Until the kernel answers a kernel_info request: what a notebook waits for before its first cell."""
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=READY_TIMEOUT)
    finally:
        client.stop_channels()


async def timed(action: Awaitable[T]) -> tuple[float, T]:
    """Seconds the action takes, once the files earlier starts unpacked are written back (else that
    writing would slow down whichever start comes next)."""
    await asyncio.to_thread(os.sync)
    started = time.perf_counter()
    result = await action
    return time.perf_counter() - started, result


class Runner(Protocol[K]):
    """One way to run a kernel on NODE in a named container (Asgard's, or by hand); start and restart
    return once the kernel is ready."""

    label: str

    async def start(self, container: str) -> K: ...

    async def restart(self, kernel: K) -> None: ...

    async def stop(self, kernel: K) -> None: ...


class AsgardRunner:
    """Asgard kernels, one kernelspec per container name.

    image: the kernels' image where it is not the kernelspecs' default (the test cluster's squashfs PyTorch
    image); site: the site's settings (c.PyxisProvisioner...), which reach the provisioner through its kernel
    manager, as a Jupyter server's config files do."""

    def __init__(
        self, specs: KernelSpecs, cwd: str, label: str = "asgard", image: str | None = None, site: Config | None = None
    ) -> None:
        self.specs = specs
        self.cwd = cwd
        self.label = label
        self.image = image
        self.site = site

    async def start(self, container: str) -> AsyncKernelManager:
        km = await start_kernel(self.kernelspec(container), Path(self.cwd), self.site)
        await ready(km)
        return km

    def kernelspec(self, container: str) -> str:
        """Pinned to NODE, with no GPU, no mount but the workdir and Pyxis's default filesystem: what the
        bare srun asks for too, so that the two differ only in who runs the commands."""
        image: dict[str, Any] = {"image": self.image} if self.image else {}
        return self.specs.make(
            container,
            container_name=container,
            salloc_args=[f"--nodelist={NODE}"],
            gpus=None,
            mounts=None,
            container_writable=None,
            **image,
        )

    async def restart(self, km: AsyncKernelManager) -> None:
        await km.restart_kernel(now=True)
        await ready(km)

    async def stop(self, km: AsyncKernelManager) -> None:
        await km.shutdown_kernel(now=True)


@dataclass
class BareKernel:
    """An allocation granted to salloc --no-shell, and the srun step running ipykernel in it."""

    job_id: str
    container: str
    directory: Path  # mounted at the same path: the connection files and srun's output
    srun: asyncio.subprocess.Process | None = None
    launches: int = 0

    @property
    def output(self) -> Path:
        return self.directory / f"srun-{self.launches}.log"


class BareRunner:
    """The same kernel by hand: salloc, a connection file, srun with Pyxis's options, a client."""

    label = "bare"

    def __init__(self, cluster: LocalCluster, workspace: Path) -> None:
        self.image = str(cluster.pytorch_image())
        self.ip = cluster.node_addr(NODE)
        self.workspace = workspace

    async def start(self, container: str) -> BareKernel:
        job_id = await allocate()
        kernel = BareKernel(job_id, container, Path(tempfile.mkdtemp(prefix="bare-", dir=self.workspace)))
        await self.launch(kernel)
        return kernel

    async def restart(self, kernel: BareKernel) -> None:
        await end_step(kernel)
        await self.launch(kernel)

    async def stop(self, kernel: BareKernel) -> None:
        await end_step(kernel)
        await slurm("scancel", kernel.job_id)

    async def launch(self, kernel: BareKernel) -> None:
        """srun ipykernel and wait until it is ready; on fresh ports, since the kernel before's closing
        connections may still hold its ports on the node (its srun returns as soon as it has died)."""
        kernel.launches += 1
        info = {
            "ip": self.ip,
            "transport": "tcp",
            "key": uuid.uuid4().hex,
            "signature_scheme": "hmac-sha256",
            **dict(zip(PORT_NAMES, random.sample(KERNEL_PORTS, len(PORT_NAMES)), strict=True)),
        }
        connection_file = kernel.directory / f"conn-{kernel.launches}.json"
        connection_file.write_text(json.dumps(info))
        mount = kernel.directory
        with open(kernel.output, "wb") as output:  # noqa: ASYNC230 - a local file, opened for srun's stdout
            kernel.srun = await asyncio.create_subprocess_exec(
                "srun",
                f"--jobid={kernel.job_id}",
                "--overlap",
                "--nodes=1",
                "--ntasks=1",
                f"--container-image={self.image}",
                f"--container-name={kernel.container}:no_exec",
                f"--container-mounts={mount}:{mount}",
                f"--container-workdir={mount}",
                "python3",
                "-m",
                "ipykernel_launcher",
                "-f",
                str(connection_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
            )
        await until_ready(kernel, info)


async def until_ready(kernel: BareKernel, info: dict[str, Any]) -> None:
    """wait_for_ready, or srun's output if srun ends first.

    The client is a manager's that does not own the kernel: it waits as the Asgard kernel's client does
    (kernel_info requests), not as a client of no manager does (heartbeats first, in 1 s ticks); such a
    manager cannot tell that the kernel died, hence the watch on srun.
    """
    assert kernel.srun is not None
    manager = AsyncKernelManager(owns_kernel=False, context=zmq.asyncio.Context.instance())
    manager.load_connection_info(info)
    client = manager.client()
    client.start_channels()
    waiting = asyncio.ensure_future(client.wait_for_ready(timeout=READY_TIMEOUT))
    exited = asyncio.ensure_future(kernel.srun.wait())
    try:
        done, _ = await asyncio.wait({waiting, exited}, return_when=asyncio.FIRST_COMPLETED)
        if waiting not in done:
            output = kernel.output.read_text(errors="replace")
            raise RuntimeError(f"the bare kernel's srun exited ({kernel.srun.returncode}):\n{output[-3000:]}")
        await waiting
    finally:
        waiting.cancel()
        exited.cancel()
        client.stop_channels()


async def slurm(*argv: str) -> str:
    """A Slurm command's stderr (where salloc reports); raise with it if the command fails."""
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}): {stderr.decode(errors='replace')}")
    return stderr.decode(errors="replace")


async def allocate() -> str:
    """An allocation on NODE: salloc --no-shell returns as soon as it is granted, and no process holds it."""
    stderr = await slurm("salloc", "--no-shell", f"--nodelist={NODE}", "--job-name=bench-bare")
    granted = re.search(r"Granted job allocation (\d+)", stderr)
    if not granted:
        raise RuntimeError(f"salloc granted no allocation: {stderr}")
    return granted[1]


async def end_step(kernel: BareKernel) -> None:
    """SIGTERM to srun, as a user ends it: srun kills the step and returns once the kernel has died."""
    if kernel.srun is not None and kernel.srun.returncode is None:
        kernel.srun.terminate()
        await kernel.srun.wait()


async def cold(runner: Runner[Any], container: str) -> float:
    seconds, kernel = await timed(runner.start(container))
    await runner.stop(kernel)
    return seconds


async def warm(runner: Runner[Any], container: str) -> tuple[float, float]:
    start, kernel = await timed(runner.start(container))
    try:
        restart, _ = await timed(runner.restart(kernel))
    finally:
        await runner.stop(kernel)
    return start, restart


async def measure(cluster: LocalCluster, runners: list[Runner[Any]], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Seconds by runner and phase.  Each runner's warm container is made first, untimed, which also
    brings the image and Python into the page cache for both."""
    results = {runner.label: {phase: [] for phase in TARGETS} for runner in runners}
    for runner in runners:
        await cold(runner, f"bench-warm-{runner.label}")
    for index in range(rounds):
        for runner in runners if index % 2 == 0 else runners[::-1]:
            container = f"bench-cold-{runner.label}-{index}"
            results[runner.label]["cold"].append(await cold(runner, container))
            remove_container(cluster, container)
            start, restart = await warm(runner, f"bench-warm-{runner.label}")
            results[runner.label]["warm"].append(start)
            results[runner.label]["restart"].append(restart)
    return results


def remove_container(cluster: LocalCluster, name: str, node: str = NODE) -> None:
    """Each cold start's container costs the node an unpacked image (hundreds of MB): once measured, it goes."""
    for path in container_storage(cluster, node, name):
        shutil.rmtree(path)


async def run(cluster: LocalCluster, specs: KernelSpecs, rounds: int) -> dict[str, dict[str, list[float]]]:
    workspace = cluster.root / "workspace"
    try:
        return await measure(cluster, [BareRunner(cluster, workspace), AsgardRunner(specs, str(workspace))], rounds)
    finally:
        await SlurmMonitor.instance().stop()  # before the loop closes, which would cancel a squeue in flight


def report(results: dict[str, dict[str, list[float]]], rounds: int) -> None:
    print(
        f"median of {rounds} rounds on {NODE}, seconds from request to ready kernel "
        "(bare salloc + srun + ipykernel vs Asgard kernel, both in Pyxis containers)"
    )
    for phase, target in TARGETS.items():
        bare = statistics.median(results["bare"][phase])
        asgard = statistics.median(results["asgard"][phase])
        ratio = asgard / bare
        verdict = "meets" if ratio <= target else "misses"
        print(
            f"  {phase:<8} bare {bare:7.3f}  asgard {asgard:7.3f}  ratio {ratio:5.2f}x ({verdict} the {target}x target)"
        )


def main_with_rounds(
    doc: str | None,
    rounds: int,
    run: Callable[[LocalCluster, KernelSpecs, int], Coroutine[Any, Any, R]],
    report: Callable[[R, int], None],
) -> int:
    """The main of a benchmark whose one option is --rounds (default: rounds): run on a test cluster of its own,
    its figures reported once that cluster has stopped (their printing is no part of what is measured)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=rounds)
    args = parser.parse_args()
    with cluster_kernelspecs() as specs:
        results: R = asyncio.run(run(specs.cluster, specs, args.rounds))
    report(results, args.rounds)
    return 0


def main() -> int:
    return main_with_rounds(__doc__, 5, run, report)


if __name__ == "__main__":
    sys.exit(main())
