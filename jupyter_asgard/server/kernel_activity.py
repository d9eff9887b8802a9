"""A server whose kernel runs a cell, or still waits for its allocation, is in use, also when nothing reaches it.

jupyter_server counts a kernel as active when it sends a message. A GPU kernel that trains for hours in one
silent cell sends none, and a kernel waiting in the Slurm queue none either: JupyterHub's idle culler, which
reads the server's last activity (jupyterhub-singleuser reports it every JUPYTERHUB_ACTIVITY_INTERVAL), would
stop the server under them, cutting the cell short or withdrawing the queued kernel. jupyter_server adds every
web-application setting whose name ends in ``_last_activity`` to its last activity: this keeps one of them at
the present time while any kernel is busy or starting.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from datetime import datetime, timezone
from typing import Any

from tornado.ioloop import PeriodicCallback

from .pending_kernels import has_started

SETTING = "asgard_kernels_last_activity"
LONGEST_INTERVAL = 30.0  # seconds between looks, at most: a hub's culler looks every few minutes


def kernels_in_use(kernel_manager: Any) -> bool:
    """Whether one of the server's kernels runs a cell or has not started yet (queued, or its container starting)."""
    for kernel_id in kernel_manager.list_kernel_ids():
        manager = kernel_manager.get_kernel(kernel_id)
        if not has_started(manager) or getattr(manager, "execution_state", "") == "busy":
            return True
    return False


def look_interval(environ: MutableMapping[str, str] | None = None) -> float:
    """As often as a hub asks the server for its activity, and at least every LONGEST_INTERVAL seconds."""
    reported = (environ if environ is not None else os.environ).get("JUPYTERHUB_ACTIVITY_INTERVAL", "")
    try:
        return max(1.0, min(LONGEST_INTERVAL, float(reported)))
    except ValueError:
        return LONGEST_INTERVAL


class KernelActivity:
    """Keeps ``settings[SETTING]`` at the time of the last look that found a kernel in use."""

    def __init__(self, settings: MutableMapping[str, Any], kernel_manager: Any) -> None:
        self.settings, self.kernel_manager = settings, kernel_manager
        self._looks = PeriodicCallback(self.look, look_interval() * 1000)

    def start(self) -> None:
        self._looks.start()

    def stop(self) -> None:
        self._looks.stop()

    def look(self) -> None:
        if kernels_in_use(self.kernel_manager):
            self.settings[SETTING] = datetime.now(timezone.utc)
