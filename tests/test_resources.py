"""Partitions and GPUs from sinfo output (pure, no Slurm).

The CAPTURED_* outputs come from the project's test cluster (Slurm 22.05; partitions gpu = gpu01+gpu02,
default, and debug = gpu02; gpu:h100:2 per node, 16 CPUs, 32000 MB), running exactly sinfo_argv().
Row order is sinfo's own, which varies between calls.
"""

from __future__ import annotations

import pytest

from jupyter_asgard.slurm.resources import Partition, node_accepts_jobs, parse_gpu_gres, parse_sinfo, sinfo_argv

# Nothing allocated.
CAPTURED_IDLE = """\
gpu*|up|infinite|gpu01|idle|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/16/0/16|32000|
debug|up|30:00|gpu02|idle|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/16/0/16|32000|
gpu*|up|infinite|gpu02|idle|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/16/0/16|32000|
"""
# After `salloc --no-shell --gpus=1 -w gpu01`.
CAPTURED_ONE_GPU_ALLOCATED = """\
gpu*|up|infinite|gpu01|mixed|gpu:h100:2|gpu:h100:1(IDX:0)|1/15/0/16|32000|
debug|up|30:00|gpu02|idle|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/16/0/16|32000|
gpu*|up|infinite|gpu02|idle|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/16/0/16|32000|
"""
# gpu01 full (a second job took its other GPU and 15 CPUs); gpu02's two GPUs allocated, then
# `scontrol update nodename=gpu02 state=drain`: Slurm moves a draining node's idle CPUs to "other".
CAPTURED_DRAINING = """\
gpu*|up|infinite|gpu01|allocated|gpu:h100:2|gpu:h100:2(IDX:0-1)|16/0/0/16|32000|
debug|up|30:00|gpu02|draining|gpu:h100:2|gpu:h100:2(IDX:0-1)|1/0/15/16|32000|
gpu*|up|infinite|gpu02|draining|gpu:h100:2|gpu:h100:2(IDX:0-1)|1/0/15/16|32000|
"""
# gpu02's job cancelled: draining became drained.
CAPTURED_DRAINED = """\
gpu*|up|infinite|gpu01|allocated|gpu:h100:2|gpu:h100:2(IDX:0-1)|16/0/0/16|32000|
gpu*|up|infinite|gpu02|drained|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/0/16/16|32000|
debug|up|30:00|gpu02|drained|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/0/16/16|32000|
"""
# `scontrol update nodename=gpu01 state=down` and `scontrol update partitionname=debug state=down`.
CAPTURED_DOWN = """\
gpu*|up|infinite|gpu01|down|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/0/16/16|32000|
debug|down|30:00|gpu02|drained|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/0/16/16|32000|
gpu*|up|infinite|gpu02|drained|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/0/16/16|32000|
"""
# One GPU allocated on gpu02, then its slurmd stopped (SIGSTOP) until slurmctld marked it not responding:
# its CPUs still show as idle.
CAPTURED_NOT_RESPONDING = """\
gpu*|up|infinite|gpu01|idle|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/16/0/16|32000|
debug|up|30:00|gpu02|mixed*|gpu:h100:2|gpu:h100:1(IDX:0)|1/15/0/16|32000|
gpu*|up|infinite|gpu02|mixed*|gpu:h100:2|gpu:h100:1(IDX:0)|1/15/0/16|32000|
"""


def summary(output: str) -> list[tuple]:
    """What the panel shows of each partition, in order."""
    return [
        (p.name, p.default, p.available, p.time_limit, p.gpus, p.cpus, [(n["name"], n["state"]) for n in p.nodes])
        for p in parse_sinfo(output)
    ]


def test_sinfo_argv() -> None:
    assert sinfo_argv() == [
        "sinfo",
        "--Node",
        "--noheader",
        "--Format=Partition:|,Available:|,Time:|,NodeList:|,StateLong:|,Gres:|,GresUsed:|,CPUsState:|,Memory:|",
    ]
    assert sinfo_argv("/opt/slurm/bin/sinfo")[0] == "/opt/slurm/bin/sinfo"


# --- captured from the test cluster -----------------------------------------------------------


