"""Slurm command lines as data: rendering and parsing, no processes.

Keeping these pure (as dask-jobqueue keeps its job scripts) means every flag
the provisioner passes to ``salloc``/``srun`` can be unit-tested and shown to a
user (the panel's preview) without a cluster.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..launch.launch_config import LaunchConfig

# Slurm's final job states (kernel_row.ENDED has a label and a reason for each, tested to be the same set).
ENDED_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "REVOKED",
        "SPECIAL_EXIT",
        "TIMEOUT",
    }
)

# squeue --Format columns, each followed by "|" (":|" = no width limit, "|" after the value).
SQUEUE_FIELDS = {
    "job_id": "JobID",
    "name": "Name",
    "state": "State",
    "reason": "Reason",
    "nodes": "NodeList",
    "tres_per_job": "tres-per-job",
    "tres_per_node": "tres-per-node",
    "start_time": "StartTime",
    "time_limit": "TimeLimit",
    "time_left": "TimeLeft",
    "partition": "Partition",
    "comment": "Comment",
}
_SALLOC_LINE = re.compile(
    r"^salloc: (?:(?P<granted>Granted job allocation) (?P<granted_id>\d+)"
    r"|(?P<pending>Pending job allocation) (?P<pending_id>\d+)"
    r"|(?P<revoked>Job(?: allocation)?) (?P<revoked_id>\d+) has (?:been revoked|exceeded its time limit)"
    r"|error: (?P<error>.*))"
)


@dataclass(frozen=True)
class SallocEvent:
    """What one line of salloc's stderr says about the allocation."""

    kind: str  # "granted", "pending", "revoked", "error" or "info"
    job_id: str = ""
    message: str = ""


@dataclass(frozen=True)
class JobInfo:
    """One job as squeue reports it."""

    job_id: str
    name: str = ""
    state: str = ""
    reason: str = ""
    nodes: str = ""
    tres_per_job: str = ""
    tres_per_node: str = ""
    start_time: str = ""
    time_limit: str = ""
    time_left: str = ""
    partition: str = ""
    comment: str = ""


# How an Asgard kernel's allocation is named and marked; everything that finds or recognises one uses these.
JOB_NAME_PREFIX = "jupyter-asgard-"
HOLDER_MARK = "jupyter-asgard"


def job_name(kernel_id: str) -> str:
    """The allocation's job name: how the kernel's job is found in squeue, by people and by cleanup."""
    return JOB_NAME_PREFIX + kernel_id


def kernel_id_of(name: str) -> str | None:
    """The kernel id an Asgard job's name carries; None for other jobs."""
    return name.removeprefix(JOB_NAME_PREFIX) if name.startswith(JOB_NAME_PREFIX) else None


def holder_comment(host: str, pid: int) -> str:
    """Who holds the allocation (--comment): a server that restarts after a crash recognises its orphans by it."""
    return f"{HOLDER_MARK}:{host}:{pid}"


def parse_holder(comment: str) -> tuple[str, int] | None:
    """(host, pid) of the holder_comment; None for any other comment."""
    mark, _, holder = comment.partition(":")
    host, _, pid = holder.rpartition(":")
    return (host, int(pid)) if mark == HOLDER_MARK and host and pid.isdigit() else None


