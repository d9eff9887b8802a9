"""The state every cluster test starts from and leaves behind, checked, and restored where a test broke it.

Which tests share a worker's cluster changes from run to run (pytest-xdist, random order), so no test may
depend on what an earlier one left: GPUs still allocated (a job scancel was asked to end but Slurm has not
released yet is still holding them), a node a fault test killed and revived whose slurmd has not registered
its GPUs again, a named container another test made. The known state is: no job of any user in the queue,
every node idle with nothing allocated and all its GPUs configured, and on the nodes only the named containers
the suite shares on purpose (the kernelspecs' warm containers), or none at all after a restore.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from jupyter_asgard.kernel.container_places import places_root
from tests.cluster import NODES, LocalCluster
from tests.cluster.cluster import NODE_GRES, alive
from tests.faults import revive_node

KNOWN_STATE_TIMEOUT = 90.0  # a job's epilog and a container's teardown take seconds on a loaded machine


def _slurm(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout


def queued_jobs() -> list[str]:
    """Every job in the queue, any user's, in any state (COMPLETING ones still hold their GPUs)."""
    return [line.strip() for line in _slurm("squeue", "-h", "-o", "%i %u %j %T").splitlines() if line.strip()]


def node_records() -> dict[str, dict[str, str]]:
    """scontrol's record of each node, field by field (State, AllocTRES, Gres, CfgTRES, ...)."""
    records = {}
    for line in _slurm("scontrol", "-o", "show", "node").splitlines():
        fields = dict(field.split("=", 1) for field in line.split() if "=" in field)
        if "NodeName" in fields:
            records[fields["NodeName"]] = fields
    return records


def node_problems(node: str, record: dict[str, str] | None) -> list[str]:
    """What keeps a node from being idle with all its GPUs free for the next test."""
    if record is None:
        return [f"{node} is not known to slurmctld"]
    problems = []
    if record.get("State") != "IDLE":
        problems.append(f"{node} is {record.get('State')} ({record.get('Reason', 'no reason')})")
    if record.get("AllocTRES"):
        problems.append(f"{node} still has {record['AllocTRES']} allocated")
    if record.get("Gres") != NODE_GRES:
        problems.append(f"{node} offers GPUs {record.get('Gres')}, not {NODE_GRES}")
    return problems


def containers(cluster: LocalCluster, keep: str | None) -> list[Path]:
    """Named containers on the nodes, but those whose names start with keep (the suite's shared ones)."""
    found = []
    for node in NODES:
        for path in (cluster.node_storage(node) / "data").glob("user-*/pyxis_*"):
            if keep is None or not path.name.removeprefix("pyxis_").startswith(keep):
                found.append(path)
    return found


def problems(cluster: LocalCluster) -> list[str]:
    """How Slurm's side of the cluster differs from the known state; [] where it is in it."""
    records = node_records()
    found = [f"job still in the queue: {job}" for job in queued_jobs()]
    return found + [problem for node in NODES for problem in node_problems(node, records.get(node))]


def settled(cluster: LocalCluster, timeout: float = KNOWN_STATE_TIMEOUT) -> list[str]:
    """Until Slurm's side is in the known state (jobs ending, GPUs released, nodes registering), at most
    timeout seconds; what still differs then."""
    deadline = time.monotonic() + timeout
    while (left := problems(cluster)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def bring_back(cluster: LocalCluster, node: str) -> None:
    """A node back in service: revived as after a fault where its slurmd is gone, else resumed."""
    if not alive(cluster.state.pids.get(f"slurmd-{node}", 0)):
        revive_node(cluster, node)
        return
    subprocess.run(["ip", "-n", cluster.node_namespace(node), "link", "set", "eth0", "up"], capture_output=True)
    subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], capture_output=True, timeout=30)


def restore(cluster: LocalCluster) -> list[str]:
    """Slurm's side back to the known state: every job cancelled and gone, every node back in service with its
    GPUs. Returns what still differs afterwards ([]: restored)."""
    jobs = [line.split()[0] for line in queued_jobs()]
    if jobs:
        subprocess.run(["scancel", *jobs], capture_output=True, timeout=30)
    settled_jobs = time.monotonic() + KNOWN_STATE_TIMEOUT
    while queued_jobs() and time.monotonic() < settled_jobs:
        time.sleep(0.5)
    records = node_records()
    for node in NODES:
        if node_problems(node, records.get(node)):
            bring_back(cluster, node)
    return settled(cluster)


def remove_containers(cluster: LocalCluster, keep: str | None) -> None:
    """Named containers gone (but those whose names start with keep), once no job runs: the next test finds
    only the suite's shared ones, and the nodes' disks do not fill up over a run. So is the test process's record
    of where containers are (placement would send the next test's kernels after what this one made)."""
    for path in containers(cluster, keep):
        shutil.rmtree(path, ignore_errors=True)
    shutil.rmtree(places_root(), ignore_errors=True)
