"""The cache that keeps a refresh loop from turning into a loop of Slurm calls or directory scans (unit, with a
clock of the test's own: nothing here waits for time to pass)."""

from __future__ import annotations

import asyncio

import pytest

from jupyter_asgard.site import timed_cache
from jupyter_asgard.site.timed_cache import TimedCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Maker:
    """Answers with how many calls were made; while `held`, calls wait for release()."""

    def __init__(self) -> None:
        self.calls = 0
        self.held = asyncio.Event()
        self.held.set()

    async def __call__(self) -> int:
        self.calls += 1
        made = self.calls
        await self.held.wait()
        return made


async def test_one_answer_serves_within_its_time_and_a_new_one_is_made_after() -> None:
    clock, make = Clock(), Maker()
    cache: TimedCache[int] = TimedCache(10, clock)
    assert await cache.get("a", make) == 1
    clock.now += 9.9
    assert await cache.get("a", make) == 1
    assert await cache.get("b", make) == 2  # another key, another answer
    clock.now += 0.2
    assert await cache.get("a", make) == 3


async def test_concurrent_callers_share_one_call_also_with_no_cache_time() -> None:
    make = Maker()
    make.held.clear()
    cache: TimedCache[int] = TimedCache(0, Clock())
    waiting = [asyncio.ensure_future(cache.get("a", make)) for _ in range(5)]
    await asyncio.sleep(0)
    make.held.set()
    assert await asyncio.gather(*waiting) == [1] * 5
    assert await cache.get("a", make) == 2  # 0 keeps nothing once the call is over


async def test_a_failed_call_is_not_kept() -> None:
    cache: TimedCache[int] = TimedCache(10, Clock())

    async def failing() -> int:
        raise RuntimeError("Slurm is down")

    with pytest.raises(RuntimeError):
        await cache.get("a", failing)
    assert await cache.get("a", Maker()) == 1


async def test_forget_drops_kept_answers_and_what_a_call_under_way_brings() -> None:
    clock, make = Clock(), Maker()
    cache: TimedCache[int] = TimedCache(10, clock)
    assert await cache.get("a", make) == 1
    cache.forget()
    make.held.clear()
    older = asyncio.ensure_future(cache.get("a", make))  # call 2, begun before the next forget()
    await asyncio.sleep(0)
    cache.forget()
    newer = asyncio.ensure_future(cache.get("a", make))  # does not join the older call
    await asyncio.sleep(0)
    make.held.set()
    assert (await older, await newer) == (2, 3)
    assert await cache.get("a", make) == 3  # the newer answer is kept, the older one was not


async def test_at_most_so_many_answers_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timed_cache, "MOST_KEPT", 3)
    make = Maker()
    cache: TimedCache[int] = TimedCache(10, Clock())
    for key in "abcd":
        await cache.get(key, make)
    assert await cache.get("d", make) == 4
    assert await cache.get("a", make) == 5  # the oldest went
