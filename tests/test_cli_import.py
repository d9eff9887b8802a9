"""``jupyter asgard import``: its arguments, what it says while an import runs, its output and exit status, and
Ctrl-C, with the import's runner (a server's REST API, or this process) replaced: no Slurm here. The real
imports, through a server and without one, are in tests/test_image_import_ui.py."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jupyter_asgard.cli import image_import
from jupyter_asgard.cli.cli import build_parser, main
from jupyter_asgard.cli.image_import import follow
from jupyter_asgard.errors import ServerRefused

URI = "docker://nvcr.io#nvidia/pytorch:24.05-py3"
PATH = "/netscratch/ada/images/pytorch.sqsh"


def state(status: str, state: str = "importing", **changes: Any) -> dict[str, Any]:
    """An import's JSON as the server answers it."""
    return {
        "id": "abc",
        "uri": URI,
        "name": "pytorch",
        "path": PATH,
        "state": state,
        "status": status,
        "message": "",
        "hint": "",
        **changes,
    }


class FakeRunner:
    """A runner that answers the given states in turn, each `next` after `pause` seconds."""

    where = "in a test"

    def __init__(self, states: list[dict[str, Any]], pause: float = 0.0) -> None:
        self.states = iter(states)
        self.pause = pause
        self.started: list[tuple[str, str]] = []
        self.cancelled: list[str] = []

    async def start(self, uri: str, name: str) -> dict[str, Any]:
        self.started.append((uri, name))
        return next(self.states)

    async def next(self, import_id: str) -> dict[str, Any]:
        await asyncio.sleep(self.pause)
        return next(self.states)

    async def cancel(self, import_id: str) -> dict[str, Any]:
        self.cancelled.append(import_id)
        return state("cancelled", "cancelled", message="cancelled")


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[FakeRunner], None]]:
    """Make `jupyter asgard import` use a fake runner, as if no server ran."""

    def use(fake: FakeRunner) -> None:
        monkeypatch.setattr(image_import, "server_for_imports", lambda: None)
        monkeypatch.setattr(image_import, "LocalImports", lambda: fake)

    yield use


def test_the_arguments_uri_an_optional_name_and_json() -> None:
    args = build_parser().parse_args(["import", URI])
    assert (args.uri, args.name, args.json) == (URI, "", False)
    args = build_parser().parse_args(["import", URI, "pytorch", "--json"])
    assert (args.uri, args.name, args.json) == (URI, "pytorch", True)


def test_without_a_uri_it_says_so_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["import"]) == 2
    error = capsys.readouterr().err
    assert "jupyter asgard import: error: the following arguments are required: URI" in error
    assert error.count("\n") == 1


def test_each_new_status_line_once_then_the_path(
    runner: Callable[[FakeRunner], None], capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeRunner(
        [
            state("submitting the import job", "queued"),
            state("waiting in the Slurm queue (job 12)", "queued", job_id="12"),
            state("waiting in the Slurm queue (job 12)", "queued", job_id="12"),
            state("downloading layers 1 of 2"),
            state("downloading layers 2 of 2"),
            state(f"imported as {PATH}", "imported"),
        ]
    )
    runner(fake)
    assert main(["import", URI, "pytorch"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{PATH}\n"
    assert err.splitlines() == [
        f"importing {URI} as {PATH} in a test",
        "submitting the import job",
        "waiting in the Slurm queue (job 12)",
        "downloading layers 1 of 2",
        "downloading layers 2 of 2",
    ]
    assert fake.started == [(URI, "pytorch")]


def test_json_prints_the_import_at_its_end(
    runner: Callable[[FakeRunner], None], capsys: pytest.CaptureFixture[str]
) -> None:
    runner(FakeRunner([state("waiting", "queued"), state(f"imported as {PATH}", "imported", size=4096)]))
    assert main(["import", URI, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == state(f"imported as {PATH}", "imported", size=4096)


def test_a_failed_import_exits_1_with_its_message_and_hint(
    runner: Callable[[FakeRunner], None], capsys: pytest.CaptureFixture[str]
) -> None:
    failed = state(
        "the registry has no tag 24.05-py3",
        "failed",
        message="the registry has no tag 24.05-py3",
        hint="check the tag on the registry's page",
    )
    runner(FakeRunner([state("waiting", "queued"), failed]))
    assert main(["import", URI, "--json"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out)["state"] == "failed"
    assert err.splitlines()[-2:] == [
        "jupyter asgard import: error: the registry has no tag 24.05-py3",
        "How to fix: check the tag on the registry's page",
    ]


def test_a_refusal_exits_1_in_the_servers_words(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise ServerRefused(409, "/x/pytorch.sqsh exists already", hint="choose another name")

    monkeypatch.setattr(image_import, "server_for_imports", lambda: {"url": "http://127.0.0.1:1"})
    monkeypatch.setattr(image_import, "call", refuse)
    assert main(["import", URI, "pytorch"]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "jupyter asgard import: error: /x/pytorch.sqsh exists already",
        "How to fix: choose another name",
    ]


def test_ctrl_c_cancels_the_import_and_says_so(
    runner: Callable[[FakeRunner], None], capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGINT as a terminal's Ctrl-C sends it: asyncio.run cancels the command's task, which cancels the import."""
    fake = FakeRunner([state("waiting in the Slurm queue (job 12)", "queued")] * 100, pause=0.1)
    runner(fake)
    timer = threading.Timer(0.5, signal.raise_signal, (signal.SIGINT,))
    timer.start()
    try:
        assert main(["import", URI]) == 130
    finally:
        timer.cancel()
    assert fake.cancelled == ["abc"]
    err = capsys.readouterr().err
    assert "interrupted: cancelling the import ..." in err
    assert err.endswith(f"jupyter asgard import: cancelled: nothing of {URI} was kept\n")


async def test_follow_says_nothing_twice_and_returns_the_end() -> None:
    said: list[str] = []
    fake = FakeRunner([state("a", "queued"), state("a", "queued"), state("b"), state("done", "imported")])
    found = await follow(fake, URI, "", said.append)
    assert found["state"] == "imported"
    assert said == [f"importing {URI} as {PATH} in a test", "a", "b"]
