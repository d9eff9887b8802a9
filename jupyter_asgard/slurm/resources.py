"""Partitions and GPUs from one sinfo call, so the panel can offer only what a kernel can be given.

Pure functions, no processes: the server extension runs ``sinfo_argv()`` through its Slurm client
and hands the output to ``parse_sinfo()``. Rows are per node and partition (``--Node``) because GPU
counts only add up per node: a partition's free GPUs are the sum over its nodes that can take jobs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# sinfo --Format columns, each followed by "|" (":|" = no width limit, "|" after the value).
# "Partition" (unlike "PartitionName") marks the default partition with "*", which keeps this one call.
SINFO_FIELDS = {
    "partition": "Partition",
    "available": "Available",
    "time_limit": "Time",
    "node": "NodeList",
    "state": "StateLong",
    "gres": "Gres",
    "gres_used": "GresUsed",
    "cpus": "CPUsState",
    "memory": "Memory",
}
# Base node states (StateLong, suffix removed) in which a node still starts new jobs.
_ACCEPTING_STATES = {"idle", "mixed", "allocated", "completing", "planned"}
# StateLong appends one of these to the state: "*" = not responding, "~" = powered off, "#" = powering up, ...
_STATE_SUFFIXES = "*~#!%$@^-"
_NOT_RESPONDING = "*"
_GRES_ENTRY = re.compile(r"[^,(]+(?:\([^)]*\))?")  # "gpu:h100:2(IDX:0,3)" keeps its comma inside parentheses
_LEADING_INT = re.compile(r"\d+")


@dataclass
class Partition:
    """A partition as a user choosing where to run a kernel sees it."""

    name: str
    default: bool
    available: str  # "up", "down", "drain" or "inact", as sinfo prints it
    time_limit: str  # as Slurm prints it: "infinite", "30:00", "1-00:00:00"
    nodes: list[dict[str, str]] = field(default_factory=list)  # {"name", "state"}
    gpus: dict[str, dict[str, int]] = field(default_factory=dict)  # GPU type ("" if untyped) -> {"total", "free"}
    cpus: dict[str, int] = field(default_factory=lambda: {"total": 0, "idle": 0})
    max_memory_mb: int = 0  # the largest node's memory: the most a one-node kernel can ask for

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "default": self.default,
            "available": self.available,
            "time_limit": self.time_limit,
            "nodes": [dict(node) for node in self.nodes],
            "gpus": {gpu_type: dict(counts) for gpu_type, counts in self.gpus.items()},
            "cpus": dict(self.cpus),
            "max_memory_mb": self.max_memory_mb,
        }


def sinfo_argv(sinfo: str = "sinfo") -> list[str]:
    """One call for every partition and node; hidden partitions and those the user may not use stay hidden."""
    columns = ",".join(f"{column}:|" for column in SINFO_FIELDS.values())
    return [sinfo, "--Node", "--noheader", f"--Format={columns}"]


def parse_sinfo(output: str) -> list[Partition]:
    """Partitions with their nodes and GPU counts; the default partition first, then by name."""
    partitions: dict[str, Partition] = {}
    for line in output.splitlines():
        values = [value.strip() for value in line.split("|")]
        if len(values) < len(SINFO_FIELDS) or not values[0]:
            continue
        row = dict(zip(SINFO_FIELDS, values, strict=False))  # extra fields ignored
        name = row["partition"].rstrip("*")
        partition = partitions.setdefault(
            name, Partition(name, row["partition"].endswith("*"), row["available"], row["time_limit"])
        )
        _add_node(partition, row)
    for partition in partitions.values():  # sinfo's row order varies between calls
        partition.nodes.sort(key=lambda node: node["name"])
        partition.gpus = dict(sorted(partition.gpus.items()))
    return sorted(partitions.values(), key=lambda partition: (not partition.default, partition.name))


def _add_node(partition: Partition, row: dict[str, str]) -> None:
    """Only a node that takes jobs, in a partition that is up, has anything free."""
    accepting = partition.available == "up" and node_accepts_jobs(row["state"])
    partition.nodes.append({"name": row["node"], "state": row["state"]})
    used = parse_gpu_gres(row["gres_used"])
    for gpu_type, total in parse_gpu_gres(row["gres"]).items():
        counts = partition.gpus.setdefault(gpu_type, {"total": 0, "free": 0})
        counts["total"] += total
        if accepting:
            counts["free"] += max(total - used.get(gpu_type, 0), 0)
    idle, total_cpus = _idle_and_total_cpus(row["cpus"])
    partition.cpus["total"] += total_cpus
    if accepting:
        partition.cpus["idle"] += idle
    partition.max_memory_mb = max(partition.max_memory_mb, _leading_int(row["memory"]))


def node_accepts_jobs(state: str) -> bool:
    """Down, drained, draining, failing or not responding nodes keep their GPUs but start nothing."""
    if _NOT_RESPONDING in state:
        return False
    return state.rstrip(_STATE_SUFFIXES).lower() in _ACCEPTING_STATES


def parse_gpu_gres(gres: str) -> dict[str, int]:
    """GPU counts by type from a GRES string such as ``gpu:a100:4(S:0-1),shard:8`` or ``gpu:h100:1(IDX:0)``.

    Other GRES (shards, MPS, licenses) are left out; a GPU without a type counts under "".
    """
    counts: dict[str, int] = {}
    for entry in _GRES_ENTRY.findall(gres):
        fields = entry.split("(", 1)[0].strip().split(":")
        if fields[0] != "gpu" or len(fields) < 2 or not fields[-1].isdigit():
            continue
        gpu_type = ":".join(fields[1:-1])
        counts[gpu_type] = counts.get(gpu_type, 0) + int(fields[-1])
    return counts


def _idle_and_total_cpus(cpus_state: str) -> tuple[int, int]:
    """From CPUsState's "allocated/idle/other/total"; zeros when sinfo prints something else."""
    values = cpus_state.split("/")
    if len(values) != 4 or not all(value.isdigit() for value in values):
        return 0, 0
    return int(values[1]), int(values[3])


def _leading_int(text: str) -> int:
    """sinfo may append "+" to a memory size (nodes of differing sizes grouped together)."""
    match = _LEADING_INT.match(text)
    return int(match.group()) if match else 0
