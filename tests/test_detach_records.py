"""Detachable kernels without a cluster: records, who holds a kernel, the keeper's file protocol with a plain
command in srun's place, the recorder's reading of IOPub, and why a kernel ended."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from traitlets.config import Config

from jupyter_asgard.errors import AsgardError
from jupyter_asgard.kernel import detach_records
from jupyter_asgard.kernel.detach_records import (
    HOLD_STALE,
    Holder,
    KernelRecord,
    all_records,
    private_root,
    sent_before,
)
from jupyter_asgard.kernel.kept_allocation import KEEPER_SOURCE, keeper_script
from jupyter_asgard.kernel.kept_process import KeptProcess, last_start
from jupyter_asgard.launch.launch_config import LaunchConfig, detach_problems
from jupyter_asgard.node import keeper, recorder
from jupyter_asgard.server.detached_kernels import ended_reason
from jupyter_asgard.site.site import AsgardSite
from jupyter_asgard.slurm.slurm_commands import DETACHABLE_MARK, JobInfo, parse_sbatch, sbatch_argv


@pytest.fixture
def record(tmp_path: Path) -> KernelRecord:
    made = KernelRecord(private_root(tmp_path / "detachable"), "k1")
    made.create()
    made.write({"kernel_id": "k1"})
    return made


def test_the_records_directory_is_private_and_one_others_can_enter_is_refused(tmp_path: Path) -> None:
    root = private_root(tmp_path / "detachable")
    assert root.stat().st_mode & 0o777 == 0o700
    root.chmod(0o755)
    with pytest.raises(AsgardError, match="nobody else can read") as refused:
        private_root(root)
    assert "chmod 700" in refused.value.hint


def test_a_record_is_written_whole_and_private(record: KernelRecord) -> None:
    record.update(connection={"key": "secret"})
    assert record.read() == {"kernel_id": "k1", "connection": {"key": "secret"}}
    assert record.path("kernel.json").stat().st_mode & 0o777 == 0o600
    assert not list(record.directory.glob("*.partial"))


def test_a_holder_is_gone_when_it_let_go_its_process_ended_or_it_went_quiet() -> None:
    host, now = socket.gethostname(), time.time()
    assert Holder("", now).gone(now)
    assert not Holder(f"{host}:{os.getpid()}:x", now).gone(now)
    assert Holder(f"{host}:999999999:x", now).gone(now)
    assert not Holder("elsewhere:1:x", now).gone(now)
    assert Holder("elsewhere:1:x", now - HOLD_STALE - 1).gone(now)


def test_of_two_servers_claiming_a_free_kernel_exactly_one_wins(record: KernelRecord) -> None:
    record.let_go()
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def claim(number: int) -> None:
        mine = KernelRecord(record.directory.parent, "k1")
        barrier.wait()
        seen = mine.holder()  # as the server does: a claim only of what it saw gone
        results.append(seen.gone(time.time()) and mine.claim(f"{socket.gethostname()}:{os.getpid()}:{number}", seen))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 1
    assert not record.holder().gone(time.time())


def test_the_claim_remembers_when_the_kernel_was_let_go(record: KernelRecord) -> None:
    record.let_go()
    let_go_at = record.detached_since()
    assert record.claim("h:1:a", record.holder()) and record.claimed_after == let_go_at


def test_a_claim_on_a_holder_that_changed_since_it_was_seen_is_void(record: KernelRecord) -> None:
    record.let_go()
    seen = record.holder()
    time.sleep(0.01)
    record.hold("elsewhere:1:b")
    assert not record.claim("h:1:a", seen)
    assert record.holder().server == "elsewhere:1:b"


def test_only_what_came_after_the_kernel_was_let_go_counts_as_printed_while_detached(record: KernelRecord) -> None:
    entries = [{"kind": "stream", "text": "old", "time": 10.0}, {"kind": "stream", "text": "new", "time": 20.0}]
    done = [{"kind": "done", "cell": "m1", "time": 12.0}, {"kind": "done", "cell": "m2", "time": 21.0}]
    record.path("while-detached.json").write_text(
        json.dumps({"entries": entries, "done": done, "execution_state": "busy"})
    )
    assert record.while_detached(15.0) == {"entries": [entries[1]], "done": [done[1]], "execution_state": "busy"}


def test_a_removed_record_is_gone_whole_and_not_listed(record: KernelRecord) -> None:
    root = record.directory.parent
    assert [found.kernel_id for found in all_records(root)] == ["k1"]
    record.remove()
    assert list(root.iterdir()) == [] and all_records(root) == []
    record.let_go()  # its server stopping after another released it: nobody to tell, nothing made anew
    assert list(root.iterdir()) == []


def test_the_batch_job_is_never_requeued_and_marked_detachable() -> None:
    argv = sbatch_argv(LaunchConfig(image="/i.sqsh", gpus="1", time="1:00:00"), "jupyter-asgard-k1", "/d/keeper.log")
    assert "--no-requeue" in argv and f"--comment={DETACHABLE_MARK}" in argv and "--parsable" in argv
    assert "--time=1:00:00" in argv and "--output=/d/keeper.log" in argv
    assert parse_sbatch("1234\n") == "1234" and parse_sbatch("1234;cluster") == "1234" and parse_sbatch("x") == ""


def test_the_keeper_script_starts_with_the_sites_python() -> None:
    assert keeper_script("/usr/bin/python3").startswith(b"#!/usr/bin/python3\n")
    assert KEEPER_SOURCE.count("def main()") == 1


def test_detaching_is_refused_where_the_site_does_not_allow_it_or_past_its_grace() -> None:
    config = LaunchConfig(image="/i.sqsh", detachable=True, detach_grace=1000)
    assert "c.PyxisProvisioner.detach" in detach_problems(config, "off", 900)[0]
    assert "maximum of 900 s" in detach_problems(config, "allowed", 900)[0]
    assert detach_problems(LaunchConfig(image="/i.sqsh", detachable=True, detach_grace=60), "allowed", 900) == []
    assert detach_problems(LaunchConfig(image="/i.sqsh"), "off", 900) == []


def test_why_a_kernel_ended_while_detached() -> None:
    grace = {"reason": "grace"}
    record = {"grace": 60, "connection": {"ip": "x"}}
    assert ended_reason(JobInfo("1", state="TIMEOUT"), {"reason": "signal"}, record) == "it reached its time limit"
    assert ended_reason(JobInfo("1", state="NODE_FAIL"), {}, record) == "its node failed"
    assert "within its grace (60 s)" in ended_reason(JobInfo("1", state="COMPLETED"), grace, record)
    assert "within its grace (60 s)" in ended_reason(None, grace, record)
    assert "start was not over" in ended_reason(None, {}, {})
    assert "no longer says why" in ended_reason(None, {}, record)
    assert "exit status 1" in ended_reason(JobInfo("1", state="RUNNING"), {}, record, exited=1)


def test_the_recorder_keeps_what_a_person_reads_and_the_state_of_cells() -> None:
    execute = {"msg_type": "execute_request"}
    assert recorder.entry({"msg_type": "stream"}, {}, {"name": "stderr", "text": "x"}) == {
        "kind": "stream",
        "name": "stderr",
        "text": "x",
    }
    assert recorder.entry({"msg_type": "error"}, {}, {"ename": "KeyError", "evalue": "'a'"})["text"] == "KeyError: 'a'"
    assert recorder.entry({"msg_type": "execute_result"}, {}, {"data": {"text/plain": "42"}})["text"] == "42"
    assert recorder.entry({"msg_type": "status"}, execute, {"execution_state": "busy"})["text"] == "busy"
    assert recorder.entry({"msg_type": "status"}, {"msg_type": "kernel_info_request"}, {}) is None
    assert recorder.RECORD == keeper.RECORD


def test_the_recorder_says_which_request_an_output_answers_and_when_a_request_is_done() -> None:
    """A request's start (its execute_input) and outputs name it (cell: its msg_id); once the kernel is idle
    after it, it is done, with the execution count its execute_input gave, whether it raised and when it was
    sent."""
    requests = recorder.Requests()

    def seen(kind: str, cell: str, **content: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        header = {"msg_type": kind}
        parent = {"msg_type": "execute_request", "msg_id": cell, "date": f"2026-12-07T10:00:0{int(cell == 'b')}Z"}
        return recorder.entry(header, parent, content), requests.done(header, parent, content)

    assert seen("execute_input", "a", execution_count=7) == ({"kind": "input", "text": "", "cell": "a"}, None)
    assert seen("execute_input", "b", execution_count=8)[1] is None
    assert seen("stream", "a", name="stdout", text="hi") == (
        {"kind": "stream", "name": "stdout", "text": "hi", "cell": "a"},
        None,
    )
    assert seen("error", "b", ename="E", evalue="x")[0] == {"kind": "error", "text": "E: x", "cell": "b"}
    assert seen("status", "a", execution_state="idle")[1] == {
        "kind": "done",
        "cell": "a",
        "count": 7,
        "status": "ok",
        "sent": "2026-12-07T10:00:00Z",
    }
    assert seen("status", "b", execution_state="idle")[1] == {
        "kind": "done",
        "cell": "b",
        "count": 8,
        "status": "error",
        "sent": "2026-12-07T10:00:01Z",
    }
    assert requests.counts == {} and requests.failed == set()  # nothing kept of ended requests
    assert seen("status", "c", execution_state="busy")[1] is None
    assert recorder.entry({"msg_type": "stream"}, {"msg_type": "comm_msg", "msg_id": "d"}, {"text": "w"}) == {
        "kind": "stream",
        "name": "stdout",
        "text": "w",
    }


def test_the_requests_sent_before_the_take_over_that_ended_after_the_let_go_with_what_they_printed(
    record: KernelRecord,
) -> None:
    at = datetime(2026, 12, 7, 10, 0, 0, tzinfo=timezone.utc).timestamp()

    def sent(seconds: int) -> str:
        return f"2026-12-07T10:00:{seconds:02d}Z"

    entries = [
        {"kind": "stream", "text": "lost start", "cell": "a", "time": at + 1},  # its input dropped: incomplete
        {"kind": "input", "text": "", "cell": "b", "time": at + 2},
        {"kind": "stream", "text": "b1", "cell": "b", "time": at + 3},
        {"kind": "result", "text": "42", "cell": "b", "time": at + 30},
        {"kind": "stream", "text": "other", "cell": "c", "time": at + 31},
    ]
    done = [
        {"kind": "done", "cell": "old", "sent": sent(0), "time": at + 5},  # ended before the let-go
        {"kind": "done", "cell": "a", "sent": sent(1), "time": at + 20},
        {"kind": "done", "cell": "b", "sent": sent(2), "time": at + 40},  # ended after the take-over
        {"kind": "done", "cell": "new", "sent": sent(55), "time": at + 60},  # sent through the new server
    ]
    record.path("while-detached.json").write_text(json.dumps({"entries": entries, "done": done}))
    found = record.unanswered(since=at + 10, before=at + 50)
    assert [(request["cell"], request["complete"]) for request in found] == [("a", False), ("b", True)]
    assert [entry["text"] for entry in found[1]["outputs"]] == ["b1", "42"]
    assert [entry["kind"] for entry in record.while_detached(at)["entries"]] == ["stream", "stream", "result", "stream"]


def test_a_request_was_sent_before_a_moment_by_its_header_s_date() -> None:
    moment = datetime(2026, 12, 7, 10, 0, 5, tzinfo=timezone.utc).timestamp()
    assert sent_before({"sent": "2026-12-07T10:00:04.999Z"}, moment)
    assert sent_before({"sent": "2026-12-07T10:00:04"}, moment)  # no zone: UTC, as Jupyter's dates are
    assert not sent_before({"sent": "2026-12-07T10:00:05.001+00:00"}, moment)
    assert not sent_before({"sent": ""}, moment) and not sent_before({}, moment)


def test_the_keeper_keeps_the_newest_ended_requests_apart_from_the_output() -> None:
    recorded = keeper.Recorded()
    for index in range(keeper.MAX_DONE + 5):
        recorded.take(json.dumps({"kind": "done", "cell": f"m{index}", "count": index, "time": index}))
    recorded.take(json.dumps({"kind": "stream", "text": "hi", "cell": "m1", "time": 1}))
    assert [item["cell"] for item in recorded.done] == [f"m{index}" for index in range(5, keeper.MAX_DONE + 5)]
    assert recorded.entries == [{"kind": "stream", "text": "hi", "cell": "m1", "time": 1}]


def run_keeper(directory: Path, grace: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ASGARD_KEEPER_DIR": str(directory), "ASGARD_DETACH_GRACE": str(grace)}
    return subprocess.Popen([sys.executable, "-c", KEEPER_SOURCE], env=env)


def test_the_keeper_runs_each_start_and_keeps_its_output_and_status(record: KernelRecord) -> None:
    """Its file protocol, with a plain command in srun's place (the cluster tests run it with srun)."""
    record.hold("h:1:a")
    process = run_keeper(record.directory, 30)
    code = 'import sys; print(\'out\'); print(\'ASGARD-IOPUB \' + \'{"kind": "stream", "text": "hi", "time": 1}\');'
    code += "print('err', file=sys.stderr); sys.exit(3)"

    async def start() -> tuple[int, bytes, bytes]:
        kept = await KeptProcess.start(record, 1, [sys.executable, "-c", code], dict(os.environ), lambda: False)
        status = await asyncio.wait_for(kept.wait(), 30)
        return status, await kept.stdout.read(), await kept.stderr.read()

    try:
        status, out, err = asyncio.run(start())
        assert (status, out, err) == (3, b"out\n", b"err\n")
        assert not record.path("start-1.json").exists() and last_start(record) == 1
        deadline = time.monotonic() + 10
        while not record.path("while-detached.json").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert json.loads(record.path("while-detached.json").read_text())["entries"][0]["text"] == "hi"
        record.release()
        assert process.wait(timeout=10) == 0
        assert record.ended()["reason"] == "released"
    finally:
        process.kill()


