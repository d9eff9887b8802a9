"""EstimateBox: when Slurm would start the panel's configuration, and what cheaper ones would, kept live.

Settings change in bursts (a user types a time limit, clicks GPUs up twice), so
the box waits until they rest for DEBOUNCE seconds and asks then, in a task on
the kernel's event loop: the widget never waits for Slurm. It asks only when
what the allocation asks for changed (a new display name or mount costs nothing),
one Slurm call per estimate (estimates.py), and nothing while the panel is idle.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

import ipywidgets as w

from ..errors import SlurmError
from ..launch.launch_config import LaunchConfig
from ..site.estimates import estimate_launch
from ..site.site_policy import SitePolicy, check_allocation
from ..slurm.slurm_client import SlurmClient
from ..slurm.slurm_commands import estimate_argv

DEBOUNCE = 0.8  # seconds the settings must rest before Slurm is asked


class EstimateBox(w.HTML):  # type: ignore[misc]  # ipywidgets is untyped: its classes are Any to mypy
    """The estimate and its cheaper alternatives, as the panel's settings change."""

    def __init__(self, client: SlurmClient, policy: SitePolicy) -> None:
        super().__init__("<small>Choose an image and resources to see when Slurm would start them.</small>")
        self.client = client
        self.policy = policy
        self.asked_for: list[str] = []  # the allocation options of the last estimate
        self.task: asyncio.Task[None] | None = None

    def update(self, config: LaunchConfig | None) -> None:
        """Estimate config once the settings rest; None: the settings have problems (nothing to estimate)."""
        options = estimate_argv(config) if config is not None else []
        if options == self.asked_for:
            return
        self.asked_for = options
        if self.task is not None:
            self.task.cancel()
            self.task = None
        if config is None:
            self.value = "<small>Fix the settings above to see when Slurm would start them.</small>"
            return
        try:
            self.task = asyncio.get_running_loop().create_task(self._estimate(config))
        except RuntimeError:  # no event loop runs (outside a kernel): there is nothing to ask from
            self.value = "<small>No event loop runs here: estimates show in a notebook.</small>"

    async def settled(self) -> None:
        """Until the estimate asked for last has been shown."""
        while self.task is not None and not self.task.done():
            await asyncio.wait({self.task})

    async def _estimate(self, config: LaunchConfig) -> None:
        await asyncio.sleep(DEBOUNCE)
        config, refused = check_allocation(config, self.policy, self.policy.partition)
        if refused:
            self.value = "<small>Not estimated: " + html.escape("; ".join(refused)) + "</small>"
            return
        self.value = "<small>Asking Slurm when this would start…</small>"
        try:
            found = await estimate_launch(self.client, config, self.policy)
        except SlurmError as error:
            self.value = f"<small>Slurm cannot tell when this would start: {html.escape(str(error))}</small>"
            return
        self.value = render(found)


def render(found: dict[str, Any]) -> str:
    """One line per estimate, each an element of its own with a line break between, so that no reader (the
    page's text, a screen reader, a copy) runs two estimates together."""
    estimate = found["estimate"]
    lines = [f"<b>{html.escape(estimate['words'])}</b>"]
    lines += [
        f"or {html.escape(entry['label'])}: {html.escape(entry['words'])}"
        for entry in found["alternatives"]
        if not entry["error"]
    ]
    return "<div class='asgard-estimate'>" + "\n".join(f"<div>{line}</div>" for line in lines) + "</div>"
