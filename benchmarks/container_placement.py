"""A kernel started again where its named container is, against the same start pinned there, and against Slurm's
own choice of node (issue 24).

Runs on the local Slurm test cluster (needs root), with real Pyxis and
enroot.  A writable named container, its name new in each run, is made on
gpu02 by a first start pinned there (salloc_args --nodelist=gpu02; untimed),
which the server records (kernel/container_places.py, in the benchmark's own
JUPYTER_DATA_DIR); with both nodes idle, Slurm alone would put the next
kernel on gpu01, the first in its order.  Then, in every round, three starts
of a kernel in that container, each once both nodes are idle (waited for,
untimed):

- bare warm: pinned to gpu02 by the kernelspec's salloc_args, the baseline:
  a warm start in the container, with nothing for placement to decide;
- with placement: no node named, the site's container_placement on (its
  default): the provisioner asks Slurm whether gpu02 would start the kernel
  now (srun --test-only) and asks for gpu02;
- without placement: the same with the site's container_placement = False:
  Slurm puts the kernel on gpu01, where Pyxis unpacks the image into a fresh
  copy of the container (a cold start).

Each start is checked: its node, whether Pyxis created the container's
filesystem (without placement alone must), that placement chose gpu02 (with
placement) and that the user is told where their container is (without); a
kernel elsewhere ends the run with the provisioner's log lines.  After each
start without placement its copy on gpu01 is removed with the server's
record of it, as a removal through Asgard would: the container lives on
gpu02 alone at every start, and every start without placement is cold.  At
the end the container goes from both nodes, and its record with it.  Each
figure runs from the request until the kernel answers a kernel_info request
(kernel_start.py's AsgardRunner and timing).  The kinds take turns, in every
other round the other way round, so machine noise hits all alike; the
figures that matter are the ratios of the medians.  Target: with placement
the start is warm, at most 1.15x the bare warm start.

    sudo python3 -m benchmarks.container_placement [--rounds 5]
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets.config import Config
from traitlets.log import get_logger

from benchmarks.kernel_start import main_with_rounds, remove_container, timed
from benchmarks.registry_start import SiteRunner, site
from jupyter_asgard.containers.container_phases import CREATING
from jupyter_asgard.kernel.container_places import ContainerPlaces
from jupyter_asgard.kernel.provisioner import PyxisProvisioner
from jupyter_asgard.slurm.monitor import SlurmMonitor
from tests.cluster import NODES, LocalCluster
from tests.kernels import KernelSpecs
from tests.known_state import settled

HOME = "gpu02"  # where the container is made, and lives
FIRST = "gpu01"  # where Slurm alone puts a kernel while both nodes are idle
BARE, PLACED, UNPLACED = "bare warm", "with placement", "without placement"
KINDS = (BARE, PLACED, UNPLACED)
TARGET = 1.15  # with placement against the bare warm start
WHAT = {
    BARE: f"pinned to {HOME} by salloc_args (baseline)",
    PLACED: "no node named, c.PyxisProvisioner.container_placement = True",
    UNPLACED: "no node named, c.PyxisProvisioner.container_placement = False",
}


@dataclass(frozen=True)
class Start:
    seconds: float
    node: str
    fresh: bool  # Pyxis created the container's filesystem in this start: a cold start


class KindRunner(SiteRunner):
    """A kernel of the benchmark's container under its kind's site settings (checked at each start, SiteRunner),
    pinned to node by its kernelspec's salloc_args where node is given."""

    def __init__(self, specs: KernelSpecs, cwd: str, label: str, settings: Config, node: str = "") -> None:
        super().__init__(specs, cwd, label, site=settings)
        self.node = node

    def kernelspec(self, container: str) -> str:
        return self.specs.make(
            "bench-placement-" + self.label.replace(" ", "-"),
            container_name=container,
            salloc_args=[f"--nodelist={self.node}"] if self.node else None,
            gpus=None,
            mounts=None,
            container_writable=True,
        )


