"""Which of the site's kernel limits Slurm itself enforces: `jupyter asgard site-check`, for admins.

max_gpus and allowed_partitions are checked in the user's own Jupyter server, so
they are guardrails: a user's own ~/.jupyter configuration or a plain salloc
lifts them.  They hold only where Slurm enforces them too: a QOS on the
partition whose MaxTRESPerJob caps GPUs (with accounting enforcing limits),
partitions closed to users (AllowGroups, AllowAccounts, AllowQos), or a
job_submit plugin's rules.  Parsing is pure; the three Slurm calls are in check().
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SlurmError
from ..slurm.slurm_client import SlurmClient

OPEN = "ALL"
GPU_CAP = re.compile(r"gres/gpu(?::[^=,]+)?=(\d+)")


@dataclass(frozen=True)
class Finding:
    """One limit on one partition: whether Slurm enforces it (None: it cannot tell), and why."""

    limit: str
    partition: str
    enforced: bool | None
    why: str


@dataclass(frozen=True)
class SlurmSite:
    """What Slurm says about its partitions, its accounting and its QOS limits."""

    partitions: dict[str, dict[str, str]]
    config: dict[str, str]
    qos_gpu_caps: dict[str, int]

    @property
    def limits_enforced(self) -> bool:
        enforce = self.config.get("AccountingStorageEnforce", "none")
        return self.config.get("AccountingStorageType", "") != "accounting_storage/none" and (
            "limits" in enforce or "safe" in enforce
        )

    @property
    def job_submit(self) -> str:
        plugins = self.config.get("JobSubmitPlugins", "(null)")
        return "" if plugins in ("(null)", "") else plugins


def parse_partitions(text: str) -> dict[str, dict[str, str]]:
    """`scontrol show partition -o`: one line of KEY=VALUE per partition."""
    partitions = {}
    for line in text.splitlines():
        fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
        if "PartitionName" in fields:
            partitions[fields["PartitionName"]] = fields
    return partitions


def parse_config(text: str) -> dict[str, str]:
    """`scontrol show config`: KEY = VALUE lines."""
    return {
        key.strip(): value.strip()
        for key, sep, value in (line.partition("=") for line in text.splitlines())
        if sep and key.strip()
    }


def parse_qos_gpu_caps(text: str) -> dict[str, int]:
    """`sacctmgr -nP show qos format=Name,MaxTRESPerJob`: the GPUs per job each QOS allows, where it caps them."""
    caps = {}
    for line in text.splitlines():
        name, _, tres = line.partition("|")
        match = GPU_CAP.search(tres)
        if name and match:
            caps[name] = int(match[1])
    return caps


def findings(site: SlurmSite, max_gpus: int, allowed_partitions: list[str]) -> list[Finding]:
    usable = [name for name in site.partitions if not allowed_partitions or name in allowed_partitions]
    found = [_gpu_cap(site, name, max_gpus) for name in usable]
    if allowed_partitions:
        found += [_closed(site, name) for name in site.partitions if name not in allowed_partitions]
    return found


def _gpu_cap(site: SlurmSite, partition: str, max_gpus: int) -> Finding:
    limit = f"max_gpus = {max_gpus}"
    qos = site.partitions[partition].get("QoS", "N/A")
    cap = site.qos_gpu_caps.get(qos)
    if cap is not None and cap <= max_gpus and site.limits_enforced:
        return Finding(limit, partition, True, f"QOS {qos} allows {cap} GPUs per job")
    if site.job_submit:
        return Finding(
            limit,
            partition,
            None,
            f"no QOS caps GPUs here, but job_submit plugins run ({site.job_submit}): check that their rules cap them",
        )
    if cap is not None and not site.limits_enforced:
        why = (
            f"QOS {qos} caps GPUs at {cap} per job, but Slurm does not enforce QOS limits "
            "(AccountingStorageEnforce has no 'limits')"
        )
    elif cap is not None:
        why = f"QOS {qos} allows {cap} GPUs per job, more than max_gpus"
    else:
        why = f"no QOS on the partition caps GPUs per job (QoS={qos})"
    return Finding(limit, partition, False, why)


def _closed(site: SlurmSite, partition: str) -> Finding:
    fields = site.partitions[partition]
    limit = "allowed_partitions"
    gates = {key: fields.get(key, OPEN) for key in ("AllowGroups", "AllowAccounts", "AllowQos")}
    closed = {key: value for key, value in gates.items() if value != OPEN}
    if closed:
        return Finding(limit, partition, True, "open only to " + ", ".join(f"{k}={v}" for k, v in closed.items()))
    if site.job_submit:
        return Finding(limit, partition, None, f"open to every user, but job_submit plugins run ({site.job_submit})")
    return Finding(limit, partition, False, "open to every user: a kernelspec of their own, or salloc, uses it")


async def check(client: SlurmClient, max_gpus: int, allowed_partitions: list[str]) -> tuple[list[Finding], list[str]]:
    """The findings, and notes on what could not be asked (no accounting: no QOS limits to read)."""
    partitions = await _ask(client, ["scontrol", "show", "partition", "-o"])
    config = parse_config(await _ask(client, ["scontrol", "show", "config"]))
    notes, caps = [], {}
    try:
        caps = parse_qos_gpu_caps(await _ask(client, ["sacctmgr", "-nP", "show", "qos", "format=Name,MaxTRESPerJob"]))
    except SlurmError as error:
        said = " ".join(str(error).split())
        notes.append(f"sacctmgr: {said} (without an accounting database no QOS limit applies)")
    site = SlurmSite(parse_partitions(partitions), config, caps)
    return findings(site, max_gpus, allowed_partitions), notes


async def _ask(client: SlurmClient, argv: list[str]) -> str:
    return (await client.run(argv)).checked().stdout


def render(found: list[Finding], notes: list[str]) -> str:
    marks = {True: "enforced by Slurm", False: "NOT enforced by Slurm", None: "maybe (check)"}
    lines = [
        "jupyter-asgard checks these limits in each user's own Jupyter server; a user's ~/.jupyter "
        "configuration or a plain salloc lifts any that Slurm does not enforce itself:"
    ]
    lines += [f"  {item.limit:<24} partition {item.partition:<12} {marks[item.enforced]}: {item.why}" for item in found]
    lines += [f"note: {note}" for note in notes]
    if any(item.enforced is not True for item in found):
        lines.append(
            "To enforce them: a QOS per kernel partition (sacctmgr add qos kernels "
            "MaxTRESPerJob=gres/gpu=N; PartitionName=... QOS=kernels, AccountingStorageEnforce=limits,qos), "
            "AllowGroups/AllowAccounts on partitions kernels may not use, or a job_submit rule for jobs "
            "named jupyter-asgard-*."
        )
    return "\n".join(lines)
