"""Kernel messages with and without CurveZMQ: execute round trip, IOPub throughput and warm start of Asgard
kernels unencrypted, encrypted by the kernel itself and encrypted by the proxy, beside a local ipykernel.

Runs on the local Slurm test cluster (needs root), with real Pyxis and
enroot and real squashfs images; the Asgard kernels run on one node (gpu01),
each in a named container of its own, with no GPU and no mount (as
benchmarks.kernel_start's), and are reached over the cluster's bridge:

- local: ``python3 -m ipykernel_launcher`` on this machine, started by a
  jupyter_client AsyncKernelManager with the local provisioner (kernelspec
  python3, jupyter_client's default transport_encryption: unencrypted); a
  reference for what the network and containers cost, with no target;
- none: an Asgard kernel of the default test image (ipykernel 6.17) with the
  site's ``c.PyxisProvisioner.transport_encryption = "disabled"``: the
  baseline of curve-proxy's ratios (and the reference for the unencrypted rows);
- none-7.4: the same, of the ipykernel 7.4 image: the baseline of curve's ratios,
  so that each encrypted kernel is measured against the same kernel in the
  clear (ipykernel 7.4 and 6.17 differ by themselves);
- curve: an Asgard kernel of the ipykernel 7.4 image, which encrypts with
  CurveZMQ by itself;
- curve-proxy: an Asgard kernel of the default image, behind the encrypting
  proxy in its container.

Each Asgard kernel's ``provisioner.encryption`` is checked at every start, so
the figures are of the path they are labelled with.

Round trip: an execute_request of ``pass`` until both its execute_reply and
the idle status after it have arrived (jupyter_client's async client, no
heartbeat channel), after a few warm-up executes; median and p95.  IOPub
throughput: one cell that prints MiB in 64 KiB chunks (sys.stdout.write, then
flush), from the execute_request until the idle status after all its stream
output (every byte is counted); median of a few cells, after an untimed warm-up
cell of 1 MiB.  Start: AsyncKernelManager.start_kernel and a client's
wait_for_ready (as benchmarks.kernel_start's warm start), each kernel started
once untimed before, so its named container exists.  The five kernels run at
once while their messages are measured, and take turns (the executes in blocks,
the order rotated every block; the print cells and the starts in rounds), so
machine noise hits all alike.  Targets against the same Asgard kernel
unencrypted: round trip median at most 1.25x, throughput at least 0.75x, start
at most 1.05x.

    sudo python3 -m benchmarks.kernel_messages [--executes 500] [--print-mib 20] [--prints 9] [--starts 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from traitlets.config import Config

from benchmarks.kernel_start import ready, timed
from benchmarks.on_cluster import cluster_kernelspecs
from jupyter_asgard.slurm.monitor import SlurmMonitor
from tests.kernels import KernelSpecs

NODE = "gpu01"
BASELINE = "none"
# ratio against the baseline, and whether a ratio meets it: lower is better for the round trip and the start
TARGETS = {"round trip": (1.25, "<="), "throughput": (0.75, ">="), "start": (1.05, "<=")}
WARMUP_EXECUTES = 10
BLOCK = 50  # executes in a row on one kernel before the next kernel's turn
CHUNK = 64 * 1024  # bytes per write, the newline included
MESSAGE_TIMEOUT = 120.0  # seconds for any one message


def print_cell(chunks: int) -> str:
    """A cell that prints chunks times CHUNK bytes."""
    lines = [
        "import sys",
        f"chunk = 'x' * {CHUNK - 1} + '\\n'",
        f"for _ in range({chunks}):",
        "    sys.stdout.write(chunk)",
    ]
    return "\n".join([*lines, "sys.stdout.flush()"])


@dataclass
class Variant:
    """One of the five kernels: its kernelspec, the site configuration it starts under, and the encryption its
    provisioner must report (None for the local kernel, which jupyter_client's default leaves unencrypted: its
    connection info must hold no Curve key)."""

    label: str
    title: str
    kernel_name: str
    site: Config
    encryption: str | None
    baseline: str = BASELINE  # the label of the unencrypted kernel its ratios are against
    mode: str = ""  # the encryption its kernels reported
    starts: list[float] = field(default_factory=list)
    round_trips: list[float] = field(default_factory=list)
    throughputs: list[float] = field(default_factory=list)  # MiB/s


def variants(specs: KernelSpecs) -> list[Variant]:
    """The five kernels; each Asgard kernel pinned to NODE in a named container of its own (the images differ,
    and a named container keeps its first image), with no GPU and no mount but the workdir, as
    benchmarks.kernel_start's."""

    def spec(name: str, image: Path) -> str:
        return specs.make(
            name,
            image=str(image),
            container_name=name,
            salloc_args=[f"--nodelist={NODE}"],
            gpus=None,
            mounts=None,
            container_writable=None,
        )

    cluster = specs.cluster
    unencrypted = Config({"PyxisProvisioner": {"transport_encryption": "disabled"}})
    return [
        Variant("local", "local ipykernel (reference)", "python3", Config(), None),
        Variant(
            "none", "Asgard, unencrypted", spec("bench-messages-none", cluster.pytorch_image()), unencrypted, "none"
        ),
        Variant(
            "none-7.4",
            "Asgard, unencrypted, 7.4",
            spec("bench-messages-none-7", cluster.ipykernel7_image()),
            unencrypted,
            "none",
        ),
        Variant(
            "curve",
            "Asgard, native Curve",
            spec("bench-messages-curve", cluster.ipykernel7_image()),
            Config(),
            "curve",
            baseline="none-7.4",
        ),
        Variant(
            "curve-proxy",
            "Asgard, Curve via proxy",
            spec("bench-messages-proxy", cluster.pytorch_image()),
            Config(),
            "curve-proxy",
        ),
    ]


