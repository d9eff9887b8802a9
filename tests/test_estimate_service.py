"""The server's estimates bounded and cached (unit): the bound is held by a client of the test's own that counts
the srun calls under way and answers when the test lets it, and a clock of the test's own ages the cache. On the
test cluster, with the real srun: test_load_limits.py."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from jupyter_asgard.errors import TooBusy
from jupyter_asgard.launch.launch_config import LaunchConfig
from jupyter_asgard.site.estimate_service import EstimateService
from jupyter_asgard.site.site_policy import SitePolicy
from jupyter_asgard.slurm.slurm_client import CommandResult, SlurmClient

ANSWER = "srun: Job 12 to start at 2026-11-30T14:35:00 using 1 processors on nodes gpu02 in partition gpu\n"


class CountingClient:
    """Runs no process: counts the calls under way (and the most at once), and answers each once released."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.calls = 0
        self.released = asyncio.Event()

    async def run(self, argv: list[str], timeout: float | None = None) -> CommandResult:
        assert "--test-only" in argv
        self.calls += 1
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.released.wait()
            return CommandResult(0, "", ANSWER)
        finally:
            self.running -= 1


def service(client: CountingClient, at_once: int, cache_seconds: float, clock: Any = None) -> EstimateService:
    policy = SitePolicy(check_paths=False)
    return EstimateService(cast(SlurmClient, client), policy, at_once, cache_seconds, clock or (lambda: 0.0))


def config(time: str) -> LaunchConfig:
    """A configuration of three estimates: itself, one GPU instead of two, a shorter time limit."""
    return LaunchConfig.parse({"image": "/enroot/x.sqsh", "gpus": "2", "time": time})


async def test_a_burst_runs_at_most_so_many_sruns_at_once_and_the_rest_is_refused_with_the_limit_named() -> None:
    client = CountingClient()
    estimates = service(client, at_once=2, cache_seconds=0)
    burst = [asyncio.ensure_future(estimates.estimate(config(f"{hours}:00:00"))) for hours in range(2, 8)]
    await asyncio.wait_for(asyncio.wait(burst[2:]), 10)  # asyncio runs them in order: the first two are admitted
    assert client.running == 2 and not any(request.done() for request in burst[:2])
    client.released.set()
    answers = await asyncio.gather(*burst, return_exceptions=True)
    refused = [answer for answer in answers if isinstance(answer, TooBusy)]
    answered = [answer for answer in answers if isinstance(answer, dict)]
    assert (len(answered), len(refused)) == (2, 4), answers
    assert client.most == 2 and client.calls == 2 * 3
    assert all(answer["estimate"]["nodes"] == "gpu02" and len(answer["alternatives"]) == 2 for answer in answered)
    assert refused[0].status == 429
    assert "c.AsgardSite.estimates_at_once = 2" in refused[0].message and "try again" in refused[0].message
    assert (await estimates.estimate(config("9:00:00")))["estimate"]["nodes"] == "gpu02"  # room again


@pytest.mark.parametrize(("cache_seconds", "calls"), [(10, 3), (0, 6)])
async def test_the_same_configuration_is_answered_from_the_cache_within_its_time(
    cache_seconds: float, calls: int
) -> None:
    client = CountingClient()
    client.released.set()
    now = [0.0]
    estimates = service(client, at_once=4, cache_seconds=cache_seconds, clock=lambda: now[0])
    first = await estimates.estimate(config("2:00:00"))
    now[0] = 9.9
    assert await estimates.estimate(config("2:00:00")) == first
    assert client.calls == calls
    now[0] = 10.0
    await estimates.estimate(config("2:00:00"))
    assert client.calls == calls + 3
