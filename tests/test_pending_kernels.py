"""Pending kernels on by default, and made right for kernels that wait in a Slurm queue (no cluster here:
the cluster tests are in test_server_api, test_culling and test_load)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets.config import Config

from jupyter_asgard.server.pending_kernels import has_started, settle_start, use_by_default


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({}, True),
        ({"MappingKernelManager": {"use_pending_kernels": False}}, False),  # a site's own choice is kept ...
        ({"AsyncMappingKernelManager": {"use_pending_kernels": False}}, False),  # ... on any of its classes
        ({"MappingKernelManager": {"cull_idle_timeout": 60}}, True),
    ],
)
def test_pending_kernels_are_on_unless_configured(config: dict, expected: bool) -> None:
    manager = AsyncMappingKernelManager(config=Config(config))
    use_by_default(manager)
    assert manager.use_pending_kernels is expected


async def test_a_failed_start_marks_the_kernel_dead_with_its_reason() -> None:
    ready = asyncio.get_running_loop().create_future()
    manager = SimpleNamespace(ready=ready, execution_state="starting", reason="")
    assert not has_started(manager)
    ready.set_exception(RuntimeError("Asgard kernel: the image does not exist.\nHow to fix: ..."))
    settle_start(manager, ready)
    assert has_started(manager)
    assert manager.execution_state == "dead"
    assert manager.reason.startswith("Asgard kernel: the image does not exist.")


async def test_a_started_kernel_is_idle_from_its_start_not_its_submission() -> None:
    submitted = datetime.now(timezone.utc) - timedelta(hours=1)
    ready = asyncio.get_running_loop().create_future()
    manager = SimpleNamespace(ready=ready, execution_state="starting", last_activity=submitted)
    ready.set_result(None)
    settle_start(manager, ready)
    assert manager.execution_state == "starting"  # jupyter_server sets it from the kernel's own status
    assert datetime.now(timezone.utc) - manager.last_activity < timedelta(seconds=5)
