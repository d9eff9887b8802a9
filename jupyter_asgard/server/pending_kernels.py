"""jupyter_server's pending kernels, made right for kernels that wait in a Slurm queue.

An Asgard kernel may wait for its allocation for an hour. Without pending kernels POST /api/kernels holds the
request open all that time, and an HTTP client's or a proxy's timeout cuts it; with them the request answers
at once and the kernel's websocket waits for the start. What jupyter_server leaves to a websocket or gets
wrong for a long wait is put right here: a failed start marks the kernel dead with its reason at once (any
client sees why, and the culler clears it away); a kernel still waiting is not idle (the culler would shut it
down in the queue, its idle clock having started when it was submitted); and a kernel shut down in the queue
fails its start before jupyter_server cancels it (start_settled), so waiting clients are told why, and
that withdrawn start is no error in the server's log (jupyter_client and jupyter_server would log it three
times, with tracebacks).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime, timezone
from typing import Any

from traitlets.config import Configurable

from ..errors import KernelWithdrawn

Ready = asyncio.Future[Any] | concurrent.futures.Future[Any]
SETTLE_PATIENCE = 10.0  # seconds for a withdrawn kernel's start to fail (its salloc has ended by then)


def use_by_default(kernel_manager: Configurable) -> None:
    """Pending kernels on, unless a site or user set use_pending_kernels on any class of the kernel manager."""
    if not any(
        cls.__name__ in kernel_manager.config and "use_pending_kernels" in kernel_manager.config[cls.__name__]
        for cls in type(kernel_manager).mro()
    ):
        kernel_manager.use_pending_kernels = True  # type: ignore[attr-defined]


def has_started(manager: Any) -> bool:
    """Whether the kernel's start is over (it runs, or it failed)."""
    ready = getattr(manager, "ready", None)
    return ready is None or ready.done()


async def start_settled(manager: Any, patience: float = SETTLE_PATIENCE) -> None:
    """Until the kernel's start is over (asyncio.wait: waiting cancels nothing), for at most patience seconds."""
    ready = getattr(manager, "ready", None)
    if ready is not None and not ready.done():
        await asyncio.wait([asyncio.wrap_future(ready)], timeout=patience)


async def provisioner_of(manager: Any, patience: float = SETTLE_PATIENCE) -> Any:
    """The kernel manager's provisioner, which its start task makes a moment after the kernel is registered
    (None if the start ended first, or made none within patience seconds)."""
    deadline = asyncio.get_running_loop().time() + patience
    while getattr(manager, "provisioner", None) is None and not has_started(manager):
        if asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    return getattr(manager, "provisioner", None)


def settle_start(manager: Any, ready: Ready) -> None:
    """A failed start: the kernel model's state and reason, as jupyter_server's websocket sets them when it
    finds the start failed (JupyterLab shows the reason as its "Error Starting Kernel"). A kernel that runs:
    its idle time counts from now, not from its submission."""
    if ready.cancelled():
        return
    if ready.exception() is not None:
        manager.execution_state = "dead"
        manager.reason = str(ready.exception())
    else:
        manager.last_activity = datetime.now(timezone.utc)


class WithdrawnStartsUnlogged(logging.Filter):
    """Drops the records of a start that failed because its kernel was shut down while it started, as asked;
    the provisioner logs the withdrawal itself, once, at info level."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], KernelWithdrawn))


def install(kernel_manager: Any) -> None:
    """Wraps the methods of this server's kernel manager only (instance attributes, not its class's)."""
    use_by_default(kernel_manager)
    kernel_manager.log.addFilter(WithdrawnStartsUnlogged())
    kernel_manager.start_kernel = _settled(kernel_manager, kernel_manager.start_kernel)
    kernel_manager.cull_kernel_if_idle = _started_only(kernel_manager, kernel_manager.cull_kernel_if_idle)


def _settled(
    kernel_manager: Any, start_kernel: Callable[..., Awaitable[str]]
) -> Callable[..., Coroutine[Any, Any, str]]:
    async def start(*args: Any, **kwargs: Any) -> str:
        kernel_id = await start_kernel(*args, **kwargs)
        manager = kernel_manager.get_kernel(kernel_id)
        if not has_started(manager):
            manager.ready.add_done_callback(lambda ready: settle_start(manager, ready))
        return kernel_id

    return start


def _started_only(
    kernel_manager: Any, cull: Callable[[str], Awaitable[Any]]
) -> Callable[[str], Coroutine[Any, Any, Any]]:
    async def cull_if_idle(kernel_id: str) -> Any:
        if kernel_id in kernel_manager and has_started(kernel_manager.get_kernel(kernel_id)):
            return await cull(kernel_id)
        return None

    return cull_if_idle
