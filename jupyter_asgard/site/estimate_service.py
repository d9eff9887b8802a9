"""The server's estimates as a shared service: bounded and briefly cached, because each one costs the cluster's
slurmctld up to four `srun --test-only` calls, and a panel (or a script) can ask in a loop.

At most `at_once` srun --test-only run at once for the whole server, and at most `at_once` requests are being
answered: one more is refused at once with TooBusy (429) instead of queueing without end. The same launch
configuration asked again within `cache_seconds` gets the same answer without asking Slurm again.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

from ..errors import TooBusy
from ..launch.launch_config import LaunchConfig
from ..slurm.slurm_client import SlurmClient
from .estimates import estimate_launch
from .site_policy import SitePolicy
from .timed_cache import TimedCache

AT_ONCE_TRAIT = "c.AsgardSite.estimates_at_once"


class EstimateService:
    """estimate_launch for a server's requests: cached by configuration, bounded in srun calls and requests."""

    def __init__(
        self,
        client: SlurmClient,
        policy: SitePolicy,
        at_once: int,
        cache_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.policy = policy
        self.at_once = max(at_once, 1)
        self.answering = 0  # requests being answered now
        self._sruns = asyncio.Semaphore(self.at_once)
        self._answers: TimedCache[dict[str, Any]] = TimedCache(cache_seconds, clock)

    async def estimate(self, config: LaunchConfig) -> dict[str, Any]:
        """The estimate of a checked configuration: kept, shared with the same request under way, or asked."""
        key = json.dumps(config.to_json(), sort_keys=True)
        return await self._answers.get(key, lambda: self._asked(config))

    async def _asked(self, config: LaunchConfig) -> dict[str, Any]:
        if self.answering >= self.at_once:
            raise TooBusy(
                f"{self.answering} start-time estimates are being asked of Slurm for this server already, the "
                f"most the site allows at once ({AT_ONCE_TRAIT} = {self.at_once}): try again in a few seconds"
            )
        self.answering += 1
        try:
            return await estimate_launch(self.client, config, self.policy, self._sruns)
        finally:
            self.answering -= 1