def pid_alive(pid: int) -> bool:
    """Whether a process of this host has that pid (another user's counts: it exists)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# salloc's local command: it names the allocation's node (salloc sets SLURM_JOB_NODELIST for it) on its
# stdout, then reads the pipe the Jupyter server holds open, so it ends, and salloc relinquishes the
# allocation, when the server ends, however it ends (even SIGKILL).
LEASE_COMMAND = ["sh", "-c", 'echo "$SLURM_JOB_NODELIST" && exec cat']


ONE_TASK = ("--nodes=1", "--ntasks=1")  # a kernel is one process on one node


def allocation_options(config: LaunchConfig) -> list[str]:
    """Slurm options of the kernel's allocation (one node, one task besides), as salloc asks for it and
    srun --test-only estimates it."""
    options = {
        "--partition": config.partition,
        "--gpus": config.gpus,
        "--cpus-per-task": str(config.cpus_per_task) if config.cpus_per_task else "",
        "--mem": config.mem,
        "--time": config.time,
        "--account": config.account,
        "--qos": config.qos,
        "--reservation": config.reservation,
        "--constraint": config.constraint,
    }
    return [f"{option}={value}" for option, value in options.items() if value]


def salloc_argv(
    config: LaunchConfig, job_name: str, comment: str, exclude: tuple[str, ...] = (), salloc: str = "salloc"
) -> list[str]:
    """The allocation that holds the kernel's GPUs across restarts, for as long as the server lives."""
    argv = [salloc, f"--job-name={job_name}", *ONE_TASK, f"--comment={comment}", *allocation_options(config)]
    if exclude:
        argv.append(f"--exclude={','.join(exclude)}")
    return argv + list(config.salloc_args) + LEASE_COMMAND


def own_job_argv(
    job_name: str, comment: str, options: dict[str, str], command: list[str], srun: str = "srun"
) -> list[str]:
    """A job of its own that srun allocates and runs (one process on one node): an image import, a container's
    save or removal on its node; options (--partition, --nodelist, --time, ...): those left empty left out."""
    chosen = [f"{option}={value}" for option, value in options.items() if value]
    return [srun, f"--job-name={job_name}", *ONE_TASK, f"--comment={comment}", *chosen, *command]


_SRUN_JOB_LINE = re.compile(
    r"srun: job (?P<job_id>\d+) (?:queued and waiting for resources|has been allocated resources)"
)


def srun_job_id(line: str) -> str:
    """The job id srun names when its new job waits in the queue, or is granted after waiting; "" otherwise."""
    match = _SRUN_JOB_LINE.match(line.strip())
    return match["job_id"] if match else ""


DETACHABLE_MARK = "jupyter-asgard-detachable"  # a detachable kernel's batch job: no server's orphan


def sbatch_argv(
    config: LaunchConfig, job_name: str, output: str, exclude: tuple[str, ...] = (), sbatch: str = "sbatch"
) -> list[str]:
    """A detachable kernel's batch job, whose script (its keeper, read from stdin) holds the allocation on the
    node. Never requeued: after a node failure the kernel and what was in its memory are gone, and a requeued
    job would start an empty one nobody asked for."""
    argv = [
        sbatch,
        "--parsable",
        f"--job-name={job_name}",
        *ONE_TASK,
        f"--comment={DETACHABLE_MARK}",
        "--no-requeue",
        f"--output={output}",
        *allocation_options(config),
    ]
    if exclude:
        argv.append(f"--exclude={','.join(exclude)}")
    return argv + list(config.salloc_args)


def parse_sbatch(output: str) -> str:
    """The job id of sbatch --parsable's answer ("ID" or "ID;CLUSTER"); "" if there is none."""
    job_id = output.strip().partition(";")[0]
    return job_id if job_id.isdigit() else ""


def estimate_argv(config: LaunchConfig, srun: str = "srun") -> list[str]:
    """Slurm's estimate of when the allocation would start, submitting nothing (salloc has no --test-only)."""
    return [srun, "--test-only", *ONE_TASK, *allocation_options(config), *config.salloc_args, "true"]


_TEST_ONLY = re.compile(
    r"Job \d+ to start at (?P<start>\S+) using \d+ processors on nodes (?P<nodes>\S+) in partition (?P<partition>\S+)"
)


def parse_test_only(output: str) -> tuple[str, str, str] | None:
    """(start, nodes, partition) of srun --test-only's answer, None where Slurm refused the request."""
    match = _TEST_ONLY.search(output)
    return (match["start"], match["nodes"], match["partition"]) if match else None


