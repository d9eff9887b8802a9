"""Slurm load a Jupyter server causes, and its kernel table's latency, against the number of Asgard kernels.

Runs on the local Slurm test cluster (needs root): one real `jupyter server`
with a low poll interval, 1, 10 and then 30 running Asgard kernels (no GPUs,
one CPU each, so all fit on the two 16-CPU nodes), all started through the
REST API.  At each count, slurmctld's own RPC statistics (`sdiag`, reset
before a fixed window) say how many RPCs reached the controller; the server's
monitor stats say how many Slurm commands it ran.  Both must stay flat as
kernels are added: a server whose Slurm load grows with its kernels is how a
notebook service becomes a site's noisiest client.  GET /asgard/api/kernels is
timed too, since JupyterLab polls it.

    sudo python3 -m benchmarks.slurm_load [--counts 1 10 30] [--window 20] [--poll-interval 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs
from tests.server import JupyterServer, started_server

KERNELSPEC = "asgard-load"
TARGET = 1.2
START_THREADS = 3  # parallel kernel starts; more only queue up on a 2-core machine
LATENCY_REQUESTS = 50
RPC_SECTION = "Remote Procedure Call statistics by message type"
OWN_RPCS = {"REQUEST_STATS_INFO"}  # the benchmark's own sdiag call


@dataclass
class Measurement:
    kernels: int
    seconds: float
    rpcs: Counter[str]
    server_calls: Counter[str]
    polls: int
    latencies: list[float]

    def per_minute(self, count: int) -> float:
        return count * 60 / self.seconds

    @property
    def rpcs_per_minute(self) -> float:
        return self.per_minute(sum(self.rpcs.values()))

    @property
    def calls_per_minute(self) -> float:
        return self.per_minute(sum(self.server_calls.values()))

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies) * 1000

    @property
    def p95_ms(self) -> float:
        return statistics.quantiles(self.latencies, n=20)[18] * 1000


def sdiag_rpcs() -> Counter[str]:
    """RPC counts by message type since the last reset, as slurmctld counts them."""
    output = subprocess.run(["sdiag"], capture_output=True, text=True, check=True, timeout=30).stdout
    section = output.split(RPC_SECTION, 1)[1].split("\n\n", 1)[0]
    counts: Counter[str] = Counter()
    for line in section.strip().splitlines():
        name, _, rest = line.strip().partition(" ")
        if name not in OWN_RPCS:
            counts[name] = int(rest.split("count:", 1)[1].split()[0])
    return counts


def start_server(home: Path, poll_interval: float) -> JupyterServer:
    return started_server(home, f"c.SlurmMonitor.poll_interval = {poll_interval!r}\n")


def start_kernel(server: JupyterServer) -> str:
    answer = server.request("POST", "/api/kernels", {"name": KERNELSPEC})
    if answer.status != 201:
        raise RuntimeError(f"kernel start failed ({answer.status}): {answer.message}\n{server.log()}")
    # Pending kernels (the extension's default): the POST answers at once; the websocket waits for the start.
    if error := server.await_kernel(answer.body["id"]):
        raise RuntimeError(f"kernel start failed: {error}\n{server.log()}")
    return answer.body["id"]


def grow(server: JupyterServer, kernels: list[str], count: int) -> None:
    """Start kernels until count run; each id joins kernels as it comes, so a failed start still shuts all down."""

    def start() -> None:
        kernels.append(start_kernel(server))

    with ThreadPoolExecutor(START_THREADS) as pool:
        list(pool.map(lambda _: start(), range(count - len(kernels))))
    wait_until_running(server, count)


def wait_until_running(server: JupyterServer, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        rows = server.request("GET", "/asgard/api/kernels").body["kernels"]
        if sum(row["state"] == "RUNNING" for row in rows) == count:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{count} kernels did not all show RUNNING within {timeout}s: {rows}")


def measure(server: JupyterServer, kernels: int, window: float) -> Measurement:
    """Slurm RPCs and server calls in one quiet window, then GET kernels latency (it runs no Slurm command)."""
    time.sleep(3)  # let the last start's Slurm traffic (step launch, prologs) pass
    before = server.request("GET", "/asgard/api/monitor").body
    subprocess.run(["sdiag", "--reset"], capture_output=True, check=True, timeout=30)
    started = time.monotonic()
    time.sleep(window)
    rpcs = sdiag_rpcs()
    seconds = time.monotonic() - started
    after = server.request("GET", "/asgard/api/monitor").body
    calls = Counter(after["calls"])
    calls.subtract(before["calls"])
    return Measurement(kernels, seconds, rpcs, +calls, after["polls"] - before["polls"], latencies(server))


def latencies(server: JupyterServer) -> list[float]:
    times = []
    for _ in range(LATENCY_REQUESTS):
        started = time.perf_counter()
        server.request("GET", "/asgard/api/kernels")
        times.append(time.perf_counter() - started)
    return times


def shutdown(server: JupyterServer, kernels: list[str]) -> None:
    with ThreadPoolExecutor(START_THREADS) as pool:
        list(pool.map(lambda kernel_id: server.request("DELETE", f"/api/kernels/{kernel_id}"), kernels))


def run(cluster: LocalCluster, counts: list[int], window: float, poll_interval: float) -> list[Measurement]:
    with tempfile.TemporaryDirectory(prefix="slurm-load-") as home:
        os.environ["JUPYTER_PATH"] = home
        KernelSpecs(Path(home) / "kernels", cluster).make(KERNELSPEC, gpus=None)
        server = start_server(Path(home), poll_interval)
        kernels: list[str] = []
        try:
            results = []
            for count in counts:
                grow(server, kernels, count)
                results.append(measure(server, count, window))
                print(f"  measured {count} kernels", file=sys.stderr)
            return results
        except Exception:
            print(f"jupyter server log (it goes with its temporary directory):\n{server.log()}", file=sys.stderr)
            raise
        finally:
            shutdown(server, kernels)
            server.stop()


def report(results: list[Measurement], window: float, poll_interval: float) -> None:
    base = results[0]
    print(
        f"one Jupyter server, SlurmMonitor.poll_interval = {poll_interval} s, {window:.0f} s window per row, "
        f"GET /asgard/api/kernels timed over {LATENCY_REQUESTS} requests"
    )
    print(
        f"{'kernels':>7}  {'slurmctld RPC/min':>17}  {'server calls/min':>16}  {'polls/min':>9}  "
        f"{'GET kernels median':>18}  {'p95':>8}"
    )
    for result in results:
        print(
            f"{result.kernels:>7}  {result.rpcs_per_minute:>17.1f}  {result.calls_per_minute:>16.1f}  "
            f"{result.per_minute(result.polls):>9.1f}  {result.median_ms:>15.1f} ms  {result.p95_ms:>5.1f} ms"
        )
    print(
        f"ratios against {base.kernels} kernel(s) (target: Slurm load independent of the kernel count, "
        f"within {TARGET}x)"
    )
    for result in results[1:]:
        ratio = result.rpcs_per_minute / base.rpcs_per_minute
        verdict = "meets" if ratio <= TARGET else "misses"
        print(
            f"{result.kernels:>7}  RPCs {ratio:5.2f}x ({verdict})  server calls "
            f"{result.calls_per_minute / base.calls_per_minute:5.2f}x  GET kernels median "
            f"{result.median_ms / base.median_ms:5.2f}x, p95 {result.p95_ms / base.p95_ms:5.2f}x"
        )
    print("slurmctld RPCs in each window, by message type (sdiag's own REQUEST_STATS_INFO left out):")
    for result in results:
        print(f"{result.kernels:>7}  " + ", ".join(f"{name} {count}" for name, count in result.rpcs.most_common()))
    print("server's Slurm commands in each window:")
    for result in results:
        print(
            f"{result.kernels:>7}  " + ", ".join(f"{name} {count}" for name, count in result.server_calls.most_common())
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 10, 30], help="kernel counts, ascending")
    parser.add_argument("--window", type=float, default=20.0, help="seconds of counting per kernel count")
    parser.add_argument("--poll-interval", type=float, default=1.0, help="the server's SlurmMonitor.poll_interval")
    args = parser.parse_args()
    cluster = LocalCluster().start()
    try:
        os.environ.update(cluster.env)
        results = run(cluster, sorted(args.counts), args.window, args.poll_interval)
    finally:
        cluster.stop()
    report(results, args.window, args.poll_interval)
    return 0


if __name__ == "__main__":
    sys.exit(main())
