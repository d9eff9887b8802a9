"""Start and restart time of an Asgard kernel against a local ipykernel, measured side by side.

Runs on the local Slurm test cluster (needs root). Both kernels are started
the same way (AsyncKernelManager.start_kernel, then a client's wait_for_ready)
in alternating rounds, so machine noise hits both alike; the figures that
matter are the ratios. Targets: start and restart within 1.2x of local.

    sudo python3 -m benchmarks.kernel_start [--rounds 7]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs

TARGET = 1.2


async def ready(km: AsyncKernelManager) -> None:
    client = km.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=60)
    finally:
        client.stop_channels()


async def measure(kernel_name: str, cwd: str) -> tuple[float, float]:
    """Seconds from start request to kernel ready, and from restart request to ready again."""
    km = AsyncKernelManager(kernel_name=kernel_name)
    started = time.perf_counter()
    await km.start_kernel(cwd=cwd)
    await ready(km)
    start = time.perf_counter() - started
    started = time.perf_counter()
    await km.restart_kernel()
    await ready(km)
    restart = time.perf_counter() - started
    await km.shutdown_kernel(now=True)
    return start, restart


async def run(rounds: int, cwd: str) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {name: {"start": [], "restart": []} for name in ("local", "asgard")}
    await measure("python3", cwd)  # warm caches (imports, page cache) for both
    await measure("asgard-bench", cwd)
    for _ in range(rounds):
        for label, kernel_name in (("local", "python3"), ("asgard", "asgard-bench")):
            start, restart = await measure(kernel_name, cwd)
            results[label]["start"].append(start)
            results[label]["restart"].append(restart)
    return results


def report(results: dict[str, dict[str, list[float]]], rounds: int) -> None:
    print(f"median of {rounds} rounds, seconds (local ipykernel vs Asgard kernel on the test cluster)")
    for phase in ("start", "restart"):
        local = statistics.median(results["local"][phase])
        asgard = statistics.median(results["asgard"][phase])
        ratio = asgard / local
        verdict = "meets" if ratio <= TARGET else "misses"
        print(f"  {phase:<8} local {local:6.3f}  asgard {asgard:6.3f}  ratio {ratio:5.2f}x "
              f"({verdict} the {TARGET}x target)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cluster = LocalCluster().start()
    try:
        os.environ.update(cluster.env)
        with tempfile.TemporaryDirectory() as jupyter_path:
            os.environ["JUPYTER_PATH"] = jupyter_path
            KernelSpecs(Path(jupyter_path) / "kernels", cluster).make("asgard-bench")
            results = asyncio.run(run(args.rounds, str(cluster.root / "workspace")))
        report(results, args.rounds)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
