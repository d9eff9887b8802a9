"""How long a kernel has been idle, and when jupyter_server's culler will shut it down, as the culler decides.

An idle kernel holds GPUs nobody uses. jupyter_server's culler
(``c.MappingKernelManager.cull_idle_timeout``, ``cull_interval``, ``cull_connected``,
``cull_busy``, and a kernelspec's own ``metadata.cull_idle_timeout``) shuts it
down, and an Asgard kernel's shutdown releases its allocation. This reads the
same settings and state the culler reads, so the side panel can show the
countdown and warn before it ends; no server import, only what the kernel
manager and its parent (the server's MappingKernelManager) carry.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from traitlets import TraitError

from .pending_kernels import has_started


def cull_countdown(kernel_manager: Any, kernel_id: str, now: datetime | None = None) -> tuple[int | None, int | None]:
    """(seconds the kernel has been idle, seconds until the culler shuts it down); None where the server does
    not track its activity, or will not cull it (culling off, a busy kernel, a connected one, or one still
    waiting for its allocation)."""
    if not has_started(kernel_manager):
        return None, None
    try:
        last = getattr(kernel_manager, "last_activity", None)
    except TraitError:  # jupyter_server's kernel manager before its kernel started (one waiting in the queue)
        return None, None
    if not isinstance(last, datetime):
        return None, None
    idle = max(0, int(((now or datetime.now(timezone.utc)) - last).total_seconds()))
    kernels = getattr(kernel_manager, "parent", None)
    metadata = getattr(getattr(kernel_manager, "kernel_spec", None), "metadata", None) or {}
    timeout = metadata.get("cull_idle_timeout", getattr(kernels, "cull_idle_timeout", 0))
    if not timeout or timeout <= 0:
        return idle, None
    if getattr(kernel_manager, "execution_state", "") == "busy" and not getattr(kernels, "cull_busy", False):
        return idle, None
    connections = getattr(kernels, "_kernel_connections", {}).get(kernel_id, 0)
    if connections and not getattr(kernels, "cull_connected", False):
        return idle, None
    return idle, max(0, int(timeout) - idle)
