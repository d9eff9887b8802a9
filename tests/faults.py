"""Faults injected into the test cluster: a node that dies, a controller that goes away for a while."""

from __future__ import annotations

import subprocess
import time

from tests.cluster import LocalCluster
from tests.cluster.cluster import kill_namespace_processes, terminate


def kill_node(cluster: LocalCluster, node: str) -> None:
    """The node's network goes dark and everything on it dies: slurmd, slurmstepd, the tasks."""
    namespace = f"asg{cluster.state.slot}-{node}"
    subprocess.run(["ip", "-n", namespace, "link", "set", "eth0", "down"], check=True)
    kill_namespace_processes(namespace)


def revive_node(cluster: LocalCluster, node: str, timeout: float = 60) -> None:
    """Network back, slurmd started again, node resumed: as an admin brings a repaired node back. Returns once
    a job step with a GPU has run there: slurmctld may call the node idle before the new slurmd's registration
    has brought its GPUs back, and a job placed there meanwhile fails its first step ("Invalid generic
    resource (gres) specification")."""
    namespace = f"asg{cluster.state.slot}-{node}"
    subprocess.run(["ip", "-n", namespace, "link", "set", "eth0", "up"], check=True)
    cluster.start_slurmd(node)  # with the node's hostname, /etc/hosts and enroot storage, as at the start
    deadline = time.monotonic() + timeout
    state: list[str] = []
    while time.monotonic() < deadline:
        subprocess.run(["scontrol", "update", f"NodeName={node}", "State=RESUME"], capture_output=True)
        state = subprocess.run(
            ["sinfo", "-h", "-N", "-n", node, "-o", "%T"], capture_output=True, text=True
        ).stdout.split()
        if state and state[0] in ("mixed", "allocated"):  # in service: a queued job landed on it at once
            return
        if state and state[0] == "idle" and gpu_step_runs(node):
            return
        time.sleep(1)
    raise AssertionError(f"{node} did not come back: {state}")


def gpu_step_runs(node: str) -> bool:
    """Whether a job step with one GPU runs on node now (a job of its own, which waits for nothing)."""
    check = ["srun", f"--nodelist={node}", "--gpus=1", "--immediate=10", "--time=1", "-J", "node-check", "true"]
    return subprocess.run(check, capture_output=True, timeout=60).returncode == 0


def stop_controller(cluster: LocalCluster) -> None:
    terminate(cluster.state.pids["slurmctld"])


def start_controller(cluster: LocalCluster, timeout: float = 30) -> None:
    """slurmctld again, from its saved state (no -c): jobs that ran on survive."""
    cluster._spawn("slurmctld", ["slurmctld", "-D", "-f", str(cluster.slurm_conf)])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if subprocess.run(["squeue", "-h"], capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    raise AssertionError("slurmctld did not come back")
