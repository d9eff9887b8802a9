"""Resources: partition (with free GPUs as Slurm reports them), GPU count and type, CPUs, memory, time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ipywidgets as w

ANY_TYPE = "any type"


def partition_label(partition: dict[str, Any]) -> str:
    gpus = partition["gpus"]
    free = sum(entry["free"] for entry in gpus.values())
    total = sum(entry["total"] for entry in gpus.values())
    types = ", ".join(sorted(t.upper() for t in gpus if t)) or "GPU"
    limit = (
        "no time limit" if partition["time_limit"] in ("infinite", "UNLIMITED") else f"max {partition['time_limit']}"
    )
    default = " (default)" if partition["default"] else ""
    return f"{partition['name']}{default}: {free} of {total} {types} free, {limit}"


class ResourcesBox(w.VBox):  # type: ignore[misc]  # ipywidgets is untyped: its classes are Any to mypy
    def __init__(self, max_gpus: int, on_change: Callable[[], None]) -> None:
        self.partitions: dict[str, dict[str, Any]] = {}
        self.partition = w.Dropdown(
            options=[("site default", "")], description="Partition", layout=w.Layout(width="100%")
        )
        self.gpus = w.BoundedIntText(1, min=0, max=max_gpus, description="GPUs", layout=w.Layout(width="180px"))
        self.gpu_type = w.Dropdown(options=[ANY_TYPE], description="type", layout=w.Layout(width="220px"))
        self.cpus = w.BoundedIntText(
            0, min=0, max=1024, description="CPUs", tooltip="0: Slurm's default", layout=w.Layout(width="180px")
        )
        self.mem = w.Text(placeholder="e.g. 32G", description="Memory", layout=w.Layout(width="220px"))
        self.time = w.Text(placeholder="e.g. 8:00:00", description="Time limit", layout=w.Layout(width="260px"))
        for control in (self.partition, self.gpus, self.gpu_type, self.cpus, self.mem, self.time):
            control.observe(lambda _: on_change(), "value")
        self.partition.observe(lambda _: self._offer_types(), "value")
        super().__init__([self.partition, w.HBox([self.gpus, self.gpu_type]), w.HBox([self.cpus, self.mem, self.time])])

    def set_partitions(self, partitions: list[dict[str, Any]]) -> None:
        self.partitions = {partition["name"]: partition for partition in partitions}
        current = self.partition.value
        self.partition.options = [("site default", "")] + [(partition_label(p), p["name"]) for p in partitions]
        self.partition.value = current if current in self.partitions else ""
        self._offer_types()

    def values(self) -> dict[str, Any]:
        gpu_type = "" if self.gpu_type.value == ANY_TYPE else self.gpu_type.value
        gpus = f"{gpu_type}:{self.gpus.value}" if gpu_type and self.gpus.value else self.gpus.value
        return {
            "partition": self.partition.value,
            "gpus": gpus or None,
            "cpus_per_task": self.cpus.value,
            "mem": self.mem.value.strip(),
            "time": self.time.value.strip(),
        }

    def set_values(self, config: dict[str, Any]) -> None:
        partition = config.get("partition", "")
        if partition and partition not in [value for _, value in self.partition.options]:
            self.partition.options = [*self.partition.options, (partition, partition)]
        self.partition.value = partition
        gpu_type, _, count = str(config.get("gpus") or "0").rpartition(":")
        self.gpus.value = int(count) if count.isdigit() else 0
        if gpu_type and gpu_type not in self.gpu_type.options:
            self.gpu_type.options = [*self.gpu_type.options, gpu_type]
        self.gpu_type.value = gpu_type or ANY_TYPE
        self.cpus.value = int(config.get("cpus_per_task") or 0)
        self.mem.value = config.get("mem", "")
        self.time.value = config.get("time", "")

    def _offer_types(self) -> None:
        chosen = self.partitions.get(self.partition.value) or next(
            (p for p in self.partitions.values() if p["default"]), None
        )
        types = sorted(t for t in (chosen or {}).get("gpus", {}) if t)
        current = self.gpu_type.value
        self.gpu_type.options = [ANY_TYPE, *types]
        self.gpu_type.value = current if current in self.gpu_type.options else ANY_TYPE
