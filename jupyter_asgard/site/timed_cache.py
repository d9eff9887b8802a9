"""Answers kept for a while and shared: what keeps a user's refresh loop from turning into a loop of Slurm calls
or directory scans.

One answer per key serves every caller within the cache time, and callers that ask while it is being made wait
for that one call instead of starting their own. A call that fails is not kept (the next caller tries again).
The clock is passed in, so that the timing is tested without waiting.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

Value = TypeVar("Value")

MOST_KEPT = 256  # answers kept at most: a loop of different requests cannot grow the server's memory


class TimedCache(Generic[Value]):
    """Answers by key for `seconds` after they were made (0: none kept, only concurrent callers share one)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._kept: dict[Hashable, tuple[float, Value]] = {}
        self._calls: dict[Hashable, asyncio.Future[Value]] = {}
        self._generation = 0  # counts forget(): a call begun before the latest one keeps nothing

    async def get(self, key: Hashable, make: Callable[[], Awaitable[Value]]) -> Value:
        """The kept answer while it is fresh, else the one call under way for key, else a new call of make."""
        kept = self._kept.get(key)
        if kept is not None and self.clock() - kept[0] < self.seconds:
            return kept[1]
        call = self._calls.get(key)
        if call is None:
            call = self._calls[key] = asyncio.ensure_future(self._made(key, make, self._generation))
        # One caller that gives up (a closed connection) does not cancel the answer the others wait for.
        return await asyncio.shield(call)

    async def _made(self, key: Hashable, make: Callable[[], Awaitable[Value]], generation: int) -> Value:
        try:
            value = await make()
        finally:
            if generation == self._generation:  # else forget() dropped this call, and a newer one may be under way
                self._calls.pop(key, None)
        if self.seconds > 0 and generation == self._generation:
            self._kept.pop(key, None)
            self._kept[key] = (self.clock(), value)
            while len(self._kept) > MOST_KEPT:
                del self._kept[next(iter(self._kept))]  # the oldest: dicts keep the order of insertion
        return value

    def forget(self) -> None:
        """Every answer is stale (this server changed what they describe): the next caller asks anew, also
        while an older call is still under way."""
        self._generation += 1
        self._kept.clear()
        self._calls.clear()