def test_captured_idle_cluster() -> None:
    assert [p.to_json() for p in parse_sinfo(CAPTURED_IDLE)] == [
        {
            "name": "gpu",
            "default": True,
            "available": "up",
            "time_limit": "infinite",
            "nodes": [{"name": "gpu01", "state": "idle"}, {"name": "gpu02", "state": "idle"}],
            "gpus": {"h100": {"total": 4, "free": 4}},
            "cpus": {"total": 32, "idle": 32},
            "max_memory_mb": 32000,
        },
        {
            "name": "debug",
            "default": False,
            "available": "up",
            "time_limit": "30:00",
            "nodes": [{"name": "gpu02", "state": "idle"}],
            "gpus": {"h100": {"total": 2, "free": 2}},
            "cpus": {"total": 16, "idle": 16},
            "max_memory_mb": 32000,
        },
    ]


def test_captured_one_gpu_allocated() -> None:
    assert summary(CAPTURED_ONE_GPU_ALLOCATED) == [
        (
            "gpu",
            True,
            "up",
            "infinite",
            {"h100": {"total": 4, "free": 3}},
            {"total": 32, "idle": 31},
            [("gpu01", "mixed"), ("gpu02", "idle")],
        ),
        (
            "debug",
            False,
            "up",
            "30:00",
            {"h100": {"total": 2, "free": 2}},
            {"total": 16, "idle": 16},
            [("gpu02", "idle")],
        ),
    ]


def test_captured_draining_node_offers_nothing() -> None:
    assert summary(CAPTURED_DRAINING) == [
        (
            "gpu",
            True,
            "up",
            "infinite",
            {"h100": {"total": 4, "free": 0}},
            {"total": 32, "idle": 0},
            [("gpu01", "allocated"), ("gpu02", "draining")],
        ),
        (
            "debug",
            False,
            "up",
            "30:00",
            {"h100": {"total": 2, "free": 0}},
            {"total": 16, "idle": 0},
            [("gpu02", "draining")],
        ),
    ]


def test_captured_drained_node_keeps_its_gpus_in_the_total_only() -> None:
    assert summary(CAPTURED_DRAINED) == [
        (
            "gpu",
            True,
            "up",
            "infinite",
            {"h100": {"total": 4, "free": 0}},
            {"total": 32, "idle": 0},
            [("gpu01", "allocated"), ("gpu02", "drained")],
        ),
        (
            "debug",
            False,
            "up",
            "30:00",
            {"h100": {"total": 2, "free": 0}},
            {"total": 16, "idle": 0},
            [("gpu02", "drained")],
        ),
    ]


def test_captured_down_node_and_down_partition() -> None:
    assert summary(CAPTURED_DOWN) == [
        (
            "gpu",
            True,
            "up",
            "infinite",
            {"h100": {"total": 4, "free": 0}},
            {"total": 32, "idle": 0},
            [("gpu01", "down"), ("gpu02", "drained")],
        ),
        (
            "debug",
            False,
            "down",
            "30:00",
            {"h100": {"total": 2, "free": 0}},
            {"total": 16, "idle": 0},
            [("gpu02", "drained")],
        ),
    ]


def test_captured_not_responding_node_offers_nothing() -> None:
    assert summary(CAPTURED_NOT_RESPONDING) == [
        (
            "gpu",
            True,
            "up",
            "infinite",
            {"h100": {"total": 4, "free": 2}},
            {"total": 32, "idle": 16},
            [("gpu01", "idle"), ("gpu02", "mixed*")],
        ),
        (
            "debug",
            False,
            "up",
            "30:00",
            {"h100": {"total": 2, "free": 0}},
            {"total": 16, "idle": 0},
            [("gpu02", "mixed*")],
        ),
    ]


# --- hand-written samples ---------------------------------------------------------------------


def test_down_partition_offers_nothing_even_on_idle_nodes() -> None:
    output = "maint|down|1:00:00|n1|idle|gpu:a100:4|gpu:a100:0(IDX:N/A)|0/64/0/64|512000|\n"
    assert summary(output) == [
        (
            "maint",
            False,
            "down",
            "1:00:00",
            {"a100": {"total": 4, "free": 0}},
            {"total": 64, "idle": 0},
            [("n1", "idle")],
        ),
    ]


