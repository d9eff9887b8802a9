"""Slurm command lines rendered from a launch configuration, and Slurm's output parsed back (pure, no Slurm)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime, timedelta

import pytest

from jupyter_asgard.containers.container_steps import container_options
from jupyter_asgard.launch.extra_args import extra_args_problems
from jupyter_asgard.launch.launch_config import LaunchConfig
from jupyter_asgard.launch.mounts import Mount, parse_mount
from jupyter_asgard.slurm.slurm_commands import (
    LEASE_COMMAND,
    JobInfo,
    SallocEvent,
    expected_start,
    job_name,
    job_steps_argv,
    named_steps,
    parse_salloc_line,
    parse_squeue,
    salloc_argv,
    scancel_argv,
    scancel_named_argv,
    squeue_argv,
    srun_argv,
)

IMAGE = "/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh"
ENV = {"USER": "alice", "HOME": "/home/alice"}


def config(**values) -> LaunchConfig:
    return LaunchConfig.parse({"image": IMAGE, **values}, ENV)


# --- salloc -----------------------------------------------------------------------------------


def test_salloc_argv_minimal() -> None:
    assert salloc_argv(config(), "jupyter-asgard-k1", "jupyter-asgard:host:42") == [
        "salloc",
        "--job-name=jupyter-asgard-k1",
        "--nodes=1",
        "--ntasks=1",
        "--comment=jupyter-asgard:host:42",
        *LEASE_COMMAND,
    ]


def test_salloc_argv_all_resources() -> None:
    launch = config(
        partition="H100",
        gpus="h100:2",
        cpus_per_task=16,
        mem="64G",
        time="8:00:00",
        account="vision",
        qos="high",
        reservation="course",
        constraint="ib&nvlink",
        salloc_args=["--signal=USR1@60", "--mail-type=END"],
    )
    assert salloc_argv(launch, "jk", "c", salloc="/opt/slurm/bin/salloc") == [
        "/opt/slurm/bin/salloc",
        "--job-name=jk",
        "--nodes=1",
        "--ntasks=1",
        "--comment=c",
        "--partition=H100",
        "--gpus=h100:2",
        "--cpus-per-task=16",
        "--mem=64G",
        "--time=8:00:00",
        "--account=vision",
        "--qos=high",
        "--reservation=course",
        "--constraint=ib&nvlink",
        "--signal=USR1@60",
        "--mail-type=END",
        *LEASE_COMMAND,
    ]


def test_salloc_argv_gpu_count_from_int() -> None:
    assert salloc_argv(config(gpus=1), "jk", "c") == [
        "salloc",
        "--job-name=jk",
        "--nodes=1",
        "--ntasks=1",
        "--comment=c",
        "--gpus=1",
        *LEASE_COMMAND,
    ]


def test_salloc_argv_avoids_nodes_that_died_under_the_kernel() -> None:
    argv = salloc_argv(config(), "jk", "c", exclude=("gpu01", "gpu07"))
    assert argv[-4:] == ["--exclude=gpu01,gpu07", *LEASE_COMMAND]


def test_the_lease_command_names_the_node_then_holds_the_allocation_until_its_pipe_closes() -> None:
    """salloc runs it with the allocation's SLURM_JOB_NODELIST; it ends when the server's end of stdin does."""
    lease = subprocess.Popen(
        LEASE_COMMAND,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "SLURM_JOB_NODELIST": "gpu07"},
    )
    assert lease.stdout.readline() == "gpu07\n"
    assert lease.poll() is None
    lease.stdin.close()
    assert lease.wait(timeout=10) == 0


def test_salloc_argv_leaves_out_zero_cpus() -> None:
    assert "--cpus-per-task=0" not in salloc_argv(config(cpus_per_task=0), "jk", "c")


def test_salloc_args_do_not_go_to_srun_and_back() -> None:
    launch = config(salloc_args=["--mail-type=END"], srun_args=["--gpu-bind=closest"])
    assert salloc_argv(launch, "jk", "c")[-4:] == ["--mail-type=END", *LEASE_COMMAND]
    assert "--gpu-bind=closest" not in salloc_argv(launch, "jk", "c")
    assert "--mail-type=END" not in srun_argv(launch, "7", [], ["python3"])


# --- container options ------------------------------------------------------------------------


def test_container_options_asgard_example() -> None:
    launch = config(mounts=["/netscratch/$USER:/netscratch/$USER", "/ds:/ds:ro"])
    options = container_options(
        launch, launch.parsed_mounts(), "/netscratch/alice/project", "asgard-torch", ["HF_HOME"]
    )
    assert options == [
        f"--container-image={IMAGE}",
        "--container-mounts=/netscratch/alice:/netscratch/alice,/ds:/ds:ro",
        "--container-workdir=/netscratch/alice/project",
        "--container-name=asgard-torch",
        "--container-env=HF_HOME",
    ]


def test_container_options_minimal() -> None:
    assert container_options(config(), [], "/work", "", []) == [
        f"--container-image={IMAGE}",
        "--container-workdir=/work",
    ]


def test_container_options_render_enroot_flags_with_plus() -> None:
    mounts = [parse_mount("/ds:/ds:ro,rprivate"), Mount("/w", "/w")]
    assert container_options(config(), mounts, "/w", "", [])[1] == "--container-mounts=/ds:/ds:ro+rprivate,/w:/w"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, ["--container-writable", "--container-remap-root", "--container-mount-home"]),
        (False, ["--container-readonly", "--no-container-remap-root", "--no-container-mount-home"]),
        (None, []),
    ],
)
def test_container_flag_pairs(value: bool | None, expected: list[str]) -> None:
    launch = LaunchConfig(image=IMAGE, container_writable=value, container_remap_root=value, container_mount_home=value)
    assert container_options(launch, [], "/w", "n", []) == [
        f"--container-image={IMAGE}",
        "--container-workdir=/w",
        "--container-name=n",
        *expected,
    ]


def test_container_flags_independent() -> None:
    launch = config(container_writable=True, container_mount_home=False)
    assert container_options(launch, [], "/w", "", ["A", "B"]) == [
        f"--container-image={IMAGE}",
        "--container-workdir=/w",
        "--container-writable",
        "--no-container-mount-home",
        "--container-env=A,B",
    ]


def test_container_options_registry_image() -> None:
    launch = config(image="docker://nvcr.io#nvidia/pytorch:24.05-py3")
    assert container_options(launch, [], "/w", "", []) == [
        "--container-image=docker://nvcr.io#nvidia/pytorch:24.05-py3",
        "--container-workdir=/w",
    ]


# --- srun -------------------------------------------------------------------------------------


def test_srun_argv() -> None:
    container = ["--container-image=/i.sqsh", "--container-workdir=/w"]
    command = ["python3", "-m", "ipykernel_launcher", "-f", "/tmp/k.json"]
    assert srun_argv(config(), "12", container, command) == [
        "srun",
        "--jobid=12",
        "--job-name=jupyter-kernel",
        "--nodes=1",
        "--ntasks=1",
        "--overlap",
        "--kill-on-bad-exit=1",
        "--input=none",
        "--container-image=/i.sqsh",
        "--container-workdir=/w",
        "python3",
        "-m",
        "ipykernel_launcher",
        "-f",
        "/tmp/k.json",
    ]


def test_srun_argv_with_cpus_and_extra_args() -> None:
    launch = config(cpus_per_task=8, srun_args=["--gpu-bind=closest", "--label"])
    assert srun_argv(launch, "13", ["--container-image=/i.sqsh"], ["python3"], srun="/usr/bin/srun") == [
        "/usr/bin/srun",
        "--jobid=13",
        "--job-name=jupyter-kernel",
        "--nodes=1",
        "--ntasks=1",
        "--overlap",
        "--kill-on-bad-exit=1",
        "--input=none",
        "--cpus-per-task=8",
        "--container-image=/i.sqsh",
        "--gpu-bind=closest",
        "--label",
        "python3",
    ]


@pytest.mark.parametrize("flags", [True, False])
def test_what_jupyter_asgard_sets_cannot_be_given_again_through_extra_args(flags: bool) -> None:
    """Slurm takes the last of two: salloc's own options, the step's hold on its allocation and every Pyxis
    option jupyter-asgard writes are refused in salloc_args and srun_args, abbreviated or not."""
    launch = LaunchConfig(image=IMAGE, container_writable=flags, container_remap_root=flags, container_mount_home=flags)
    own = [arg for arg in salloc_argv(launch, "jupyter-asgard-k1", "c")[1 : -len(LEASE_COMMAND)] if arg.startswith("-")]
    own += [arg for arg in srun_argv(launch, "7", [], [])[1:] if arg.startswith(("--jobid=", "--job-name="))]
    own += container_options(launch, [Mount("/ds", "/ds")], "/w", "n", ["HOME"])
    assert len(own) == 14  # 4 of salloc, 2 of srun, 8 of Pyxis
    for key in ("srun_args", "salloc_args"):
        for arg in own:
            abbreviated = arg.split("=")[0][:-1] + "=x"
            assert [bool(extra_args_problems(key, [given])) for given in (arg, abbreviated)] == [True, True], arg


def test_srun_argv_full_pipeline() -> None:
    launch = config(mounts=["/ds:/ds:ro"], gpus="h100:1", cpus_per_task=4, container_writable=True)
    argv = srun_argv(
        launch, "99", container_options(launch, launch.parsed_mounts(), "/w", "env", []), ["python3", "-c", "pass"]
    )
    assert argv == [
        "srun",
        "--jobid=99",
        "--job-name=jupyter-kernel",
        "--nodes=1",
        "--ntasks=1",
        "--overlap",
        "--kill-on-bad-exit=1",
        "--input=none",
        "--cpus-per-task=4",
        f"--container-image={IMAGE}",
        "--container-mounts=/ds:/ds:ro",
        "--container-workdir=/w",
        "--container-name=env",
        "--container-writable",
        "python3",
        "-c",
        "pass",
    ]


# --- scancel / squeue -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, ["scancel", "--quiet", "12"]),
        ({"step": "0"}, ["scancel", "--quiet", "12.0"]),
        ({"step": "3", "signal": "INT"}, ["scancel", "--quiet", "--signal=INT", "12.3"]),
        ({"signal": "TERM"}, ["scancel", "--quiet", "--signal=TERM", "12"]),
        ({"scancel": "/opt/slurm/bin/scancel"}, ["/opt/slurm/bin/scancel", "--quiet", "12"]),
    ],
)
def test_scancel_argv(kwargs: dict, expected: list[str]) -> None:
    assert scancel_argv("12", **kwargs) == expected


def test_a_jobs_steps_of_one_name_are_found_by_it() -> None:
    """What `squeue --steps` answers for a kernel's allocation with a save step beside the kernel's."""
    assert job_steps_argv("12") == ["squeue", "--steps", "--noheader", "--jobs=12", "--format=%i|%j"]
    output = "12.0|jupyter-asgard-k1\n12.3|jupyter-save-image\n12.extern|extern\n12.5|jupyter-save-image\n"
    assert named_steps(output, "jupyter-save-image") == ["3", "5"]
    assert named_steps("", "jupyter-save-image") == []


FORMAT = (
    "--Format=JobID:|,Name:|,State:|,Reason:|,NodeList:|,tres-per-job:|,tres-per-node:|,StartTime:|,"
    "TimeLimit:|,TimeLeft:|,Partition:|,Comment:|"
)


def test_squeue_argv() -> None:
    assert squeue_argv(["12", "13"]) == ["squeue", "--noheader", "--states=all", "--jobs=12,13", FORMAT]
    assert squeue_argv(["7"], squeue="/opt/squeue") == ["/opt/squeue", "--noheader", "--states=all", "--jobs=7", FORMAT]


# --- salloc's stderr --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "event"),
    [
        ("salloc: Granted job allocation 12", SallocEvent("granted", "12")),
        ("salloc: Granted job allocation 12\n", SallocEvent("granted", "12")),
        ("salloc: Pending job allocation 13", SallocEvent("pending", "13")),
        (
            "salloc: error: invalid partition specified: nope",
            SallocEvent("error", message="invalid partition specified: nope"),
        ),
        (
            "salloc: error: Job submit/allocate failed: Requested node configuration is not available\n",
            SallocEvent("error", message="Job submit/allocate failed: Requested node configuration is not available"),
        ),
        (
            "salloc: job 13 queued and waiting for resources",
            SallocEvent("info", message="salloc: job 13 queued and waiting for resources"),
        ),
        (
            "salloc: job 13 has been allocated resources",
            SallocEvent("info", message="salloc: job 13 has been allocated resources"),
        ),
        ("salloc: Nodes gpu1 are ready for job", SallocEvent("info", message="salloc: Nodes gpu1 are ready for job")),
        ("srun: error: something", SallocEvent("info", message="srun: error: something")),
        ("salloc: Granted job allocation", SallocEvent("info", message="salloc: Granted job allocation")),
        ("  ", SallocEvent("info", message="")),
    ],
)
def test_parse_salloc_line(line: str, event: SallocEvent) -> None:
    assert parse_salloc_line(line) == event


# --- squeue's output --------------------------------------------------------------------------

SQUEUE_OUTPUT = (
    "12|jupyter-asgard-k1|RUNNING|None|gpu1|gres/gpu:h100=2|N/A|2024-05-01T10:00:00|8:00:00|7:59:12|H100|"
    "jupyter-asgard:host:42|\n"
    "13|jupyter-asgard-k2|PENDING|Resources||gres/gpu:1|N/A|N/A|1:00:00|1:00:00|gpu|jupyter-asgard:host:42|\n"
)


def test_parse_squeue() -> None:
    assert parse_squeue(SQUEUE_OUTPUT) == {
        "12": JobInfo(
            job_id="12",
            name="jupyter-asgard-k1",
            state="RUNNING",
            reason="None",
            nodes="gpu1",
            tres_per_job="gres/gpu:h100=2",
            tres_per_node="N/A",
            start_time="2024-05-01T10:00:00",
            time_limit="8:00:00",
            time_left="7:59:12",
            partition="H100",
            comment="jupyter-asgard:host:42",
        ),
        "13": JobInfo(
            job_id="13",
            name="jupyter-asgard-k2",
            state="PENDING",
            reason="Resources",
            nodes="",
            tres_per_job="gres/gpu:1",
            tres_per_node="N/A",
            start_time="N/A",
            time_limit="1:00:00",
            time_left="1:00:00",
            partition="gpu",
            comment="jupyter-asgard:host:42",
        ),
    }


def test_parse_squeue_strips_padding_and_skips_other_lines() -> None:
    output = (
        "slurm_load_jobs error: Invalid job id specified\n"
        "\n"
        " 14 |k|COMPLETED |None|gpu2|||2024-05-01T10:00:00|8:00:00|0:00|H100||\n"
        "15|short|line|\n"
    )
    assert parse_squeue(output) == {
        "14": JobInfo(
            job_id="14",
            name="k",
            state="COMPLETED",
            reason="None",
            nodes="gpu2",
            start_time="2024-05-01T10:00:00",
            time_limit="8:00:00",
            time_left="0:00",
            partition="H100",
        ),
    }


def test_parse_squeue_without_trailing_newline_and_crlf() -> None:
    line = "16|k|FAILED|NonZeroExitCode|gpu1|||t|1:00|0:00|p|c|"
    assert parse_squeue(line)["16"].state == "FAILED"
    assert parse_squeue(line + "\r\n")["16"].comment == "c"


def test_parse_squeue_empty() -> None:
    assert parse_squeue("") == {}


def test_parse_squeue_reads_what_squeue_argv_asks_for() -> None:
    # One value per --Format column, each followed by the '|' suffix, as squeue prints them.
    columns = squeue_argv(["1"])[-1].removeprefix("--Format=").split(",")
    values = [f"v{index}" for index in range(len(columns))]
    line = "".join(f"{value}|" for value in values)
    job = parse_squeue(line)["v0"]
    assert (job.job_id, job.name, job.state, job.comment) == ("v0", "v1", "v2", values[-1])
    assert list(job.__dict__.values()) == values


def test_orphaned_jobs_are_asgard_allocations_of_dead_holders_on_this_host() -> None:
    from jupyter_asgard.slurm.slurm_commands import orphaned_jobs

    output = (
        "5|jupyter-asgard-k1|jupyter-asgard:login1:123|\n"
        "6|jupyter-asgard-k2|jupyter-asgard:login1:456|\n"
        "7|my-training|jupyter-asgard:login1:123|\n"
        "8|jupyter-asgard-k3|jupyter-asgard:login2:123|\n"
        "9|jupyter-asgard-k4|(null)|\n"
    )
    assert orphaned_jobs(output, "login1", lambda pid: pid == 456) == ["5"]


def test_the_job_name_and_holder_conventions_read_back_what_they_write() -> None:
    from jupyter_asgard.slurm.slurm_commands import holder_comment, job_name, kernel_id_of, parse_holder

    assert kernel_id_of(job_name("4f0c-9a")) == "4f0c-9a" and kernel_id_of("other-job") is None
    assert parse_holder(holder_comment("login1.asgard", 4242)) == ("login1.asgard", 4242)
    assert [parse_holder(comment) for comment in ("", "jupyter-asgard:login1:", "mine:login1:7", "x")] == [None] * 4


def test_cli_imports_no_kernel_machinery() -> None:
    """`jupyter asgard install` and `status` start in a fraction of a second: they import neither the
    provisioner nor what it runs (allocation, steps, monitor)."""
    code = (
        "import sys, jupyter_asgard.cli.cli; print(sorted(m for m in sys.modules if m.split('.')[-1] in "
        "('provisioner', 'allocation', 'kernel_step', 'monitor', 'kernel_jobs', 'serverapp')))"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("state", "start_time", "expected"),
    [
        ("PENDING", "2026-11-30T14:35:00", ("2026-11-30T14:35:00", 45 * 60)),
        ("PENDING", "2026-11-30T13:00:00", ("2026-11-30T13:00:00", 0)),  # due: Slurm's estimate has passed
        ("PENDING", "N/A", ("", None)),
        ("PENDING", "Unknown", ("", None)),
        # Slurm's placeholders for a start it cannot tell: a year ahead (blockers without a time limit), 2**27-1 min
        ("PENDING", "2027-11-30T13:50:00", ("", None)),
        ("PENDING", "2027-11-30T13:49:58", ("", None)),  # asked a moment before we read it
        ("PENDING", (datetime(2026, 11, 30, 13, 50) + timedelta(minutes=2**27 - 1)).isoformat(), ("", None)),
        ("PENDING", "2026-12-29T13:50:00", ("2026-12-29T13:50:00", 29 * 86400)),  # a month ahead is a real estimate
        ("RUNNING", "2026-11-30T13:00:00", ("", None)),  # a running job's StartTime is its start, not an estimate
    ],
)
def test_a_pending_job_s_expected_start(state: str, start_time: str, expected: tuple[str, int | None]) -> None:
    job = JobInfo(job_id="7", state=state, start_time=start_time)
    assert expected_start(job, now=datetime(2026, 11, 30, 13, 50)) == expected


def test_a_job_whose_id_salloc_never_said_is_cancelled_by_its_name() -> None:
    assert scancel_named_argv(job_name("k-1")) == ["scancel", "--quiet", "--me", "--name=jupyter-asgard-k-1"]


def test_every_final_state_slurm_knows_has_a_label_and_a_reason_for_users() -> None:
    """Slurm's vocabulary here, the words for users in kernel_row: the same states in both."""
    from jupyter_asgard.kernel.kernel_row import ENDED
    from jupyter_asgard.slurm.slurm_commands import ENDED_STATES

    assert set(ENDED) == ENDED_STATES
