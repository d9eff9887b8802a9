"""Start-time estimates: the cheaper alternatives and Slurm's answer in words (unit), and on the test cluster
through POST /asgard/api/estimate, held to what Slurm then does with the submitted kernels."""

from __future__ import annotations

import asyncio
import re
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from jupyter_asgard.launch.launch_config import LaunchConfig
from jupyter_asgard.server.kernel_jobs import kernel_job
from jupyter_asgard.site.estimates import UNKNOWN_WORDS, Estimate, cheaper_changes, read_estimate
from jupyter_asgard.slurm.slurm_client import CommandResult
from jupyter_asgard.slurm.slurm_commands import estimate_argv, parse_test_only
from jupyter_asgard.widgets.estimate import render
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, pending_kernel, shutdown, start, wait_for_state
from tests.server import JupyterServer


def config(**values: object) -> LaunchConfig:
    return LaunchConfig.parse({"image": "/enroot/x.sqsh", **values})


@pytest.mark.parametrize(
    ("values", "allowed", "expected"),
    [
        (
            {"gpus": "4", "time": "4:00:00"},
            ["gpu", "debug"],
            ["1 GPU instead of 4", "partition debug", "time limit 2:00:00"],
        ),
        ({"gpus": "h100:2"}, [], ["1 GPU instead of 2", "time limit 1:00:00"]),
        ({"gpus": "1", "time": "45:00", "partition": "debug"}, ["debug"], []),
    ],
)
def test_cheaper_alternatives_are_one_gpu_another_partition_and_a_shorter_time(
    values: dict[str, object], allowed: list[str], expected: list[str]
) -> None:
    found = cheaper_changes(config(**values), str(values.get("partition", "gpu")), allowed)
    assert [label for label, _ in found] == expected
    if values.get("gpus") == "h100:2":
        assert found[0][1] == {"gpus": "h100:1"}  # the same type


def test_slurm_s_test_only_answer_and_its_words() -> None:
    answer = "srun: Job 4 to start at 2026-11-30T14:35:00 using 1 processors on nodes gpu01 in partition gpu\n"
    assert parse_test_only(answer) == ("2026-11-30T14:35:00", "gpu01", "gpu")
    assert parse_test_only("allocation failure: Requested node configuration is not available") is None
    later = Estimate("as configured", start="2026-11-30T14:35:00", seconds=45 * 60, nodes="gpu01")
    assert later.words() == "expected to start at 14:35 (in ~45 min) on gpu01"
    assert Estimate("1 GPU", seconds=0, nodes="gpu02").words() == "starts now on gpu02"
    refused = Estimate("x", error="Requested node configuration is not available")
    assert refused.words() == "Slurm would not run it: Requested node configuration is not available"
    assert "\n" not in later.words() and later.seconds is not None
    argv = estimate_argv(config(gpus="2", time="1:00:00", partition="gpu"))
    assert argv[:2] == ["srun", "--test-only"] and argv[-1] == "true" and "--gpus=2" in argv