def srun_argv(
    config: LaunchConfig, job_id: str, container: list[str], command: list[str], srun: str = "srun"
) -> list[str]:
    """The kernel step inside the allocation: relaunched alone on restart."""
    argv = [
        srun,
        f"--jobid={job_id}",
        "--job-name=jupyter-kernel",
        "--nodes=1",
        "--ntasks=1",
        "--overlap",
        "--kill-on-bad-exit=1",
        "--input=none",
    ]
    if config.cpus_per_task:
        argv.append(f"--cpus-per-task={config.cpus_per_task}")
    return argv + container + list(config.srun_args) + command


def scancel_argv(
    job_id: str, step: str | None = None, signal: str | None = None, scancel: str = "scancel"
) -> list[str]:
    target = f"{job_id}.{step}" if step is not None else job_id
    argv = [scancel, "--quiet"]
    if signal:
        argv.append(f"--signal={signal}")
    return [*argv, target]


def scancel_named_argv(name: str, scancel: str = "scancel") -> list[str]:
    """This user's jobs of that name: a kernel's allocation whose id its salloc never said (killed before it
    could); the name holds the kernel id, so it names that one job."""
    return [scancel, "--quiet", "--me", f"--name={name}"]


def job_steps_argv(job_id: str, squeue: str = "squeue") -> list[str]:
    """The job's steps Slurm runs now, each as STEP|NAME."""
    return [squeue, "--steps", "--noheader", f"--jobs={job_id}", "--format=%i|%j"]


def named_steps(output: str, name: str) -> list[str]:
    """The ids (JOB.STEP's STEP) of the steps of that name in job_steps_argv's output."""
    steps = []
    for line in output.splitlines():
        step, _, step_name = line.strip().partition("|")
        if step_name == name:
            steps.append(step.rpartition(".")[2])
    return steps


def squeue_argv(job_ids: list[str], squeue: str = "squeue") -> list[str]:
    """One call for all watched jobs, finished ones included (Slurm keeps them for MinJobAge)."""
    columns = ",".join(f"{column}:|" for column in SQUEUE_FIELDS.values())
    return [squeue, "--noheader", "--states=all", f"--jobs={','.join(job_ids)}", f"--Format={columns}"]


def parse_salloc_line(line: str) -> SallocEvent:
    match = _SALLOC_LINE.match(line.strip())
    if not match:
        return SallocEvent("info", message=line.strip())
    if match["granted"]:
        return SallocEvent("granted", match["granted_id"])
    if match["pending"]:
        return SallocEvent("pending", match["pending_id"])
    if match["revoked"]:
        return SallocEvent("revoked", match["revoked_id"])
    return SallocEvent("error", message=match["error"].strip())


_GPU_TRES = re.compile(r"gpu[:/=](?:(?P<type>[A-Za-z0-9_-]+)[:=])?(?P<count>\d+)")


def tres_gpus(info: JobInfo) -> dict[str, Any] | None:
    """GPU count and type as squeue reports the job's request (gres:gpu:h100:2), if it asked for GPUs."""
    match = _GPU_TRES.search(info.tres_per_job or info.tres_per_node)
    return {"count": int(match["count"]), "type": match["type"] or ""} if match else None


def parse_squeue(output: str) -> dict[str, JobInfo]:
    jobs = {}
    for line in output.splitlines():
        values = [value.strip() for value in line.split("|")]
        if len(values) < len(SQUEUE_FIELDS):
            continue
        job = JobInfo(**dict(zip(SQUEUE_FIELDS, values, strict=False)))  # extra fields ignored
        jobs[job.job_id] = job
    return jobs


def sacct_argv(job_ids: list[str], sacct: str = "sacct") -> list[str]:
    """Final states of jobs squeue has forgotten (needs Slurm accounting; asked once per job)."""
    return [
        sacct,
        "--noheader",
        "--parsable2",
        "--allocations",
        f"--jobs={','.join(job_ids)}",
        "--format=JobID,State,ExitCode",
    ]


