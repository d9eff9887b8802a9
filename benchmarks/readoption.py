"""Re-adoption of detachable kernels: how soon the kernels a crashed Jupyter server left running answer through
the next server, against the same server start with no kernel to take over.

Runs on the local Slurm test cluster (needs root).  For each N (0, and 1
and 8 by default) a home of its own holds a `jupyter server` of a site that
allows detachable kernels (tests.detaching.SITE) and N detachable kernels of
a kernelspec with no GPU, one CPU and 512 MB each, so that 8 fit on the two
test nodes; each is started through the REST API and runs a cell that sets
a variable.  Then, in every round, the server is SIGKILLed, as a crash or a
lost login node ends it, and started again on the same URL, data and root
(tests.detaching.again), timed from its process start until it answers
GET /api/status (up), and until each of its N kernels has answered an
execute through the server's kernel websocket, all N asked at once, as the
notebooks JupyterLab reopens ask (usable).  The cell prints the variable, so
each answer is from the kernel taken over, not from a new one.  The server
takes its kernels over before it serves its first request: what the take-over
costs shows in up; what reaching the kernels through it costs, in usable - up.

N = 0 is the baseline: the same start with nothing to take over, until it
answers.  The cases take turns in every round (each first in turn), so
machine noise hits all alike; the figures that matter are the differences
and ratios against the baseline's median.  Target: 8 kernels usable within
2 s of a server without them being up (median usable of N = 8 minus median
up of N = 0).

    sudo python3 -m benchmarks.readoption [--counts 1 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.on_cluster import cluster_kernelspecs
from benchmarks.slurm_load import shutdown
from benchmarks.start_storm import start_kernels
from tests.detaching import SITE, again, killed, release_left_kernels
from tests.kernels import KernelSpecs, wait_until_no_kernel_jobs
from tests.server import JupyterServer, execute_via_websocket, started_server

KERNELSPEC = "asgard-readoption"
TARGET = (8, 2.0)  # kernels, and seconds after a server without them is up by which they must all answer
POLL = 0.02  # seconds between asks whether the restarted server answers: the start is timed to that
# A detached kernel waits this long for the next server: a round of every case must fit in it, however slow.
GRACE = 300
SET = "state = 'kept'"  # run once in each kernel before its first server is killed
CELL = "print(state)"  # what each kernel must answer through every server that takes it over
KEPT = "kept\n"
ANSWER_TIMEOUT = 120.0  # seconds for one kernel's answer


@dataclass
class Case:
    """N detached kernels in a home of their own, the server that last held them, and its timings."""

    count: int
    home: Path
    server: JupyterServer | None = None
    kernels: list[str] = field(default_factory=list)
    up: list[float] = field(default_factory=list)
    usable: list[float] = field(default_factory=list)  # until the last kernel answered (up, with none)

    @property
    def reach(self) -> list[float]:
        """Seconds from the server answering until its last kernel answered, round by round."""
        return [usable - up for up, usable in zip(self.up, self.usable, strict=True)]


def run_in_all(server: JupyterServer, kernels: list[str], code: str) -> list[tuple[str, float]]:
    """code run in every kernel at once through the server's websockets: each one's output, and the
    time.perf_counter() at which it answered."""

    def run(kernel_id: str) -> tuple[str, float]:
        printed = execute_via_websocket(server, kernel_id, code, timeout=ANSWER_TIMEOUT)
        return printed, time.perf_counter()

    with ThreadPoolExecutor(max(len(kernels), 1)) as pool:
        return list(pool.map(run, kernels))


def prepare(case: Case, failures: list[str]) -> None:
    """A server starts the case's kernels, each runs SET, and the server is SIGKILLed: they run on detached.
    Its start, untimed, also brings the server's imports into the page cache."""
    case.server = started_server(case.home, SITE)
    case.kernels = start_kernels(case.server, KERNELSPEC, case.count, failures)
    run_in_all(case.server, case.kernels, SET)
    killed(case.server)


