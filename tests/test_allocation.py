"""A kernel's allocation withdrawn at the worst moments, against the real salloc: no job is ever left queued."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid

import pytest

from jupyter_asgard.errors import WITHDRAWN
from jupyter_asgard.launch.launch_config import LaunchConfig
from jupyter_asgard.slurm.allocation import Allocation
from jupyter_asgard.slurm.monitor import SlurmMonitor
from jupyter_asgard.slurm.slurm_client import SlurmClient
from tests.waiting import async_wait_for

pytestmark = pytest.mark.usefixtures("slurm_cluster", "no_kernel_jobs_left")

LOG = logging.getLogger("test_allocation")


async def no_job_named(client: SlurmClient, name: str) -> bool:
    result = await client.run(["squeue", "--noheader", f"--name={name}", "--format=%i"])
    return not result.checked().stdout.strip()


async def withdraw_as_salloc_starts(client: SlurmClient, delay: float, caller_cancelled: bool) -> None:
    allocation = Allocation(client, SlurmMonitor(client=client), LOG, f"withdrawn-{uuid.uuid4().hex[:8]}")
    config = LaunchConfig(image="unused.sqsh", gpus="1", time="0:10:00")
    starting = asyncio.ensure_future(allocation.request(config, "test", 600, dict(os.environ)))

    # From the moment salloc runs, before it can have named its job (that takes it tens of milliseconds).
    async def salloc_runs() -> bool:
        return allocation._salloc is not None or starting.done()

    await async_wait_for(salloc_runs, 5, "salloc started", interval=0.001)
    await asyncio.sleep(delay)
    withdrawing = asyncio.ensure_future(allocation.cancel())
    if caller_cancelled:
        await asyncio.sleep(0.05)
        withdrawing.cancel()
        starting.cancel()
    outcome = (await asyncio.gather(starting, return_exceptions=True))[0]
    # None: granted before the withdrawal came (an idle cluster grants within milliseconds), then released.
    assert outcome is None or isinstance(outcome, asyncio.CancelledError) or WITHDRAWN in str(outcome), outcome
    await async_wait_for(lambda: no_job_named(client, allocation.job_name), 30, f"no job ({delay}s after salloc)")
    await allocation.cancel()  # the withdrawal under way, whoever was cancelled, over
    allocation.forget()


@pytest.mark.parametrize("queued", [True, False], ids=["queued", "granted"])
@pytest.mark.parametrize("caller_cancelled", [False, True], ids=["awaited", "caller-cancelled"])
async def test_an_allocation_withdrawn_as_salloc_starts_leaves_no_job(
    request: pytest.FixtureRequest, queued: bool, caller_cancelled: bool
) -> None:
    """A salloc asked to stop before it knows its job's id ignores SIGTERM and submits the job all the same:
    the job is cancelled as soon as salloc names it. Also when whoever withdrew the allocation is cancelled
    meanwhile, as jupyter_server cancels a kernel's start it has waited for long enough. Withdrawn at once
    and a few milliseconds on: where salloc stands then varies from run to run."""
    if queued:
        request.getfixturevalue("gpus_taken")
    for delay in (0, 0.005, 0.02, 0.05):
        await withdraw_as_salloc_starts(SlurmClient(), delay, caller_cancelled)