def test_multiple_gres_socket_info_and_gpu_types() -> None:
    output = (
        "batch*|up|2-00:00:00|a01|mixed|gpu:a100:4(S:0-1),shard:a100:8(S:0-1)|"
        "gpu:a100:2(IDX:0,3),shard:a100:0(0/2,0/2,0/2,0/2)|8/56/0/64|515000|\n"
        "batch*|up|2-00:00:00|m01|mixed|gpu:a100:2(S:0),gpu:v100:2(S:1)|gpu:a100:1(IDX:0),gpu:v100:2(IDX:2-3)"
        "|4/28/0/32|256000|\n"
        "batch*|up|2-00:00:00|u01|idle|gpu:4|gpu:0(IDX:N/A)|0/32/0/32|128000|\n"
        "batch*|up|2-00:00:00|c01|idle|(null)|(null)|0/128/0/128|1024000|\n"
    )
    [batch] = parse_sinfo(output)
    assert batch.to_json() == {
        "name": "batch",
        "default": True,
        "available": "up",
        "time_limit": "2-00:00:00",
        "nodes": [
            {"name": "a01", "state": "mixed"},
            {"name": "c01", "state": "idle"},
            {"name": "m01", "state": "mixed"},
            {"name": "u01", "state": "idle"},
        ],
        "gpus": {"": {"total": 4, "free": 4}, "a100": {"total": 6, "free": 3}, "v100": {"total": 2, "free": 0}},
        "cpus": {"total": 256, "idle": 244},
        "max_memory_mb": 1024000,
    }


def test_partition_without_gpus_and_unparseable_counts() -> None:
    output = "cpu|up|infinite|c01|idle|(null)|(null)|?|?|\n"
    assert parse_sinfo(output) == [Partition("cpu", False, "up", "infinite", [{"name": "c01", "state": "idle"}])]


def test_lines_that_are_not_rows_are_ignored() -> None:
    output = (
        "\n"
        "sinfo: error: some transient message\n"
        "|up|infinite|n1|idle|gpu:1|gpu:0|0/1/0/1|1|\n"
        "gpu*|up|infinite|gpu01|idle|gpu:h100:2|gpu:h100:0(IDX:N/A)|0/16/0/16|32000|\n"
    )
    assert [p.name for p in parse_sinfo(output)] == ["gpu"]
    assert parse_sinfo("") == []


@pytest.mark.parametrize(
    ("state", "accepts"),
    [
        ("idle", True),
        ("mixed", True),
        ("allocated", True),
        ("completing", True),
        ("planned", True),
        ("idle~", True),  # powered off to save energy: Slurm powers it up for a job
        ("idle#", True),  # powering up
        ("IDLE", True),
        ("idle*", False),
        ("mixed*", False),
        ("down*", False),
        ("down", False),
        ("drained", False),
        ("draining", False),
        ("drained*", False),
        ("fail", False),
        ("failing", False),
        ("future", False),
        ("unknown", False),
        ("reserved", False),
        ("", False),
    ],
)
def test_node_accepts_jobs(state: str, accepts: bool) -> None:
    assert node_accepts_jobs(state) is accepts


@pytest.mark.parametrize(
    ("gres", "counts"),
    [
        ("gpu:h100:2", {"h100": 2}),
        ("gpu:h100:1(IDX:0)", {"h100": 1}),
        ("gpu:h100:0(IDX:N/A)", {"h100": 0}),
        ("gpu:h100:2(IDX:0-1)", {"h100": 2}),
        ("gpu:h100:2(S:0-1)", {"h100": 2}),
        ("gpu:a100:3(IDX:0,2-3),shard:a100:8", {"a100": 3}),
        ("gpu:a100:4,shard:8", {"a100": 4}),
        ("shard:8,gpu:a100:4", {"a100": 4}),
        ("gpu:8", {"": 8}),
        ("gpu:a100:2,gpu:a100:2", {"a100": 4}),
        ("gpu:a100:2(S:0),gpu:v100:1(S:1)", {"a100": 2, "v100": 1}),
        ("mps:400,gpu:tesla_t4:1", {"tesla_t4": 1}),
        ("(null)", {}),
        ("", {}),
        ("gpu", {}),
        ("gpu:a100:x", {}),
        ("gpus:a100:4", {}),
    ],
)
def test_parse_gpu_gres(gres: str, counts: dict[str, int]) -> None:
    assert parse_gpu_gres(gres) == counts
