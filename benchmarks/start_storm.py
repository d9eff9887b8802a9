"""Start storm: time until all of N kernels are ready, Asgard kernels against local ipykernels, and the
memory a Jupyter server holds per kernel.

Runs on the local Slurm test cluster (needs root).  Both kinds are started
the way benchmarks.kernel_start starts one (AsyncKernelManager.start_kernel,
then a client's wait_for_ready), here N at once with asyncio.gather, timed
from the first start request until the last kernel is ready.  Resources are
free: the Asgard kernels ask for no GPU and one CPU each, so N = 20 fits on
the two 16-CPU nodes and no kernel waits in the queue.  Local and Asgard
storms alternate, so machine noise hits both alike; the figures that matter
are the ratios of the medians.  A storm in which a kernel fails to start is
listed at the end and run again, so every timing is of N started kernels.

Memory: for each kind, a fresh `jupyter server` starts and shuts down one
kernel (so imports, zmq contexts and the Slurm monitor exist), then its RSS
is read before and after N kernels are started through the REST API; the
difference divided by N is what the server holds per kernel (the kernels'
own processes are not the server's and are not counted).

    sudo python3 -m benchmarks.start_storm [--counts 1 10 20] [--rounds 3] [--memory-kernels 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager

from benchmarks.kernel_start import ready
from benchmarks.slurm_load import START_THREADS, shutdown, start_server
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs
from tests.server import JupyterServer

KINDS = {"local": "python3", "asgard": "asgard-storm"}
MAX_ATTEMPTS = 3
SETTLE = 2.0  # seconds for the server to finish what a start set off (log lines, monitor polls) before RSS


async def storm(kernel_name: str, count: int, cwd: str) -> tuple[float, list[str]]:
    """Seconds from starting count kernels at once until the last of them is ready, and why starts failed."""
    managers = [AsyncKernelManager(kernel_name=kernel_name) for _ in range(count)]

    async def start(km: AsyncKernelManager) -> None:
        await km.start_kernel(cwd=cwd)
        await ready(km)

    started = time.perf_counter()
    try:
        outcomes = await asyncio.gather(*(start(km) for km in managers), return_exceptions=True)
        return time.perf_counter() - started, [failure(error) for error in outcomes if error is not None]
    finally:
        # A graceful shutdown, as JupyterLab's: not timed.
        await asyncio.gather(*(km.shutdown_kernel() for km in managers if km.has_kernel), return_exceptions=True)


def failure(error: BaseException) -> str:
    """The line that says why a start failed (the last of the kernel's output, for a kernel that exited)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip() and not line.startswith("srun:")]
    return f"{type(error).__name__}: {lines[-1] if lines else error!r}"


async def storms(counts: list[int], rounds: int, cwd: str) -> tuple[dict[str, dict[int, list[float]]], list[str]]:
    """Timings by kind and count; a storm in which a start failed is reported and run again (at most
    MAX_ATTEMPTS times), so the timings are of storms in which all N kernels started."""
    results: dict[str, dict[int, list[float]]] = {kind: {count: [] for count in counts} for kind in KINDS}
    failures: list[str] = []
    for kernel_name in KINDS.values():  # warm caches (imports, page cache) for both
        await storm(kernel_name, 1, cwd)
    for count in counts:
        for _ in range(rounds):
            for kind, kernel_name in KINDS.items():
                for _attempt in range(MAX_ATTEMPTS):
                    seconds, failed = await storm(kernel_name, count, cwd)
                    failures += [f"{kind} storm of {count}: {reason}" for reason in failed]
                    if not failed:
                        results[kind][count].append(seconds)
                        break
                else:
                    raise RuntimeError(f"{MAX_ATTEMPTS} {kind} storms of {count} failed: {failures[-3:]}")
        print(f"  storms of {count} measured", file=sys.stderr)
    return results, failures


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def start_kernels(server: JupyterServer, kernel_name: str, count: int, failures: list[str]) -> list[str]:
    """count kernels started through the REST API; a failed start is noted in failures and tried again."""

    def start(_: int) -> str:
        for _attempt in range(MAX_ATTEMPTS):
            answer = server.request("POST", "/api/kernels", {"name": kernel_name})
            # Pending kernels (the extension's default): the POST answers at once; the websocket waits.
            error = server.await_kernel(answer.body["id"]) if answer.status == 201 else answer.message
            if not error:
                return answer.body["id"]
            if answer.status == 201:
                server.request("DELETE", f"/api/kernels/{answer.body['id']}")
            lines = [line.strip() for line in error.splitlines() if line.strip() and not line.startswith("srun:")]
            failures.append(f"REST start of {kernel_name} ({answer.status}): {lines[-1] if lines else ''}")
        raise RuntimeError(f"kernel start failed {MAX_ATTEMPTS} times: {failures[-MAX_ATTEMPTS:]}\n{server.log()}")

    with ThreadPoolExecutor(START_THREADS) as pool:
        return list(pool.map(start, range(count)))


def memory_per_kernel(home: Path, kernel_name: str, count: int, failures: list[str]) -> tuple[int, int, float]:
    """The server's RSS (KiB) after a warm-up kernel and after count kernels, and KiB per kernel."""
    home.mkdir()
    server = start_server(home, poll_interval=1.0)
    kernels: list[str] = []
    try:
        shutdown(server, start_kernels(server, kernel_name, 1, failures))
        time.sleep(SETTLE)
        assert server.process is not None
        before = rss_kib(server.process.pid)
        kernels = start_kernels(server, kernel_name, count, failures)
        time.sleep(SETTLE)
        after = rss_kib(server.process.pid)
        return before, after, (after - before) / count
    finally:
        shutdown(server, kernels)
        server.stop()


def report(
    results: dict[str, dict[int, list[float]]],
    rounds: int,
    memory: dict[str, tuple[int, int, float]],
    memory_kernels: int,
    failures: list[str],
) -> None:
    print(
        f"start storm: N kernels started at once (AsyncKernelManager.start_kernel + wait_for_ready, "
        f"asyncio.gather), seconds until the last is ready, median of {rounds} rounds"
    )
    print(f"{'N':>4}  {'local ipykernel':>15}  {'Asgard kernel':>13}  {'ratio':>6}")
    for count in results["local"]:
        local = statistics.median(results["local"][count])
        asgard = statistics.median(results["asgard"][count])
        print(f"{count:>4}  {local:>13.3f} s  {asgard:>11.3f} s  {asgard / local:>5.2f}x")
    print("all rounds, seconds:")
    for kind, by_count in results.items():
        print(
            f"  {kind:<7}"
            + "  ".join(
                f"N={count}: " + " ".join(f"{value:.2f}" for value in values) for count, values in by_count.items()
            )
        )
    print(
        f"memory held by a Jupyter server per running kernel ({memory_kernels} kernels started through "
        f"the REST API; server RSS after them minus after a warm-up kernel, / {memory_kernels})"
    )
    for kind, (before, after, per_kernel) in memory.items():
        print(
            f"  {kind:<7} server RSS {before / 1024:7.1f} MiB -> {after / 1024:7.1f} MiB: "
            f"{per_kernel:7.0f} KiB per kernel"
        )
    local, asgard = memory["local"][2], memory["asgard"][2]
    if local > 0:
        print(f"  ratio Asgard/local: {asgard / local:.2f}x")
    print(f"kernel starts that failed (their storm was run again, their REST start tried again): {len(failures)}")
    for line in failures:
        print(f"  {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 20], help="kernels per storm")
    parser.add_argument("--rounds", type=int, default=3, help="storms per count and kind")
    parser.add_argument("--memory-kernels", type=int, default=20, help="kernels for the memory figure")
    args = parser.parse_args()
    if max([*args.counts, args.memory_kernels]) > 30:
        parser.error("at most 30 kernels: the two test nodes have 32 CPUs")
    cluster = LocalCluster().start()
    try:
        os.environ.update(cluster.env)
        with tempfile.TemporaryDirectory(prefix="start-storm-") as home:
            os.environ["JUPYTER_PATH"] = home
            KernelSpecs(Path(home) / "kernels", cluster).make(KINDS["asgard"], gpus=None)
            results, failures = asyncio.run(storms(sorted(args.counts), args.rounds, str(cluster.root / "workspace")))
            memory = {}
            for kind, kernel_name in KINDS.items():
                memory[kind] = memory_per_kernel(
                    Path(home) / f"server-{kind}", kernel_name, args.memory_kernels, failures
                )
                print(f"  memory with {kind} kernels measured", file=sys.stderr)
        report(results, args.rounds, memory, args.memory_kernels, failures)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
