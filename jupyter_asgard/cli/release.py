"""``jupyter asgard release KERNEL_ID``: end a detached kernel, its Slurm job and the GPUs it holds.

A detachable kernel outlives its server, so a user can be left with one that holds GPUs and that no notebook
uses: found by a server that did not take it over (another server holds it, its kernelspec is gone), or
left behind by a server that is gone, with no new one started. The first is released by a server that
found it, as JupyterLab's Release does; the second from the user's records directly, as a server would: the
keeper is told to end the job, Slurm cancels it, and the record goes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from ..errors import AsgardError, SlurmError
from ..kernel.detach_records import KernelRecord, all_records, private_root, records_root, server_id
from ..slurm.slurm_client import SlurmClient
from .server_requests import call, running_servers, unique_match
from .status import TIMEOUT, server_detached

SEE_IDS = "`jupyter asgard status` lists your kernels and detached kernels with their ids"


@dataclass(frozen=True)
class Released:
    """What was ended, for the command's one line."""

    kernel_id: str
    job_id: str
    by: str  # the server that released it, or "" where it was released from the records

    def __str__(self) -> str:
        job = f" and its Slurm job {self.job_id}" if self.job_id else ""
        how = f" (through the Jupyter server {self.by})" if self.by else " (no Jupyter server of yours had found it)"
        return f"released detached kernel {self.kernel_id}{job}{how}"


def found_by_servers(timeout: float) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Each detached kernel a running server found and did not take over: that server, and its row."""
    found: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for server in running_servers():
        for row in server_detached(server, timeout).found:
            found.setdefault(row["kernel_id"], (server, row))
    return found


def recorded() -> dict[str, KernelRecord]:
    """The user's detachable kernels' records, without making their directory where there is none."""
    if not records_root().is_dir():
        return {}
    return {record.kernel_id: record for record in all_records(private_root())}


def release(kernel_id: str, timeout: float = TIMEOUT) -> Released:
    """End the detached kernel kernel_id (or the one whose id starts so): through a server that found it, else
    from the records; LookupError where neither knows it, AsgardError where it cannot be released."""
    found, records = found_by_servers(timeout), recorded()
    full_id = unique_match(kernel_id, [*found, *records])
    if full_id is None:
        raise LookupError(
            f"no detached kernel {kernel_id!r} of yours: no running Jupyter server found one, and your records "
            f"({records_root()}) have none; {SEE_IDS}"
        )
    if full_id in found:
        server, row = found[full_id]
        call(server, "DELETE", f"/asgard/api/detached/{full_id}", timeout=60)
        return Released(full_id, str(row.get("job_id") or ""), server.get("url", ""))
    return release_record(records[full_id])


def release_record(record: KernelRecord) -> Released:
    """No running server found the kernel: claim it (so that a server starting meanwhile cannot take it
    over), tell its keeper to end the job, cancel the job, remove the record."""
    holder = record.holder()
    if not holder.gone(time.time()):
        raise AsgardError(
            f"kernel {record.kernel_id} is not detached: a Jupyter server of yours on {holder.host} runs it; shut "
            f"it down there ({SEE_IDS})"
        )
    if not record.claim(server_id(), holder):
        raise AsgardError(f"a Jupyter server of yours took the kernel {record.kernel_id} over just now; {SEE_IDS}")
    job_id = str(record.read().get("job_id") or "")
    record.release()
    if job_id:
        try:
            asyncio.run(SlurmClient().scancel(job_id))
        except SlurmError as error:  # the record stays: the next server sees the job end and reports why
            raise AsgardError(
                f"kernel {record.kernel_id} was told to end, but Slurm did not cancel its job {job_id} ({error}); "
                "see whether it still runs with `jupyter asgard status`"
            ) from None
    record.remove()
    return Released(record.kernel_id, job_id, "")
