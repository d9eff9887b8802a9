"""Where every Asgard kernel of a process stands in Slurm: the rows of the kernel job table.

The REST API, `jupyter asgard status` and the JupyterLab front end all show
this one table; the data comes from the provisioners and the shared Slurm
monitor, never from a Slurm call per kernel.
"""

from __future__ import annotations

from typing import Any

from ..kernel.kernel_row import KernelRow
from ..kernel.provisioner import PyxisProvisioner, live_provisioners
from ..slurm.monitor import SlurmMonitor
from ..slurm.slurm_commands import ENDED_STATES, JobInfo, duration_seconds, expected_start, tres_gpus
from .culling import cull_countdown


def gpus_of(info: JobInfo | None, provisioner: PyxisProvisioner) -> dict[str, Any]:
    """GPU count and type: what Slurm reports for the job, else what the kernel asked for."""
    reported = tres_gpus(info) if info else None
    if reported:
        return reported
    gpu_type, count = provisioner.launch.gpu_request() if provisioner.launch else ("", 0)
    return {"count": count, "type": gpu_type}


def kernel_job(provisioner: PyxisProvisioner, monitor: SlurmMonitor) -> dict[str, Any]:
    """One kernel's row, from its provisioner (and its kernel manager, the provisioner's parent)."""
    km = provisioner.parent
    job_id = provisioner.job_id
    info = (monitor.job(job_id) if job_id else None) or (
        provisioner.allocation.info if provisioner.allocation else None
    )
    state = info.state if info else ("SUBMITTING" if provisioner.launch else "")
    if provisioner.end_state and state not in ENDED_STATES:
        state = provisioner.end_state
    expected, seconds = expected_start(info) if info and state == "PENDING" else ("", None)
    phase, in_phase = provisioner.phase
    idle, cull_in = cull_countdown(km, provisioner.kernel_id)
    row = KernelRow(
        kernel_id=provisioner.kernel_id,
        kernel_name=getattr(km, "kernel_name", ""),
        display_name=getattr(provisioner.kernel_spec, "display_name", ""),
        execution_state=getattr(km, "execution_state", "starting"),
        job_id=job_id,
        state=state,
        reason=info.reason if info and state == "PENDING" else "",
        queue_position=monitor.positions.get(job_id),
        expected_start=expected,
        expected_start_seconds=seconds,
        node=provisioner.node or (info.nodes if info else ""),
        gpus=gpus_of(info, provisioner),
        partition=info.partition if info else (provisioner.launch.partition if provisioner.launch else ""),
        start_time=info.start_time if info and state != "PENDING" else "",
        time_limit=info.time_limit if info else "",
        time_left=info.time_left if info else "",
        time_left_seconds=duration_seconds(info.time_left) if info else None,
        image=provisioner.launch.image if provisioner.launch else provisioner.image,
        slurm_reachable=monitor.reachable,
        encryption=provisioner.encryption,
        phase=phase,
        phase_seconds=None if in_phase is None else int(in_phase),
        idle_seconds=idle,
        cull_in_seconds=cull_in,
        detachable=provisioner.outlives_server,
        taken_over_at=None if provisioner.taken_over_at is None else int(provisioner.taken_over_at),
        container=provisioner.container,
        container_notice=provisioner.container_notice,
        container_home=provisioner.container_home,
        container_move=provisioner.container_move,
    )
    # The handler turns the notebook's server-side name into row.path (jupyter_server's sessions know it).
    return {**row.to_json(), "session_name": provisioner.session_name}


def kernel_jobs(monitor: SlurmMonitor) -> list[dict[str, Any]]:
    """Rows for every Asgard kernel of this process, those waiting in the queue included."""
    return [kernel_job(provisioner, monitor) for provisioner in live_provisioners()]
