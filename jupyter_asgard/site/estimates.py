"""When a launch configuration would start, as Slurm's scheduler sees it now, and what would start sooner.

Slurm answers ``srun --test-only`` with the allocation's options ("Job 12 to start
at 2026-11-30T14:35:00 using 1 processors on nodes gpu02 in partition gpu")
without submitting anything. Beside the configuration itself, up to three cheaper
ones the site allows are estimated, one Slurm call each: one GPU instead of
several, another allowed partition, a shorter time limit; so that a user can take
"1 GPU now" over "4 GPUs in two hours". No server imports: the REST API and the
container panel call it alike.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

from ..errors import SlurmError
from ..launch.launch_config import LaunchConfig
from ..slurm.slurm_client import CommandResult, SlurmClient
from ..slurm.slurm_commands import duration_seconds, estimate_argv, parse_test_only, seconds_until
from .site_policy import SitePolicy, check_allocation

NOW_SECONDS = 5  # an estimate this close counts as "now" (Slurm's answer takes a moment to reach us)
SHORTEST_SUGGESTED = 30 * 60  # a shorter time limit is suggested down to half an hour
# Where Slurm answers with its placeholder for "not known" (slurm_commands.UNKNOWN_START_SECONDS): nothing frees
# what the configuration needs at a time Slurm knows, typically GPUs held by jobs without a time limit.
UNKNOWN_WORDS = "Slurm cannot tell when: what it needs is held by jobs with no end Slurm knows (no time limit)"


@dataclass(frozen=True)
class Estimate:
    """Slurm's estimate for one configuration; changes: what differs from the configuration asked about."""

    label: str
    changes: dict[str, Any] = field(default_factory=dict)
    start: str = ""  # Slurm's time, the cluster's local time
    seconds: int | None = None  # until then; 0: now
    nodes: str = ""
    partition: str = ""
    error: str = ""  # Slurm's words where it would not run the configuration at all

    @property
    def now(self) -> bool:
        return self.seconds is not None and self.seconds <= NOW_SECONDS

    def words(self) -> str:
        """ "starts now on gpu02", "expected to start at 14:35 (in ~45 min)", that Slurm cannot tell, or Slurm's
        refusal."""
        if self.error:
            return f"Slurm would not run it: {self.error}"
        if self.now:
            return f"starts now on {self.nodes}"
        if self.seconds is None:
            return UNKNOWN_WORDS
        minutes = round((self.seconds or 0) / 60)
        return f"expected to start at {self.start[11:16]} (in ~{minutes} min) on {self.nodes}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "now": self.now, "words": self.words()}


def _shorter_time(config: LaunchConfig) -> str:
    """Half the time limit (an hour where none is set), or "" where it is short already."""
    seconds = duration_seconds(config.time) if config.time else None
    if seconds is None:
        return "1:00:00"
    half = seconds // 2
    return f"{half // 3600}:{half % 3600 // 60:02d}:00" if half >= SHORTEST_SUGGESTED else ""


Changes = list[tuple[str, dict[str, Any]]]  # (label, the settings that differ)


def cheaper_changes(config: LaunchConfig, partition: str, allowed_partitions: list[str]) -> Changes:
    """Up to three cheaper configurations, as (label, changes): one GPU, another allowed partition, a shorter
    time limit; each only where it differs from the configuration."""
    found: Changes = []
    gpu_type, count = config.gpu_request()
    if count > 1:
        found.append((f"1 GPU instead of {count}", {"gpus": f"{gpu_type}:1" if gpu_type else "1"}))
    other = next((name for name in allowed_partitions if name != partition), "")
    if other:
        found.append((f"partition {other}", {"partition": other}))
    shorter = _shorter_time(config)
    if shorter:
        found.append((f"time limit {shorter}", {"time": shorter}))
    return found


def read_estimate(label: str, changes: dict[str, Any], result: CommandResult, now: datetime | None = None) -> Estimate:
    """srun --test-only's answer as an Estimate: its start (none where Slurm answered with its placeholder for
    "not known"), or Slurm's last words where it would not run the configuration."""
    found = parse_test_only(result.stdout + result.stderr)
    if found is None:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        return Estimate(label, changes, error=lines[-1] if lines else f"srun exited with {result.returncode}")
    start, nodes, partition = found
    seconds = seconds_until(start, now)
    return Estimate(label, changes, start if seconds is not None else "", seconds, nodes, partition)


# What each srun --test-only runs in: a semaphore where a server bounds how many run at once (estimate_service).
SrunSlot = AbstractAsyncContextManager[Any]


async def estimate_one(
    client: SlurmClient, config: LaunchConfig, label: str, changes: dict[str, Any], slot: SrunSlot
) -> Estimate:
    try:
        async with slot:
            result = await client.run(estimate_argv(config))
        return read_estimate(label, changes, result)
    except SlurmError as error:
        return Estimate(label, changes, error=str(error))


async def estimate_launch(
    client: SlurmClient, config: LaunchConfig, policy: SitePolicy, slot: SrunSlot | None = None
) -> dict[str, Any]:
    """The configuration's estimate and those of the cheaper ones the site allows, asked at once (as many at
    once as slot lets through)."""
    partition = config.partition or policy.partition
    candidates: list[tuple[str, dict[str, Any], LaunchConfig]] = [("as configured", {}, config)]
    for label, changes in cheaper_changes(config, partition, list(policy.allowed_partitions)):
        changed, refused = check_allocation(replace(config, **changes), policy, policy.partition)
        if not refused:
            candidates.append((label, changes, changed))
    slot = slot or nullcontext()
    found = await asyncio.gather(
        *(estimate_one(client, cfg, label, changes, slot) for label, changes, cfg in candidates)
    )
    return {"estimate": found[0].to_json(), "alternatives": [estimate.to_json() for estimate in found[1:]]}
