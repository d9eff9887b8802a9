"""The one way tests wait for something the cluster or a server does in its own time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.25) -> T:
    """probe's first truthy answer within timeout; else the test fails naming what did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        answer = probe()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        time.sleep(interval)


async def async_wait_for(
    probe: Callable[[], Awaitable[object]], timeout: float, what: str, interval: float = 0.25
) -> None:
    """As wait_for, in an event loop that goes on meanwhile (a withdrawal under way in it, say)."""
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:.0f}s: {what}")
        await asyncio.sleep(interval)