def encryption(km: AsyncKernelManager) -> str:
    """How the kernel's traffic goes: the Asgard provisioner's word; a local kernel's from its connection info."""
    mode = getattr(km.provisioner, "encryption", None)
    if mode is not None:
        return str(mode)
    return "curve" if km.get_connection_info().get("curve_publickey") else "none"


async def start(variant: Variant, cwd: str) -> AsyncKernelManager:
    """The kernel started and ready, as a Jupyter server starts it; its encryption checked."""
    km = AsyncKernelManager(kernel_name=variant.kernel_name, config=variant.site)
    await km.start_kernel(cwd=cwd)
    try:
        await ready(km)
        mode = variant.mode = encryption(km)
        if mode != (variant.encryption or "none"):
            raise RuntimeError(
                f"{variant.title}: the kernel's traffic goes {mode!r}, not {variant.encryption!r}: "
                "the benchmark would not measure what it says"
            )
    except BaseException:
        await km.shutdown_kernel(now=True)
        raise
    return km


async def stop(km: AsyncKernelManager) -> None:
    await km.shutdown_kernel(now=True)


async def measure_starts(kernels: list[Variant], rounds: int, cwd: str) -> None:
    """Warm starts, in rounds (each kernel first in turn); each kernel once untimed first, which makes its named
    container and brings its image and Python into the page cache."""
    for variant in kernels:
        await stop(await start(variant, cwd))
    for index in range(rounds):
        for variant in kernels[index % len(kernels) :] + kernels[: index % len(kernels)]:
            seconds, km = await timed(start(variant, cwd))
            variant.starts.append(seconds)
            await stop(km)


def own(message: dict[str, Any], msg_id: str) -> bool:
    return bool(message["parent_header"].get("msg_id") == msg_id)


async def reply(client: AsyncKernelClient, msg_id: str) -> dict[str, Any]:
    """The execute_reply to msg_id; raise unless it is ok."""
    while True:
        message = await client.get_shell_msg(timeout=MESSAGE_TIMEOUT)
        if own(message, msg_id):
            if message["content"]["status"] != "ok":
                raise RuntimeError(f"the cell failed: {message['content']}")
            return message


async def round_trip(client: AsyncKernelClient) -> float:
    """Seconds from an execute_request of `pass` until its reply and the idle status after it have arrived."""
    started = time.perf_counter()
    msg_id = client.execute("pass")
    while True:
        message = await client.get_iopub_msg(timeout=MESSAGE_TIMEOUT)
        if own(message, msg_id) and message["msg_type"] == "status":
            if message["content"]["execution_state"] == "idle":
                break
    await reply(client, msg_id)
    return time.perf_counter() - started


