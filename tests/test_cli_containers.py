"""`jupyter asgard containers` (cli/containers.py) without a cluster: its table, its JSON, several servers'
listings as one, and its refusals; the servers are replaced. The real thing is in
tests/test_container_removal_jobs.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jupyter_asgard.cli import containers as cli_containers
from jupyter_asgard.cli.cli import main
from jupyter_asgard.kernel.container_places import ContainerPlace, ContainerPlaces


def entry(name: str, nodes: list[str], kernels: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
    """A container's entry as GET /asgard/api/containers lists it."""
    return {
        "name": name,
        "nodes": nodes,
        "image": "/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh",
        "writable": True,
        "last_use": "2026-12-07T12:26:55+00:00",
        "places": [],
        "kernels": kernels,
        **fields,
    }


def test_the_table_shows_name_nodes_image_writable_last_use_and_kernels() -> None:
    entries = [
        entry("env", ["gpu02", "gpu01"], [{"kernel_id": "5f1c2d3e-aaaa", "node": "gpu02"}]),
        entry("x", ["gpu01"], [], image="", writable=None, last_use=""),
    ]
    assert cli_containers.render(entries).splitlines() == [
        "NAME  NODES         IMAGE                                          WRITABLE       LAST USE                 "
        "KERNELS",
        "env   gpu02, gpu01  /enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh  yes            2026-12-07 12:26:55 UTC  "
        "5f1c2d3e on gpu02",
        "x     gpu01         -                                              Pyxis default  -                        -",
        cli_containers.REMOVE_HINT,
    ]


def test_no_containers_is_said_with_when_there_are_some() -> None:
    assert "once a kernel of yours has run in it" in cli_containers.render([])


def test_several_servers_listings_are_one_list_with_each_server_s_kernels() -> None:
    first = [entry("env", ["gpu02"], [{"kernel_id": "a", "node": "gpu02"}]), entry("x", ["gpu01"], [])]
    second = [entry("env", ["gpu02"], [{"kernel_id": "b", "node": "gpu02"}]), entry("y", ["gpu01"], [])]
    merged = cli_containers.merged([first, second])
    assert [(found["name"], [kernel["kernel_id"] for kernel in found["kernels"]]) for found in merged] == [
        ("env", ["a", "b"]),
        ("x", []),
        ("y", []),
    ]


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Callable[[dict[str, list[dict[str, Any]]]], list[tuple[str, str]]]:
    """Running servers answering GET with the given listings (by URL) and DELETE with a removal; the requests
    they got."""
    requests: list[tuple[str, str]] = []

    def use(listings: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
        def call(server: dict[str, Any], method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
            requests.append((method, server["url"] + path))
            if method == "GET":
                return {"containers": listings[server["url"]]}
            return {"name": "env", "removed": [{"node": "gpu01", "gone_already": False}], "message": "removed"}

        monkeypatch.setattr(cli_containers, "running_servers", lambda: [{"url": url} for url in listings])
        monkeypatch.setattr(cli_containers, "call", call)
        return requests

    return use


def test_a_container_a_kernel_of_another_server_runs_in_is_refused_before_any_removal(
    servers: Callable[[dict[str, list[dict[str, Any]]]], list[tuple[str, str]]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    requests = servers(
        {
            "http://a": [entry("env", ["gpu02", "gpu01"], [])],
            "http://b": [entry("env", ["gpu02", "gpu01"], [{"kernel_id": "b-kernel", "node": "gpu02"}])],
        }
    )
    assert main(["containers", "remove", "env"]) == 1
    error = capsys.readouterr().err
    assert "error: your container env is in use: kernel b-kernel on gpu02 runs in it" in error
    assert "How to fix: shut the kernel down first" in error
    assert [method for method, _url in requests] == ["GET", "GET"]
    # From the node that kernel is not on, it goes, through the first server.
    assert main(["containers", "remove", "env", "--node", "gpu01"]) == 0
    assert requests[-1] == ("DELETE", "http://a/asgard/api/containers/env?node=gpu01")
    assert capsys.readouterr().out == "removed\n"


def test_without_a_server_the_command_reads_the_record_and_says_kernels_are_not_shown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(cli_containers, "running_servers", lambda: [])
    ContainerPlaces().seen(ContainerPlace("env", "gpu02", "/enroot/pt.sqsh", False, "gpu"), True)
    assert main(["containers", "--json"]) == 0
    shown = capsys.readouterr()
    [found] = json.loads(shown.out)["containers"]
    assert (found["name"], found["nodes"], found["writable"], found["kernels"]) == ("env", ["gpu02"], False, [])
    assert shown.err == f"note: {cli_containers.NO_SERVER}\n"


def test_a_refusal_exits_1_with_the_message_and_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(cli_containers, "running_servers", lambda: [])
    assert main(["containers", "remove", "nothing"]) == 1
    error = capsys.readouterr().err.splitlines()
    assert error[0] == (
        "jupyter asgard containers remove: error: no container 'nothing' of yours is recorded on any node: "
        "`jupyter asgard containers` lists your containers and their nodes"
    )
    assert error[1].startswith("How to fix: a container is recorded once a kernel of yours has run in it")
    assert main(["containers", "remove", "a/b"]) == 1
    assert "is not a container's name" in capsys.readouterr().err