def test_the_keeper_ends_when_nobody_held_the_kernel_for_its_grace(record: KernelRecord) -> None:
    record.hold("h:1:a")
    os.utime(record.path("held"), (time.time() - 100, time.time() - 100))
    process = run_keeper(record.directory, 5)
    assert process.wait(timeout=10) == 0
    assert record.ended()["reason"] == "grace"


def test_the_keeper_ends_when_its_record_is_removed(record: KernelRecord) -> None:
    record.hold("h:1:a")
    process = run_keeper(record.directory, 30)
    time.sleep(0.5)
    record.remove()
    assert process.wait(timeout=10) == 0


def test_this_server_has_one_identity() -> None:
    assert detach_records.THIS_SERVER.startswith(socket.gethostname() + ":" + str(os.getpid()) + ":")


async def test_the_site_s_checks_refuse_a_detachable_kernel_where_it_allows_none(tmp_path: Path) -> None:
    image = tmp_path / "image.sqsh"
    image.write_bytes(b"")
    wanted = {"image": str(image), "detachable": True, "detach_grace": 600}
    _, problems = await AsgardSite(config=Config()).validate(wanted)
    assert problems and "c.PyxisProvisioner.detach is 'off'" in problems[0]
    allowing = AsgardSite(config=Config({"PyxisProvisioner": {"detach": "allowed", "detach_grace": 300}}))
    _, problems = await allowing.validate(wanted)  # (without a cluster here: Slurm's partitions go unchecked)
    assert problems[0] == "detach_grace: 600 s is over this site's maximum of 300 s; ask for less"
    _, problems = await allowing.validate({**wanted, "detach_grace": 0})
    assert not [problem for problem in problems if "detach" in problem]


def test_a_server_whose_kernel_another_took_over_learns_it_at_its_next_refresh(record: KernelRecord) -> None:
    record.hold("h:1:a")
    assert record.refresh("h:1:a")
    record.hold("h:2:b")  # h:1:a went silent for too long, and h:2:b took the kernel over
    assert not record.refresh("h:1:a") and record.holder().server == "h:2:b"
