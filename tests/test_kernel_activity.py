"""A server whose kernel runs a silent cell or waits for its allocation counts as in use (kernel_activity.py), in
jupyter_server's own last activity, which a JupyterHub's idle culler reads."""

from __future__ import annotations

import concurrent.futures
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from jupyter_server.serverapp import ServerWebApplication

from jupyter_asgard.server.kernel_activity import SETTING, KernelActivity, kernels_in_use, look_interval

EARLIER = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)


def kernel(state: str, started: bool = True) -> Any:
    ready: concurrent.futures.Future[None] = concurrent.futures.Future()
    if started:
        ready.set_result(None)
    return SimpleNamespace(execution_state=state, ready=ready)


def kernels(*managers: Any) -> Any:
    by_id = {str(index): manager for index, manager in enumerate(managers)}
    return SimpleNamespace(list_kernel_ids=lambda: list(by_id), get_kernel=by_id.__getitem__)


@pytest.mark.parametrize(
    ("managers", "in_use"),
    [
        ((), False),
        ((kernel("idle"), kernel("starting")), False),  # started, between messages
        ((kernel("idle"), kernel("busy")), True),  # a cell runs, silent or not
        ((kernel("idle"), kernel("starting", started=False)), True),  # queued, or its container starting
    ],
)
def test_a_kernel_that_runs_a_cell_or_has_not_started_is_in_use(managers: tuple[Any, ...], in_use: bool) -> None:
    assert kernels_in_use(kernels(*managers)) is in_use


def test_the_server_s_last_activity_as_jupyter_server_reckons_it_follows_a_kernel_in_use() -> None:
    manager = kernels(kernel("busy"))
    settings: dict[str, Any] = {
        "started": EARLIER,
        "kernel_manager": SimpleNamespace(last_kernel_activity=EARLIER),
        "last_activity_times": {},
    }
    web_app = SimpleNamespace(settings=settings)
    activity = KernelActivity(settings, manager)
    activity.look()
    now = ServerWebApplication.last_activity(web_app)  # type: ignore[arg-type]
    assert now - datetime.now(timezone.utc) < timedelta(seconds=5) and now > EARLIER

    manager.get_kernel("0").execution_state = "idle"
    settings[SETTING] = EARLIER  # an idle server: its activity stays where it was
    activity.look()
    assert ServerWebApplication.last_activity(web_app) == EARLIER  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("environ", "seconds"),
    [({}, 30.0), ({"JUPYTERHUB_ACTIVITY_INTERVAL": "5"}, 5.0), ({"JUPYTERHUB_ACTIVITY_INTERVAL": "300"}, 30.0)],
)
def test_it_looks_as_often_as_the_hub_asks_and_at_least_every_half_minute(
    environ: dict[str, str], seconds: float
) -> None:
    assert look_interval(environ) == seconds
    assert look_interval({"JUPYTERHUB_ACTIVITY_INTERVAL": "soon"}) == 30.0
