"""``jupyter asgard status`` and ``release`` for detachable kernels: the detached kernels a server found and did
not take over, those that ended while detached, and ending one, through a server or, with none running, from
the user's records. Rendering and the records' refusals need no cluster; the rest runs on the real one."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jupyter_asgard.cli import cli
from jupyter_asgard.cli.cli import main
from jupyter_asgard.cli.status import RELEASE_HINT, UNKNOWN, Status, render
from jupyter_asgard.kernel.detach_records import KernelRecord, private_root, records_root, server_id
from tests.detaching import SITE, kernel_row, killed, records, release_left_kernels, wait_for
from tests.kernels import kernel_jobs
from tests.server import JupyterServer, started_server

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


# --- release from the records, no cluster ---------------------------------------------------------------


@pytest.fixture
def no_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A user with no running Jupyter server: empty runtime files, records in a data dir of the test's."""
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    return records_root()


def recorded(kernel_id: str, held_by: str = "", job_id: str = "") -> KernelRecord:
    record = KernelRecord(private_root(), kernel_id)
    record.create()
    record.write({"kernel_name": "asgard-detachable", "job_id": job_id, "connection": {}})
    record.hold(held_by)
    return record


def released(capsys: pytest.CaptureFixture[str], kernel_id: str) -> tuple[int, str, str]:
    status = main(["release", kernel_id])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_an_unknown_kernel_id_says_so_and_where_the_ids_are(
    no_servers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded(KERNEL)

    status, out, err = released(capsys, "feed")

    assert (status, out) == (1, "")
    assert err.startswith("jupyter asgard release: error: no detached kernel 'feed' of yours")
    assert "`jupyter asgard status` lists" in err and err.count("\n") == 1
    assert (no_servers / KERNEL).is_dir()


def test_a_kernel_nobody_holds_is_released_from_the_records_by_a_unique_prefix(
    no_servers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded(KERNEL)
    recorded("7777aaaa")

    assert released(capsys, "0123")[:2] == (
        0,
        f"released detached kernel {KERNEL} (no Jupyter server of yours had found it)\n",
    )

    assert not (no_servers / KERNEL).exists() and (no_servers / "7777aaaa").is_dir()


def test_an_ambiguous_prefix_asks_for_more_of_the_id(no_servers: Path, capsys: pytest.CaptureFixture[str]) -> None:
    recorded(KERNEL)
    recorded(OTHER)

    status, _, err = released(capsys, "0123")

    assert status == 1 and "'0123' names 2 kernels: give more of the kernel id" in err
    assert (no_servers / KERNEL).is_dir() and (no_servers / OTHER).is_dir()


def test_a_kernel_a_live_server_holds_is_not_released_from_the_records(
    no_servers: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded(KERNEL, held_by=server_id())  # this process, on this host: alive, and refreshed just now

    status, _, err = released(capsys, KERNEL)

    assert status == 1 and "is not detached: a Jupyter server of yours on" in err and "shut it down there" in err
    assert not (no_servers / KERNEL / "released").exists()


# --- on the cluster ---------------------------------------------------------------------------------------


def asgard(server: JupyterServer, *args: str) -> subprocess.CompletedProcess[str]:
    """`jupyter asgard ...` as the server's user runs it: its data and runtime dirs."""
    return subprocess.run(
        [sys.executable, "-m", "jupyter", "asgard", *args], env=server.env, capture_output=True, text=True, timeout=120
    )


def beside(server: JupyterServer, root: Path) -> JupyterServer:
    """Another server of the same user (the same data and runtime dirs) on its own port and root, as when a
    user starts a second JupyterLab while the first still runs."""
    root.mkdir(parents=True)
    other = JupyterServer(root, root.parent / "beside.log", extra_args=server.extra_args)
    return other.start(server.env)


@pytest.fixture
def servers(tmp_path: Path, detachable_kernelspec: str, no_kernel_jobs_left: None) -> Iterator[list[JupyterServer]]:
    """The test's servers, stopped afterwards; the detachable kernels they leave running are released."""
    started: list[JupyterServer] = []
    yield started
    for server in started:
        server.stop()
    release_left_kernels(tmp_path / "home" / "data")


def with_a_detachable_kernel(home: Path, servers: list[JupyterServer]) -> tuple[JupyterServer, str, str]:
    """A server of a site that allows detachable kernels, running one: the server, the kernel's id, its job."""
    server = started_server(home, SITE)
    servers.append(server)
    kernel_id = server.start_kernel("asgard-detachable")
    return server, kernel_id, kernel_row(server, kernel_id)["job_id"]


def wait_until_gone(server: JupyterServer, kernel_id: str, job: str) -> None:
    """A released kernel's job leaves Slurm's queue, and its record the user's."""
    wait_for(lambda: job not in [line.split()[0] for line in kernel_jobs()], 30, "the kernel's job ends")
    assert not (records(server) / kernel_id).exists()


@pytest.mark.cluster
def test_a_kernel_another_server_holds_is_listed_and_released_through_the_server_that_found_it(
    tmp_path: Path, servers: list[JupyterServer]
) -> None:
    holder, kernel_id, job = with_a_detachable_kernel(tmp_path / "home", servers)
    finder = beside(holder, tmp_path / "finder")
    servers.append(finder)

    shown = asgard(holder, "status")
    assert shown.returncode == 0, shown.stderr
    assert lines_with(shown.stdout, kernel_id[:8])[0].endswith("(detachable)"), shown.stdout
    found = lines_with(shown.stdout, job)[-1]
    assert found.split()[:4] == [kernel_id[:8], "asgard-detachable", job, kernel_row(holder, kernel_id)["node"]]
    assert "another Jupyter server of yours holds it" in found and RELEASE_HINT in shown.stdout
    detached = json.loads(asgard(holder, "status", "--json").stdout)["detached"]
    assert [(row["kernel_id"], row["server"]) for row in detached["found"]] == [(kernel_id, finder.url + "/")]

    ended = asgard(holder, "release", kernel_id)

    assert ended.returncode == 0, ended.stderr
    assert (
        ended.stdout
        == f"released detached kernel {kernel_id} and its Slurm job {job} (through the Jupyter server {finder.url}/)\n"
    )
    wait_until_gone(holder, kernel_id, job)
    assert finder.request("GET", "/asgard/api/detached").body["found"] == []
    holder.stop()  # the server that held it stops in order (it once failed, writing into the removed record)
    assert holder.process is not None and holder.process.returncode != -signal.SIGKILL, holder.log()
    assert "Traceback" not in holder.log(), holder.log()


@pytest.mark.cluster
def test_with_no_server_running_release_ends_a_detached_kernel_from_the_records(
    tmp_path: Path, servers: list[JupyterServer]
) -> None:
    server, kernel_id, job = with_a_detachable_kernel(tmp_path / "home", servers)
    killed(server)

    shown = asgard(server, "status")
    assert lines_with(shown.stdout, job)[0].endswith(f"{UNKNOWN} (detachable)"), shown.stdout
    assert shown.stdout.splitlines()[-1] == RELEASE_HINT

    ended = asgard(server, "release", kernel_id[:8])

    assert ended.returncode == 0, ended.stderr
    assert f"released detached kernel {kernel_id} and its Slurm job {job} (no Jupyter server" in ended.stdout
    wait_until_gone(server, kernel_id, job)
    twice = asgard(server, "release", kernel_id[:8])
    assert twice.returncode == 1 and f"no detached kernel {kernel_id[:8]!r} of yours" in twice.stderr
