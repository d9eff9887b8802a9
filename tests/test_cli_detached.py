"""``jupyter asgard status`` for detachable kernels: the detached kernels a server found and did not take over,
and those that ended while detached."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jupyter_asgard.cli import cli
from jupyter_asgard.cli.cli import main
from jupyter_asgard.cli.status import RELEASE_HINT, UNKNOWN, Status, render

KERNEL = "0123abcd-1111-2222-3333-444455556666"
OTHER = "0123ffff-1111-2222-3333-444455556666"


def server_row(**values: Any) -> dict[str, Any]:
    """A kernel row as a server reports it, and as status adds where it came from."""
    row = {"kernel_id": KERNEL, "kernel_name": "asgard-detachable", "state": "RUNNING", "node": "gpu01"}
    return {**row, "job_id": "41", "path": "work/a.ipynb", "server": "http://a/", "known_to_server": True, **values}


FOUND = {
    "kernel_id": OTHER,
    "kernel_name": "asgard-old",
    "job_id": "42",
    "node": "gpu02",
    "path": "b.ipynb",
    "held_by": "",
    "why": "its kernelspec 'asgard-old' no longer exists; release it, or make the kernelspec again",
    "server": "http://b/",
}
ENDED = {"kernel_id": "9999eeee-0000", "job_id": "40", "path": "", "why": "it reached its time limit"}


def lines_with(output: str, word: str) -> list[str]:
    return [line for line in output.splitlines() if word in line.split()]


# --- rendering, no cluster ------------------------------------------------------------------------------


def test_a_detachable_kernel_is_marked_and_the_detached_sections_follow_the_table() -> None:
    shown = render(
        Status([server_row(detachable=True), server_row(kernel_id="5555", job_id="7")], found=[FOUND], ended=[ENDED])
    )

    lines = shown.splitlines()
    assert lines_with(shown, "0123abcd")[0].endswith("work/a.ipynb @ http://a/ (detachable)")
    assert lines_with(shown, "5555")[0].endswith("@ http://a/"), "a kernel that is not detachable has no mark"
    found = lines.index("Detached kernels a Jupyter server of yours found and did not take over:")
    assert lines[found + 1].split()[:6] == ["KERNEL", "KERNELSPEC", "JOB", "NODE", "NOTEBOOK", "WHY"]
    assert lines[found + 2].split()[:5] == ["0123ffff", "asgard-old", "42", "gpu02", "b.ipynb"]
    assert lines[found + 2].endswith(FOUND["why"]) and lines[found + 3] == RELEASE_HINT
    ended = lines.index("Detached kernels that ended while no Jupyter server held them:")
    assert lines[ended + 2].split()[:3] == ["9999eeee", "40", "-"] and lines[ended + 2].endswith(ENDED["why"])


def test_without_detached_kernels_status_shows_the_table_alone() -> None:
    assert render(Status([server_row()])).splitlines()[-1].split()[0] == "0123abcd"
    assert render(Status()) == "No Asgard kernels."


def test_a_detached_job_no_server_knows_is_released_not_scancelled() -> None:
    unknown = server_row(known_to_server=False, server="", path="", detachable=True)

    shown = render(Status([unknown]))

    assert lines_with(shown, "0123abcd")[0].endswith(f"{UNKNOWN} (detachable)")
    assert shown.splitlines()[-1] == RELEASE_HINT and "scancel" not in shown, "scancel would leave its record"


def test_a_detached_kernel_two_servers_found_is_listed_once() -> None:
    seen_by_c = {**FOUND, "server": "http://c/"}

    merged = Status.merged([Status(found=[FOUND]), Status(found=[seen_by_c], ended=[ENDED]), Status(ended=[ENDED])])

    assert merged.found == [FOUND] and merged.ended == [ENDED]


def test_status_json_holds_the_kernels_and_the_detached_ones(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "collect", lambda timeout: Status([server_row()], ["a note"], [FOUND], [ENDED]))

    assert main(["status", "--json"]) == 0

    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"kernels": [server_row()], "detached": {"found": [FOUND], "ended": [ENDED]}}
    assert captured.err == "note: a note\n"
