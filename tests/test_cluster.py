"""The test cluster itself: real nodes, real GPUs scheduling, the Pyxis stand-in."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.cluster import NODES, LocalCluster


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("node", NODES)
def test_gpu_job_runs_at_its_node_address(slurm_cluster: LocalCluster, node: str) -> None:
    result = run("srun", "--gpus=1", "-w", node, "bash", "-c",
                 "hostname -I; echo $SLURMD_NODENAME; echo CVD=$CUDA_VISIBLE_DEVICES")
    assert result.returncode == 0, result.stderr
    address, name, devices = result.stdout.split()
    assert address == slurm_cluster.node_addr(node)
    assert address != slurm_cluster.controller_addr
    assert name == node
    assert devices == "CVD=0"


def _job_field(job_id: str, fmt: str) -> str:
    return run("squeue", "-h", "-j", job_id, "-o", fmt).stdout.strip()


def _allocate(*args: str) -> str:
    """Start salloc --no-shell in the background and return its job id once it is known."""
    process = subprocess.Popen(["salloc", "--no-shell", *args], stderr=subprocess.PIPE, text=True)
    line = process.stderr.readline()
    job_id = line.split()[-1]
    assert job_id.isdigit(), line
    return job_id


def test_third_two_gpu_job_waits_for_resources(slurm_cluster: LocalCluster) -> None:
    jobs = [_allocate("--gpus=2", "-w", node, "-J", f"fill-{node}") for node in NODES]
    try:
        waiting = _allocate("--gpus=2", "-J", "third")
        jobs.append(waiting)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _job_field(waiting, "%r") != "Resources":
            time.sleep(0.5)
        assert _job_field(waiting, "%T %r") == "PENDING Resources"
        assert {_job_field(job, "%T %N") for job in jobs[:2]} == {f"RUNNING {node}" for node in NODES}
    finally:
        run("scancel", *jobs)


def test_debug_partition_has_a_short_time_limit(slurm_cluster: LocalCluster) -> None:
    result = run("sinfo", "-h", "-o", "%P %l %D")
    partitions = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert partitions["gpu*"] == ["infinite", "2"]
    assert partitions["debug"] == ["30:00", "1"]
    too_long = run("srun", "-p", "debug", "-t", "2:00:00", "true")
    assert too_long.returncode != 0
    assert "time limit" in too_long.stderr.lower()


def test_pyxis_standin_rejects_missing_image(slurm_cluster: LocalCluster) -> None:
    missing = slurm_cluster.images_dir / "no-such-image.sqsh"
    result = run("srun", "-w", "gpu01", f"--container-image={missing}", "true")
    assert result.returncode != 0
    assert f"pyxis:     [ERROR] No such file or directory: {missing}" in result.stderr


@pytest.mark.parametrize(
    ("mounts", "message"),
    [
        ("/tmp:", "pyxis: --container-mounts: invalid format: /tmp:"),
        ("data:/data", 'pyxis: mount source must be a relative path, an absolute path, "tmpfs" or "umount"'),
    ],
)
def test_pyxis_standin_rejects_bad_mount_spec(slurm_cluster: LocalCluster, mounts: str, message: str) -> None:
    result = run("srun", "-w", "gpu01", f"--container-image={slurm_cluster.pytorch_image()}",
                 f"--container-mounts={mounts}", "true")
    assert result.returncode != 0
    assert message in result.stderr
    assert run("squeue", "-h").stdout == ""


def test_pyxis_standin_rejects_missing_mount_source(slurm_cluster: LocalCluster) -> None:
    source = slurm_cluster.root / "not-there"
    result = run("srun", "-w", "gpu01", f"--container-image={slurm_cluster.pytorch_image()}",
                 f"--container-mounts={source}:/data", "true")
    assert result.returncode != 0
    assert f"No such file or directory: {source}" in result.stderr


def test_pyxis_standin_applies_workdir_mounts_and_records_the_step(slurm_cluster: LocalCluster) -> None:
    scratch = slurm_cluster.netscratch
    datasets = slurm_cluster.datasets
    result = run(
        "srun", "-w", "gpu02", f"--container-image={slurm_cluster.pytorch_image()}",
        f"--container-mounts={scratch}:{scratch},{datasets}:{datasets}:ro",
        f"--container-workdir={scratch}", "--container-name=probe",
        "bash", "-c", f"pwd; echo $PYXIS_STANDIN_RECORD; touch {datasets}/x 2>/dev/null || echo read-only",
    )
    assert result.returncode == 0, result.stderr
    workdir, record_path, ro = result.stdout.split()
    assert workdir == str(scratch)
    assert ro == "read-only"
    record = json.loads(Path(record_path).read_text())
    assert record["node"] == "gpu02"
    assert record["status"] == "started"
    assert record["workdir"] == str(scratch)
    assert record["container_name"] == "probe"
    assert {m["target"]: m["flags"] for m in record["mounts"]} == {str(scratch): [], str(datasets): ["ro"]}


def test_pyxis_standin_rejects_relative_workdir(slurm_cluster: LocalCluster) -> None:
    result = run("srun", "-w", "gpu01", f"--container-image={slurm_cluster.pytorch_image()}",
                 "--container-workdir=relative/dir", "true")
    assert result.returncode != 0
    assert "pyxis: --container-workdir" in result.stderr


def _leftovers(cluster_root: Path, namespaces: list[str], links: list[str], pids: list[int]) -> list[str]:
    found = [f"namespace {ns}" for ns in namespaces if Path(f"/run/netns/{ns}").exists()]
    links_now = run("ip", "-o", "link", "show").stdout
    found += [f"link {link}" for link in links if f" {link}:" in links_now or f" {link}@" in links_now]
    found += [f"pid {pid}" for pid in pids if Path(f"/proc/{pid}").exists() and "Z" not in _proc_state(pid)]
    processes = run("ps", "-eo", "pid,stat,args").stdout.splitlines()
    found += [line for line in processes if str(cluster_root) in line and " Z" not in line]
    if cluster_root.exists():
        found.append(f"directory {cluster_root}")
    return found


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "Z"


def test_a_second_cluster_starts_beside_the_first_and_teardown_leaves_nothing(
    slurm_cluster: LocalCluster, fresh_cluster_prerequisites: None
) -> None:
    cluster = LocalCluster().start()
    state = cluster.state
    assert state.slot != slurm_cluster.state.slot
    sleeper = subprocess.Popen(
        ["srun", "-w", "gpu01", "sleep", "300"], env={**os.environ, **cluster.env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _namespace_runs(state.namespaces[0], "sleep"):
        time.sleep(0.2)
    assert _namespace_runs(state.namespaces[0], "sleep"), "the job never started on gpu01"
    cluster.stop()
    sleeper.kill()  # srun, a client on this host, would retry the vanished controller for minutes
    sleeper.wait(timeout=30)
    assert _leftovers(Path(state.root), state.namespaces, state.links, list(state.pids.values())) == []


def _namespace_runs(namespace: str, program: str) -> bool:
    return program in (_comm(pid) for pid in run("ip", "netns", "pids", namespace).stdout.split())


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