async def throughput(client: AsyncKernelClient, mib: int) -> float:
    """MiB/s of stream output: a cell printing mib MiB, from its execute_request until the idle status after
    all of it; every byte must arrive."""
    expected = mib * 1024 * 1024
    started = time.perf_counter()
    msg_id = client.execute(print_cell(expected // CHUNK))
    received = 0
    while True:
        message = await client.get_iopub_msg(timeout=MESSAGE_TIMEOUT)
        if not own(message, msg_id):
            continue
        if message["msg_type"] == "stream":
            received += len(message["content"]["text"])
        elif message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            break
    seconds = time.perf_counter() - started
    await reply(client, msg_id)
    if received != expected:
        raise RuntimeError(f"the cell printed {expected} bytes, the client received {received}")
    return mib / seconds


async def measure_messages(kernels: list[Variant], executes: int, mib: int, prints: int, cwd: str) -> None:
    """Round trips and throughput with all the kernels running, taking turns."""
    managers: list[AsyncKernelManager] = []
    clients: list[AsyncKernelClient] = []
    try:
        for variant in kernels:
            managers.append(await start(variant, cwd))
            client = managers[-1].client()
            client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
            await client.wait_for_ready(timeout=MESSAGE_TIMEOUT)
            clients.append(client)
        pairs = list(zip(kernels, clients, strict=True))
        for _, client in pairs:
            for _ in range(WARMUP_EXECUTES):
                await round_trip(client)
            await throughput(client, 1)
        blocks = [min(BLOCK, executes - done) for done in range(0, executes, BLOCK)]
        for index, size in enumerate(blocks):
            for variant, client in pairs[index % len(pairs) :] + pairs[: index % len(pairs)]:
                for _ in range(size):
                    variant.round_trips.append(await round_trip(client))
        for index in range(prints):
            for variant, client in pairs[index % len(pairs) :] + pairs[: index % len(pairs)]:
                variant.throughputs.append(await throughput(client, mib))
    finally:
        for client in clients:
            client.stop_channels()
        for km in managers:
            await stop(km)


async def run(specs: KernelSpecs, executes: int, mib: int, prints: int, starts: int) -> list[Variant]:
    kernels = variants(specs)
    cwd = str(specs.cluster.root / "workspace")
    try:
        await measure_starts(kernels, starts, cwd)
        print("  starts measured", file=sys.stderr)
        await measure_messages(kernels, executes, mib, prints, cwd)
        return kernels
    finally:
        await SlurmMonitor.instance().stop()  # before the loop closes, which would cancel a squeue in flight


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[18] if len(values) > 1 else values[0]


def figures(variant: Variant) -> dict[str, float]:
    return {
        "round trip": statistics.median(variant.round_trips),
        "throughput": statistics.median(variant.throughputs),
        "start": statistics.median(variant.starts),
    }


def report(kernels: list[Variant], executes: int, mib: int, prints: int, starts: int) -> None:
    print(
        f"kernel messages: Asgard kernels on {NODE} in Pyxis containers, a local ipykernel on this machine; "
        f"round trip: {executes} executes of `pass` (median / p95); IOPub: a cell printing {mib} MiB in 64 KiB "
        f"chunks (median of {prints}); start: start_kernel + wait_for_ready (median of {starts} warm starts)"
    )
    print(f"  {'kernel':<28} {'encryption':<12} {'round trip median / p95':>24} {'IOPub MiB/s':>12} {'start s':>8}")
    for variant in kernels:
        median = statistics.median(variant.round_trips) * 1000
        trip = f"{median:.3f} ms / {p95(variant.round_trips) * 1000:.3f} ms"
        print(
            f"  {variant.title:<28} {variant.mode:<12} {trip:>24} "
            f"{statistics.median(variant.throughputs):12.1f} {statistics.median(variant.starts):8.3f}"
        )
    by_label = {variant.label: variant for variant in kernels}
    targets = ", ".join(
        f"{name} {op.replace('<=', '≤').replace('>=', '≥')} {value}x" for name, (value, op) in TARGETS.items()
    )
    print(f"ratios against the same Asgard kernel unencrypted (targets, for the encrypted ones: {targets})")
    for variant in kernels:
        if variant.label == BASELINE:
            continue
        baseline = figures(by_label[variant.baseline])
        encrypted = variant.encryption not in (None, "none")
        parts = []
        for name, value in figures(variant).items():
            ratio = value / baseline[name]
            target, op = TARGETS[name]
            met = ratio <= target if op == "<=" else ratio >= target
            verdict = f" ({'meets' if met else 'misses'} the {target}x target)" if encrypted else ""
            parts.append(f"{name} {ratio:.2f}x{verdict}")
        print(f"  {variant.title:<28} vs {by_label[variant.baseline].title:<26} " + "  ".join(parts))
    print("all figures:")
    for variant in kernels:
        print(
            f"  {variant.label:<12} starts (s): {' '.join(f'{value:.3f}' for value in variant.starts)}; "
            f"IOPub (MiB/s): {' '.join(f'{value:.1f}' for value in variant.throughputs)}; "
            f"round trip min / max: {min(variant.round_trips) * 1000:.3f} / {max(variant.round_trips) * 1000:.3f} ms"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executes", type=int, default=500, help="timed executes of `pass` per kernel")
    parser.add_argument("--print-mib", type=int, default=20, help="MiB the throughput cell prints")
    parser.add_argument(
        "--prints", type=int, default=9, help="timed throughput cells per kernel (one cell varies by 10%% and more)"
    )
    parser.add_argument("--starts", type=int, default=5, help="timed warm starts per kernel")
    args = parser.parse_args()
    with cluster_kernelspecs() as specs:
        kernels = asyncio.run(run(specs, args.executes, args.print_mib, args.prints, args.starts))
    report(kernels, args.executes, args.print_mib, args.prints, args.starts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
