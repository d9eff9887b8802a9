"""The cap on terminals per kernel, as bookkeeping (unit): a terminal manager of the test's own stands in for
terminado's, which names terminals and drops those that ended. On the test cluster, with real terminals in a
real kernel's container: test_load_limits.py."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from jupyter_asgard.errors import TooBusy
from jupyter_asgard.server.kernel_terminals import KernelTerminals


class Terminals:
    """terminado's manager as KernelTerminals sees it: create() names a new terminal "1", "2", ... (the lowest
    free number, as terminado does), `terminals` holds those still open."""

    def __init__(self) -> None:
        self.terminals: dict[str, object] = {}

    def create(self, **_kwargs: Any) -> dict[str, str]:
        name = next(str(n) for n in range(1, 100) if str(n) not in self.terminals)
        self.terminals[name] = object()
        return {"name": name}


def kernel(kernel_id: str) -> SimpleNamespace:
    return SimpleNamespace(
        kernel_id=kernel_id,
        job_id="7",
        node="gpu01",
        container="pyxis_env",
        client=SimpleNamespace(resolved=lambda argv: argv),
        container_workdir=lambda: "/work",
        launch_dir="/tmp",
        kernel_spec=SimpleNamespace(display_name="Asgard"),
        parent=None,
    )


def test_a_kernel_gets_so_many_terminals_and_one_more_when_one_has_ended() -> None:
    manager, opened, first, second = Terminals(), KernelTerminals(), kernel("k1"), kernel("k2")
    names = [opened.open(manager, first, ["bash"], most=2)["name"] for _ in range(2)]
    with pytest.raises(TooBusy) as refused:
        opened.open(manager, first, ["bash"], most=2)
    assert refused.value.status == 429
    assert "has 2 terminals open" in refused.value.message
    assert "c.AsgardSite.max_terminals_per_kernel = 2" in refused.value.message and "close one" in refused.value.message
    assert opened.open(manager, second, ["bash"], most=2)["name"] == "3"  # another kernel's count is its own
    del manager.terminals[names[0]]  # its shell ended
    assert opened.open(manager, first, ["bash"], most=2)["name"] == names[0]


def test_a_terminal_of_another_kernel_under_a_reused_name_does_not_count() -> None:
    manager, opened = Terminals(), KernelTerminals()
    name = opened.open(manager, kernel("k1"), ["bash"], most=1)["name"]
    del manager.terminals[name]
    manager.create()  # a terminal of the server's own host, under the name that is free again
    assert opened.open(manager, kernel("k1"), ["bash"], most=1)["name"] == "2"