def parse_sacct(output: str) -> dict[str, JobInfo]:
    jobs = {}
    for line in output.splitlines():
        fields = line.split("|")
        if len(fields) >= 2 and fields[0].isdigit():
            # sacct says "CANCELLED by 1000"; the state is the first word.
            jobs[fields[0]] = JobInfo(fields[0], state=fields[1].split()[0] if fields[1] else "")
    return jobs


def queue_order_argv(squeue: str = "squeue") -> list[str]:
    """All pending jobs, highest priority first: where a waiting kernel stands in its partition's queue."""
    return [squeue, "--noheader", "--states=PENDING", "--sort=-p,i", "--Format=JobID:|,Partition:|"]


def parse_queue_positions(output: str, job_ids: list[str]) -> dict[str, int]:
    """For each of job_ids that is pending: how many jobs wait ahead of it in its partition."""
    ahead: dict[str, int] = {}
    positions = {}
    for line in output.splitlines():
        fields = [field.strip() for field in line.split("|")]
        if len(fields) < 2:
            continue
        job_id, partition = fields[0], fields[1]
        if job_id in job_ids:
            positions[job_id] = ahead.get(partition, 0)
        ahead[partition] = ahead.get(partition, 0) + 1
    return positions


def duration_seconds(text: str) -> int | None:
    """Slurm's [D-]HH:MM:SS / MM:SS / MM durations in seconds; None for UNLIMITED, INVALID, N/A."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if not match:
        return None
    days, first, second, third = match.groups()
    parts = [int(first)] + [int(part) for part in (second, third) if part is not None]
    if days is not None:
        hours, minutes, seconds = [*parts, 0, 0][:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    elif len(parts) == 2:
        hours, minutes, seconds = 0, parts[0], parts[1]
    else:
        hours, minutes, seconds = 0, parts[0], 0
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


# Slurm writes a start it cannot tell as a time: a year from now (srun --test-only, squeue --start, when what
# the job needs is held by jobs without a time limit) or 2**27 - 1 minutes ahead. No scheduler plans that far
# (the backfill window is 30 days at most), so a start this far away means "not known", never a date.
UNKNOWN_START_SECONDS = 364 * 24 * 3600


def seconds_until(text: str, now: datetime | None = None) -> int | None:
    """Seconds from now until Slurm's timestamp (2026-11-30T14:35:00, the cluster's local time, which is the
    server's); None where Slurm does not know: N/A, Unknown, and its placeholders a year or more away. Never
    below 0: a start Slurm expected a moment ago is due."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    seconds = int((when - (now or datetime.now())).total_seconds())
    return None if seconds >= UNKNOWN_START_SECONDS else max(0, seconds)


def expected_start(job: JobInfo, now: datetime | None = None) -> tuple[str, int | None]:
    """A PENDING job's start as Slurm's scheduler expects it (squeue --start's StartTime) and the seconds until
    then; ("", None) where Slurm has no estimate or the job is not pending."""
    seconds = seconds_until(job.start_time, now) if job.state == "PENDING" else None
    return (job.start_time if seconds is not None else "", seconds)


def orphans_argv(squeue: str = "squeue") -> list[str]:
    """This user's jobs with the name and comment that mark Asgard allocations and their holders."""
    return [squeue, "--me", "--noheader", "--Format=JobID:|,Name:|,Comment:|"]


def orphaned_jobs(output: str, host: str, alive: Callable[[int], bool]) -> list[str]:
    """Asgard allocations held by a process of this host that no longer runs."""
    orphans = []
    for line in output.splitlines():
        fields = [field.strip() for field in line.split("|")]
        if len(fields) < 3 or kernel_id_of(fields[1]) is None:
            continue
        holder = parse_holder(fields[2])
        if holder is not None and holder[0] == host and not alive(holder[1]):
            orphans.append(fields[0])
    return orphans
