"""``jupyter asgard status``: every Asgard kernel job of this user, from the Jupyter servers and from Slurm.

The running Jupyter servers know what Slurm does not (kernelspec, notebook);
Slurm knows what no server does: jobs of kernels started by nbclient or
papermill, and jobs a crashed server left behind, which hold GPUs until
someone cancels them.  Showing both is what keeps anything from running unseen.
So are the detachable kernels a server found and did not take over (another
server holds them, their kernelspec is gone): they run, and hold their GPUs,
in no notebook of that server.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field
from typing import Any

from ..errors import ServerRefused, SlurmError
from ..kernel.kernel_row import UNKNOWN_START, KernelRow
from ..slurm.slurm_client import SlurmClient
from ..slurm.slurm_commands import (
    DETACHABLE_MARK,
    SQUEUE_FIELDS,
    JobInfo,
    duration_seconds,
    expected_start,
    kernel_id_of,
    parse_holder,
    parse_queue_positions,
    parse_squeue,
    pid_alive,
    queue_order_argv,
    tres_gpus,
)
from .server_requests import call, running_servers

TIMEOUT = 5.0
UNKNOWN = "not known to a running Jupyter server"
COLUMNS = ("KERNEL", "KERNELSPEC", "STATE", "NODE", "GPUS", "TIME LEFT", "JOB", "NOTEBOOK/SERVER")
FOUND_COLUMNS = ("KERNEL", "KERNELSPEC", "JOB", "NODE", "NOTEBOOK", "WHY NOT TAKEN OVER")
ENDED_COLUMNS = ("KERNEL", "JOB", "NOTEBOOK", "WHY IT ENDED")
RELEASE_HINT = "End a detached kernel (its job and its GPUs) with: jupyter asgard release KERNEL"


@dataclass
class Status:
    """The rows to show, the detached kernels the servers found (and did not take over) or saw end, and what
    kept the picture from being complete."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    found: list[dict[str, Any]] = field(default_factory=list)
    ended: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def merged(cls, parts: list[Status]) -> Status:
        """One picture from several; a detached kernel that two servers found, or saw end, is listed once."""
        return cls(
            [row for part in parts for row in part.rows],
            [note for part in parts for note in part.notes],
            _once([row for part in parts for row in part.found]),
            _once([row for part in parts for row in part.ended]),
        )

    def to_json(self) -> dict[str, Any]:
        return {"kernels": self.rows, "detached": {"found": self.found, "ended": self.ended}}


