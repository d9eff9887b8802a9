"""Placement: a kernel goes to the node where its named container already is, when Slurm can start it there.

What a user installed in a named container lives in one node's enroot storage; a kernel that Slurm puts on
another node starts in a fresh copy of the image, without it, and pays the image's whole unpacking. So before
the allocation is asked for, each node holding the container (newest first) is estimated with ``srun
--test-only --nodelist=NODE``: the first that would start the kernel now (or within the site's wait) gets the
allocation. Otherwise the kernel starts wherever Slurm puts it, at once, and the notice (notice()) tells the
user where their container is and what that means. Pure decisions here; the provisioner runs them.
"""

from __future__ import annotations

import asyncio
from contextlib import nullcontext
from dataclasses import dataclass, replace

from ..launch.launch_config import LaunchConfig
from ..slurm.slurm_client import SlurmClient
from .estimates import Estimate, estimate_one

PLACEMENT_TRAIT = "c.PyxisProvisioner.container_placement"
GRANT_PATIENCE = 10.0  # seconds a kernel waits for the node Slurm just said was free (another job may be faster)
MOST_ESTIMATED = 3  # nodes holding the container that are asked about, newest first
NODE_OPTIONS = ("-w", "--nodelist", "-F", "--nodefile")  # salloc_args that choose the nodes themselves


def chooses_nodes(config: LaunchConfig) -> bool:
    """Whether the kernel's own salloc_args name its nodes (then they decide, not placement)."""
    return any(arg.split("=", 1)[0] in NODE_OPTIONS or arg.startswith("-w") for arg in config.salloc_args)


def on_node(config: LaunchConfig, node: str) -> LaunchConfig:
    """The configuration's allocation asked for on node alone."""
    return replace(config, salloc_args=(*config.salloc_args, f"--nodelist={node}"))


@dataclass(frozen=True)
class Placement:
    """Where a kernel's allocation is asked for, and why not where its container is."""

    container: str = ""  # the named container, "" where the kernel has none of a stable name
    homes: tuple[str, ...] = ()  # the nodes holding it with what the user installed, newest first
    copies: tuple[str, ...] = ()  # nodes holding a fresh copy of it made from the image (container_places)
    node: str = ""  # the node asked for ("" Slurm chooses)
    patience: float = 0.0  # seconds to wait for node before starting elsewhere
    why_not: str = ""  # why not on a home node, as the notice says it (", which is busy (...)")

    def elsewhere(self, why_not: str) -> Placement:
        return replace(self, node="", patience=0.0, why_not=why_not)

    def notice(self, node: str, fresh: bool) -> str:
        """What the user is told when the kernel runs on node, away from their container ("" when it is not).
        fresh: Pyxis made the container's filesystem on node in this start."""
        if not self.homes or node in self.homes:
            return ""
        where = " and ".join(self.homes)
        copy = (
            "a fresh copy of the image"
            if fresh
            else f"the copy of {self.container} made there from the image earlier"
            if node in self.copies
            else f"the copy of {self.container} that was on {node} already"
        )
        return (
            f"your container {self.container}, with what you installed, is on {where}{self.why_not}: this kernel "
            f"runs on {node} in {copy}"
        )


def wiped_notice(container: str, node: str) -> str:
    """The notice for a container that was recorded on node and had to be made anew there."""
    return (
        f"your container {container} was no longer on {node} (it was removed from the node's storage): this kernel "
        "runs in a fresh copy of the image, without what was installed in it"
    )


def why_busy(estimate: Estimate, several: bool) -> str:
    """ ", which is busy (...)": Slurm's estimate of a node that would not start the kernel now, in words."""
    which = "which are" if several else "which is"
    if estimate.error:
        return f", {which} not available to this kernel (Slurm: {estimate.error})"
    if estimate.seconds is None:
        return f", {which} busy (Slurm cannot tell until when)"
    return f", {which} busy (Slurm: {estimate.words()})"


def choose(placement: Placement, estimates: list[Estimate], wait: float) -> Placement:
    """The first node holding the container (homes, then fresh copies) whose estimate (labelled with its node)
    starts within wait seconds (now, for 0), else where Slurm puts it; why not a home, where not one."""
    homes = estimates[: len(placement.homes)]
    first = next((estimate for estimate in homes if not estimate.error), homes[0] if homes else None)
    why_not = why_busy(first, len(placement.homes) > 1) if first else ""
    for estimate in estimates:
        if not estimate.error and estimate.seconds is not None and (estimate.now or estimate.seconds <= wait):
            home = estimate.label in placement.homes
            patience = max(wait, GRANT_PATIENCE)
            return replace(placement, node=estimate.label, patience=patience, why_not="" if home else why_not)
    return placement.elsewhere(why_not)


async def place(client: SlurmClient, config: LaunchConfig, placement: Placement, wait: float) -> Placement:
    """Slurm asked, once per node holding the container (at most MOST_ESTIMATED, at once), whether it would start
    config there."""
    nodes = (placement.homes + placement.copies)[:MOST_ESTIMATED]
    if not nodes:
        return placement
    estimates = await asyncio.gather(
        *(estimate_one(client, on_node(config, node), node, {}, nullcontext()) for node in nodes)
    )
    return choose(placement, list(estimates), wait)