def measure(case: Case) -> None:
    """One server start after a crash, timed; killed again after it, for the next round."""
    assert case.server is not None
    started = time.perf_counter()
    case.server = again(case.server, poll=POLL)
    up = time.perf_counter() - started
    answers = run_in_all(case.server, case.kernels, CELL)
    wrong = [printed for printed, _ in answers if printed != KEPT]
    if wrong:
        raise RuntimeError(f"kernels answered {wrong!r}, not {KEPT!r}: not the kernels taken over\n{case.server.log()}")
    case.up.append(up)
    case.usable.append(max((at - started for _, at in answers), default=up))
    killed(case.server)


def finish(case: Case) -> None:
    """The kernels shut down through a server that took them over, so their jobs end; whatever a failure left
    running is released from the records."""
    server = case.server
    try:
        if server is not None and server.process is not None and server.process.poll() is not None:
            server = case.server = again(server)
        if server is not None:
            shutdown(server, case.kernels)
    finally:
        if server is not None:
            server.stop()
        release_left_kernels(case.home / "data")


def run(specs: KernelSpecs, counts: list[int], rounds: int) -> tuple[list[Case], list[str]]:
    specs.make(KERNELSPEC, gpus=None, cpus_per_task=1, mem="512M", detachable=True, detach_grace=GRACE)
    failures: list[str] = []
    with tempfile.TemporaryDirectory(prefix="readoption-") as homes:
        cases = [Case(count, Path(homes) / f"{count}-kernels") for count in [0, *counts]]
        try:
            for case in cases:
                prepare(case, failures)
            for index in range(rounds):
                for case in cases[index % len(cases) :] + cases[: index % len(cases)]:
                    measure(case)
                print(f"  round {index + 1} measured", file=sys.stderr)
        except Exception:
            for case in cases:
                if case.server is not None:
                    print(f"{case.count} kernels' server log:\n{case.server.log()}", file=sys.stderr)
            raise
        finally:
            for case in cases:
                finish(case)
            if left := wait_until_no_kernel_jobs():
                print(f"kernel jobs left in the queue: {left}", file=sys.stderr)
    return cases, failures


def report(cases: list[Case], rounds: int, failures: list[str]) -> None:
    base = statistics.median(cases[0].up)
    print(
        "re-adoption: a Jupyter server started again after SIGKILL, seconds from its process start until it "
        "answers /api/status (up) and until each of the N detachable kernels it takes over has answered an "
        f"execute through its websocket, all N at once (usable); median of {rounds} rounds"
    )
    print(f"{'N':>4}  {'up':>9}  {'usable':>9}  {'usable vs up with none':>22}  {'take-over':>9}  {'up to usable':>12}")
    for case in cases:
        up, usable = statistics.median(case.up), statistics.median(case.usable)
        if case.count == 0:
            print(f"{case.count:>4}  {up:7.3f} s  {usable:7.3f} s  baseline")
            continue
        print(
            f"{case.count:>4}  {up:7.3f} s  {usable:7.3f} s  {usable / base:11.2f}x {usable - base:+7.3f} s  "
            f"{up - base:+7.3f} s  {statistics.median(case.reach):10.3f} s"
        )
    count, seconds = TARGET
    target = f"target: {count} kernels usable within {seconds} s of a server without them being up"
    measured = [case for case in cases if case.count == count]
    if measured:
        late = statistics.median(measured[0].usable) - base
        print(f"{target}: {late:+.3f} s ({'meets' if late <= seconds else 'misses'})")
    else:
        print(f"{target}: not measured (no case of {count} kernels)")
    print(f"kernel starts that failed (their REST start tried again): {len(failures)}")
    for line in failures:
        print(f"  {line}")
    print("all rounds, seconds (up / usable):")
    for case in cases:
        rows = " ".join(f"{up:.2f}/{usable:.2f}" for up, usable in zip(case.up, case.usable, strict=True))
        print(f"  N={case.count:<3} {rows}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--counts", type=int, nargs="+", default=[1, 8], help="detached kernels per case")
    parser.add_argument("--rounds", type=int, default=5, help="timed server starts per case")
    args = parser.parse_args()
    counts = sorted(set(args.counts))
    if min(counts) < 1 or sum(counts) > 30:
        parser.error("1 kernel or more per case, at most 30 in all: the two test nodes have 32 CPUs")
    with cluster_kernelspecs() as specs:
        cases, failures = run(specs, counts, args.rounds)
    report(cases, args.rounds, failures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