class ProvisionerLog(logging.Handler):
    """The provisioners' log lines (jupyter_client's logger where no Jupyter application runs), kept to show why
    a kernel ran where it did."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("[%(levelname).1s %(asctime)s] %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))

    def of(self, kernel_id: str) -> str:
        return "\n".join(line for line in self.lines if kernel_id in line)


def idle(cluster: LocalCluster) -> None:
    """Until no job is in the queue and both nodes are idle: else a node still ending the last kernel's job
    would not start the next one now, and Slurm and placement would choose otherwise."""
    left = settled(cluster)
    if left:
        raise RuntimeError(f"the cluster did not become idle: {left}")


class Benchmark:
    """The kinds' runners and starts, around one container on HOME."""

    def __init__(self, cluster: LocalCluster, specs: KernelSpecs, workspace: Path) -> None:
        self.cluster = cluster
        self.container = f"bench-placement-{uuid.uuid4().hex[:8]}"
        cwd = str(workspace)
        self.runners = {
            BARE: KindRunner(specs, cwd, BARE, site(), HOME),
            PLACED: KindRunner(specs, cwd, PLACED, site(container_placement=True)),
            UNPLACED: KindRunner(specs, cwd, UNPLACED, site(container_placement=False)),
        }
        self.places = ContainerPlaces()
        self.log = ProvisionerLog()
        self.starts: dict[str, list[Start]] = {kind: [] for kind in KINDS}

    async def start(self, kind: str, fresh: bool) -> Start:
        """One start of kind's kernel once both nodes are idle, timed, checked and stopped; fresh: whether Pyxis
        must create the container's filesystem."""
        await asyncio.to_thread(idle, self.cluster)
        runner = self.runners[kind]
        seconds, km = await timed(runner.start(self.container))
        try:
            return self.checked(kind, fresh, seconds, km)
        finally:
            await runner.stop(km)

    def checked(self, kind: str, fresh: bool, seconds: float, km: AsyncKernelManager) -> Start:
        provisioner = km.provisioner
        assert isinstance(provisioner, PyxisProvisioner) and provisioner.step is not None
        start = Start(seconds, provisioner.node, CREATING in provisioner.step.phases)
        node = FIRST if kind == UNPLACED else HOME
        problems = []
        if (start.node, start.fresh) != (node, fresh):
            problems.append(f"ran on {start.node} {'cold' if start.fresh else 'warm'}, not on {node}")
        if kind == PLACED and provisioner.placement.node != HOME:
            problems.append(f"placement asked for {provisioner.placement.node or 'no node'}, not {HOME}")
        if (HOME in provisioner.container_notice) != (kind == UNPLACED):
            problems.append(f"the user was told {provisioner.container_notice!r}")
        if problems:
            raise RuntimeError(
                f"{kind} kernel {km.kernel_id} in {self.container}: {'; '.join(problems)} (phases "
                f"{provisioner.step.phases}, {provisioner.placement})\n{self.log.of(km.kernel_id)}"
            )
        return start

    async def round(self, index: int) -> None:
        for kind in KINDS if index % 2 == 0 else KINDS[::-1]:
            try:
                self.starts[kind].append(await self.start(kind, fresh=kind == UNPLACED))
            finally:
                if kind == UNPLACED:
                    await asyncio.to_thread(self.remove, FIRST)

    def remove(self, node: str | None = None) -> None:
        """The container gone from node (from both nodes: None), once no job runs there, and its record with it."""
        idle(self.cluster)
        for where in NODES if node is None else (node,):
            remove_container(self.cluster, self.container, where)
        self.places.forget(self.container, node)

    async def run(self, rounds: int) -> dict[str, list[Start]]:
        """Starts by kind. The first start, untimed, makes the container on HOME, which the server must record
        there; it also brings the image and Python into the page cache."""
        logger = get_logger()
        logger = logger.logger if isinstance(logger, logging.LoggerAdapter) else logger
        logger.setLevel(logging.INFO)
        logger.addHandler(self.log)
        try:
            await self.start(BARE, fresh=True)
            recorded = [place.node for place in await asyncio.to_thread(self.places.places, self.container)]
            if recorded != [HOME]:
                raise RuntimeError(f"{self.container} is recorded on {recorded}, not on {HOME} alone")
            for index in range(rounds):
                await self.round(index)
        finally:
            logger.removeHandler(self.log)
            await asyncio.to_thread(self.remove)
        return self.starts


async def run(cluster: LocalCluster, specs: KernelSpecs, rounds: int) -> dict[str, list[Start]]:
    try:
        return await Benchmark(cluster, specs, cluster.root / "workspace").run(rounds)
    finally:
        await SlurmMonitor.instance().stop()  # before the loop closes, which would cancel a squeue in flight


def where(starts: list[Start]) -> str:
    """The nodes and temperatures of a kind's starts: "gpu02 warm" where all were alike."""
    return ", ".join(sorted({f"{start.node} {'cold' if start.fresh else 'warm'}" for start in starts}))


def report(starts: dict[str, list[Start]], rounds: int) -> None:
    medians = {kind: statistics.median(start.seconds for start in starts[kind]) for kind in KINDS}
    print(
        f"median of {rounds} rounds, seconds from request to ready kernel in a named container made on {HOME} "
        f"(both nodes idle, {FIRST} first in Slurm's order)"
    )
    for kind in KINDS:
        print(f"  {kind:<17} {medians[kind]:8.3f}  {where(starts[kind])}  {WHAT[kind]}")
    for kind in (PLACED, UNPLACED):
        ratio = medians[kind] / medians[BARE]
        verdict = f" ({'meets' if ratio <= TARGET else 'misses'} the {TARGET}x target)" if kind == PLACED else ""
        print(f"  {kind + ' / ' + BARE:<30} {ratio:5.2f}x{verdict}")
    print("all rounds, seconds:")
    for kind in KINDS:
        print(f"  {kind:<17} {' '.join(f'{start.seconds:.3f}' for start in starts[kind])}")


def main() -> int:
    return main_with_rounds(__doc__, 5, run, report)


if __name__ == "__main__":
    sys.exit(main())