@pytest.fixture
def one_gpu_free(slurm_cluster: LocalCluster) -> Iterator[None]:
    """gpu01's two GPUs and one of gpu02's held by another user's jobs for 10 minutes: one GPU is free."""
    jobs = []
    for node, gpus in (("gpu01", 2), ("gpu02", 1)):
        result = subprocess.run(
            ["salloc", "--no-shell", f"--gpus={gpus}", f"--nodelist={node}", "--time=10", "-J", "other-user"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        jobs.append(result.stderr.split()[-1])
    yield
    subprocess.run(["scancel", *jobs], capture_output=True)


@pytest.mark.usefixtures("one_gpu_free", "no_kernel_jobs_left")
async def test_the_estimate_matches_slurm_and_the_cheaper_alternative_starts_at_once(
    jupyter_server: JupyterServer, kernelspecs: KernelSpecs, slurm_cluster: LocalCluster, tmp_path: Path
) -> None:
    def srun_calls() -> int:
        return int(jupyter_server.request("GET", "/asgard/api/monitor").body["calls"].get("srun", 0))

    await asyncio.sleep(3)  # the backfill scheduler has planned the other user's jobs (bf_interval 2 s)
    before = srun_calls()
    body = {"image": str(slurm_cluster.pytorch_image()), "gpus": "2", "time": "2:00:00"}
    answer = jupyter_server.request("POST", "/asgard/api/estimate", body).body
    alternatives = {entry["label"]: entry for entry in answer["alternatives"]}
    assert srun_calls() - before == 1 + len(alternatives)  # one Slurm call per estimate, nothing else
    estimate = answer["estimate"]
    assert not estimate["now"] and 8 * 60 <= estimate["seconds"] <= 10 * 60 + 5, estimate
    assert estimate["words"].startswith("expected to start at ")
    one = alternatives["1 GPU instead of 2"]
    assert (one["now"], one["nodes"], one["changes"]) == (True, "gpu02", {"gpus": "1"})
    assert one["words"] == "starts now on gpu02"
    assert alternatives["time limit 1:00:00"]["changes"] == {"time": "1:00:00"}

    # Submitted, the configuration waits until the estimate: squeue --start says the same.
    waiting = kernelspecs.make("asgard-estimate-2", gpus="2", time="2:00:00")
    km, starting = pending_kernel(waiting, tmp_path)
    try:
        await wait_for_state(km, "PENDING")
        for _ in range(100):  # until the backfill scheduler (every 2 s here) has planned it
            squeue = subprocess.run(
                ["squeue", "--start", "-h", "-j", km.provisioner.job_id, "-o", "%S"], capture_output=True, text=True
            )
            if squeue.stdout.strip() not in ("", "N/A"):
                break
            await asyncio.sleep(0.2)
        then = datetime.fromisoformat(squeue.stdout.strip())
        assert abs((then - datetime.fromisoformat(estimate["start"])).total_seconds()) <= 60
        assert kernel_job(km.provisioner, km.provisioner.monitor)["state"] == "PENDING"
    finally:
        starting.cancel()
        await shutdown(km)
    # ... and the alternative with one GPU does start at once.
    km = await asyncio.wait_for(start(kernelspecs.make("asgard-estimate-1", gpus="1", time="2:00:00"), tmp_path), 60)
    try:
        assert km.provisioner.node == "gpu02"
    finally:
        await shutdown(km)


def test_an_estimate_of_a_bad_configuration_is_refused_with_its_problems(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster
) -> None:
    answer = jupyter_server.request(
        "POST", "/asgard/api/estimate", {"image": str(slurm_cluster.pytorch_image()), "gpus": "99"}
    )
    assert answer.status == 400
    assert any("99 GPUs requested" in problem for problem in answer.body["problems"])


@pytest.mark.parametrize(
    "start",
    [
        "2027-11-30T13:50:00",  # a year from now: what Slurm answers when jobs without a time limit hold the GPUs
        "2027-11-30T13:49:57",  # the same, asked a moment before the answer is read
        (datetime(2026, 11, 30, 13, 50) + timedelta(minutes=2**27 - 1)).isoformat(timespec="seconds"),
    ],
)
def test_slurm_s_placeholder_for_an_unknown_start_is_never_shown_as_a_time(start: str) -> None:
    answer = f"srun: Job 9 to start at {start} using 1 processors on nodes gpu02 in partition gpu\n"
    estimate = read_estimate("as configured", {}, CommandResult(0, "", answer), now=datetime(2026, 11, 30, 13, 50))
    assert (estimate.start, estimate.seconds, estimate.error, estimate.nodes) == ("", None, "", "gpu02")
    assert not estimate.now
    assert estimate.words() == UNKNOWN_WORDS
    assert "min" not in estimate.to_json()["words"] and start[11:16] not in estimate.to_json()["words"]


def test_a_real_estimate_a_month_ahead_is_shown_as_a_time() -> None:
    answer = "srun: Job 9 to start at 2026-12-30T14:35:00 using 1 processors on nodes gpu02 in partition gpu\n"
    estimate = read_estimate("as configured", {}, CommandResult(0, "", answer), now=datetime(2026, 11, 30, 13, 50))
    assert estimate.words().startswith("expected to start at 14:35 (in ~")


def test_the_panel_shows_each_estimate_apart_from_the_next() -> None:
    """The page's text of the box (what a reader or a copy gets) never runs two estimates together."""
    shown = render(
        {
            "estimate": Estimate("as configured", seconds=0, nodes="gpu02").to_json(),
            "alternatives": [Estimate("time limit 1:00:00", {"time": "1:00:00"}).to_json()],
        }
    )
    text = re.sub(r"<[^>]+>", "", shown)
    assert text.splitlines() == ["starts now on gpu02", f"or time limit 1:00:00: {UNKNOWN_WORDS}"]