def _once(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first row of each kernel, in order."""
    first: dict[str, dict[str, Any]] = {}
    for row in rows:
        first.setdefault(row["kernel_id"], row)
    return list(first.values())


# --- the servers' view ---------------------------------------------------------------------------


def _not_shown(url: str, why: str) -> Status:
    return Status(notes=[f"Jupyter server {url} {why}; its kernels are not shown, so their jobs appear as unknown"])


def server_status(server: dict[str, Any], timeout: float) -> Status:
    """One server's kernel rows, each naming the server; a note instead when it cannot tell."""
    url = server.get("url", "")
    try:
        answer = call(server, "GET", "/asgard/api/kernels", timeout=timeout)
    except ServerRefused as error:
        if error.status == 404:  # a server without the jupyter_asgard extension runs no Asgard kernels
            return Status()
        return _not_shown(url, f"answered HTTP {error.status} ({error})")
    except OSError as error:
        return _not_shown(url, f"did not answer ({getattr(error, 'reason', error)})")
    except ValueError:
        return _not_shown(url, "did not answer in JSON")
    notes = (
        []
        if answer.get("slurm_reachable", True)
        else [f"Jupyter server {url} cannot reach Slurm ({answer.get('slurm_error')}); its job states may be stale"]
    )
    rows = [{**row, "server": url, "known_to_server": True} for row in answer.get("kernels", [])]
    return Status.merged([Status(rows, notes), server_detached(server, timeout)])


def server_detached(server: dict[str, Any], timeout: float) -> Status:
    """The detached kernels one server found and did not take over, and those it saw end, each naming the
    server. Nothing where it cannot tell: a server older than detachable kernels (404), or one that stopped
    answering since it listed its kernels (it is noted when it does not answer at all)."""
    url = server.get("url", "")
    try:
        answer = call(server, "GET", "/asgard/api/detached", timeout=timeout)
        found, ended = answer["found"], answer["ended"]
    except (ServerRefused, OSError, ValueError, KeyError, TypeError):
        return Status()
    return Status(found=[{**row, "server": url} for row in found], ended=[{**row, "server": url} for row in ended])


async def servers_status(timeout: float) -> Status:
    """All of this user's servers (JUPYTER_RUNTIME_DIR is honoured), asked side by side."""
    answers = await asyncio.gather(*(asyncio.to_thread(server_status, server, timeout) for server in running_servers()))
    return Status.merged(list(answers))


# --- Slurm's view ----------------------------------------------------------------------------------


async def kernel_jobs_in_queue(client: SlurmClient, timeout: float) -> tuple[list[JobInfo], dict[str, int]]:
    """This user's Asgard jobs still in the queue, and how many jobs wait ahead of each pending one."""
    columns = ",".join(f"{column}:|" for column in SQUEUE_FIELDS.values())
    result = (await client.run(["squeue", "--me", "--noheader", f"--Format={columns}"], timeout=timeout)).checked()
    jobs = [job for job in parse_squeue(result.stdout).values() if kernel_id_of(job.name) is not None]
    pending = [job.job_id for job in jobs if job.state == "PENDING"]
    if not pending:
        return jobs, {}
    order = (await client.run(queue_order_argv(), timeout=timeout)).checked()
    return jobs, parse_queue_positions(order.stdout, pending)


def started_by(comment: str) -> str:
    """Who submitted the job, from the comment the provisioner sets: tells a crashed server's job apart."""
    holder = parse_holder(comment)
    if holder is None:
        return ""
    host, pid = holder
    gone = host == socket.gethostname() and not pid_alive(pid)
    return f"pid {pid} on {host}" + (", no longer running" if gone else "")


def unknown_job_row(job: JobInfo, position: int | None) -> dict[str, Any]:
    """A row like the servers' for a job no server reported, from squeue alone."""
    expected, seconds = expected_start(job)
    row = KernelRow(
        kernel_id=kernel_id_of(job.name) or "",
        job_id=job.job_id,
        state=job.state,
        reason=job.reason if job.state == "PENDING" else "",
        queue_position=position,
        expected_start=expected,
        expected_start_seconds=seconds,
        node="" if job.state == "PENDING" else job.nodes,
        gpus=tres_gpus(job) or {"count": 0, "type": ""},
        partition=job.partition,
        start_time=job.start_time if job.state != "PENDING" else "",
        time_limit=job.time_limit,
        time_left=job.time_left,
        time_left_seconds=duration_seconds(job.time_left),
        detachable=job.comment == DETACHABLE_MARK,
    )
    return {**row.to_json(), "server": "", "known_to_server": False, "started_by": started_by(job.comment)}


async def unknown_jobs(known: list[dict[str, Any]], timeout: float) -> Status:
    """Rows for queued Asgard jobs that no server reported, by job id or by the kernel id in the job name."""
    try:
        jobs, positions = await kernel_jobs_in_queue(SlurmClient(), timeout)
    except SlurmError as error:
        return Status(notes=[f"squeue failed ({error}); jobs no Jupyter server knows are not shown"])
    job_ids = {row.get("job_id") for row in known}
    kernel_ids = {row.get("kernel_id") for row in known}
    unknown = [job for job in jobs if job.job_id not in job_ids and kernel_id_of(job.name) not in kernel_ids]
    unknown.sort(key=lambda job: int(job.job_id) if job.job_id.isdigit() else 0)
    return Status([unknown_job_row(job, positions.get(job.job_id)) for job in unknown])


async def _collect(timeout: float) -> Status:
    servers = await servers_status(timeout)
    return Status.merged([servers, await unknown_jobs(servers.rows, timeout)])


def collect(timeout: float = TIMEOUT) -> Status:
    """Servers first, then squeue: a job that starts in between is matched by the kernel id in its name."""
    return asyncio.run(_collect(timeout))


# --- the table -------------------------------------------------------------------------------------


def state_text(row: dict[str, Any]) -> str:
    """RUNNING, or PENDING with Slurm's reason, the queue ahead and when Slurm expects it to start: what a
    waiting user asks first."""
    state = row.get("state") or "STARTING"
    if state != "PENDING":
        return state
    details = [row["reason"]] if row.get("reason") else []
    if row.get("queue_position") is not None:
        details.append(f"{row['queue_position']} ahead")
    expected = row.get("expected_start")
    details.append(f"expected {expected.replace('T', ' ')}" if expected else UNKNOWN_START)
    return f"PENDING ({', '.join(details)})" if details else state


def gpus_text(gpus: dict[str, Any]) -> str:
    if not gpus or not gpus.get("count"):
        return "-"
    return f"{gpus['type']}:{gpus['count']}" if gpus.get("type") else str(gpus["count"])


def where_text(row: dict[str, Any]) -> str:
    """The notebook and its server; for a job no server knows, that fact and who submitted it. A detachable
    kernel says so: it outlives its server, and a job no server knows may be one waiting for the next."""
    mark = " (detachable)" if row.get("detachable") else ""
    if not row.get("known_to_server"):
        return UNKNOWN + (f" (started by {row['started_by']})" if row.get("started_by") else "") + mark
    return (f"{row['path']} @ {row['server']}" if row.get("path") else row["server"]) + mark


def table_row(row: dict[str, Any]) -> tuple[str, ...]:
    return (
        row["kernel_id"][:8],
        row.get("kernel_name") or "-",
        state_text(row),
        row.get("node") or "-",
        gpus_text(row.get("gpus") or {}),
        row.get("time_left") or "-",
        row.get("job_id") or "-",
        where_text(row),
    )


def fixed_width(table: list[tuple[str, ...]]) -> list[str]:
    """A fixed-width table, the last column unpadded so long paths and reasons do not push every line wide."""
    widths = [max(len(line[column]) for line in table) for column in range(len(table[0]) - 1)]
    return [
        "  ".join([*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[-1]]) for line in table
    ]


def kernels_table(rows: list[dict[str, Any]]) -> list[str]:
    """The kernel jobs, and how to cancel those no server runs (a detachable kernel's is released instead, so
    that its record goes with its job: see render)."""
    if not rows:
        return ["No Asgard kernels."]
    lines = fixed_width([COLUMNS, *(table_row(row) for row in rows)])
    if any(not row["known_to_server"] and not row.get("detachable") for row in rows):
        lines.append("Cancel a job that no one uses with: scancel JOB")
    return lines


def found_table(found: list[dict[str, Any]]) -> list[str]:
    """Detached kernels a server found and did not take over: they run, in no notebook of that server."""
    if not found:
        return []
    rows = [_cells(row, "kernel_name", "job_id", "node", "path", "why") for row in found]
    heading = "Detached kernels a Jupyter server of yours found and did not take over:"
    return ["", heading, *fixed_width([FOUND_COLUMNS, *rows])]


def _cells(row: dict[str, Any], *keys: str) -> tuple[str, ...]:
    """The kernel's short id (as the kernels table shows it), then the row's values, "-" where empty."""
    return (row["kernel_id"][:8], *(str(row.get(key) or "-") for key in keys))


def ended_table(ended: list[dict[str, Any]]) -> list[str]:
    """Detached kernels that ended while no server held them: why, since their notebooks lost them unseen."""
    if not ended:
        return []
    rows = [_cells(row, "job_id", "path", "why") for row in ended]
    return ["", "Detached kernels that ended while no Jupyter server held them:", *fixed_width([ENDED_COLUMNS, *rows])]


def render(status: Status) -> str:
    """The kernel jobs, then the detached kernels the servers found or saw end (sections shown only if any),
    with how to end those that run in no notebook once."""
    lines = kernels_table(status.rows) + found_table(status.found)
    if status.found or any(not row["known_to_server"] and row.get("detachable") for row in status.rows):
        lines.append(RELEASE_HINT)
    return "\n".join(lines + ended_table(status.ended))
