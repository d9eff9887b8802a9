"""The test cluster itself: real nodes, real GPU scheduling, real Pyxis and enroot containers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster import NODES, LocalCluster
from tests.cluster.cluster import leftovers


def run(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("node", NODES)
def test_gpu_job_runs_at_its_node_address(slurm_cluster: LocalCluster, node: str) -> None:
    result = run(
        "srun",
        "--gpus=1",
        "-w",
        node,
        "bash",
        "-c",
        "hostname -I; echo $SLURMD_NODENAME; echo CVD=$CUDA_VISIBLE_DEVICES",
    )
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


def test_pyxis_refuses_a_missing_image(slurm_cluster: LocalCluster) -> None:
    missing = slurm_cluster.images_dir / "no-such-image.sqsh"
    result = run("srun", "-w", "gpu01", f"--container-image={missing}", "true")
    assert result.returncode != 0
    assert f"pyxis: failed to create container filesystem for image: {missing}" in result.stderr
    assert f"pyxis:     [ERROR] No such file or directory: {missing}" in result.stderr


@pytest.mark.parametrize(
    ("mounts", "message"),
    [
        ("/tmp:", "pyxis: --container-mounts: invalid format: /tmp:"),
        ("data:/data", 'pyxis: mount source must be a relative path, an absolute path, "tmpfs" or "umount"'),
    ],
)
def test_pyxis_refuses_a_bad_mount_spec_before_submitting(
    slurm_cluster: LocalCluster, mounts: str, message: str
) -> None:
    jobs_before = run("squeue", "-h", "-o", "%i").stdout.split()
    result = run(
        "srun",
        "-w",
        "gpu01",
        f"--container-image={slurm_cluster.pytorch_image()}",
        f"--container-mounts={mounts}",
        "true",
    )
    assert result.returncode != 0
    assert message in result.stderr
    assert set(run("squeue", "-h", "-o", "%i").stdout.split()) <= set(jobs_before)  # no job was submitted


def test_pyxis_refuses_a_missing_mount_source_on_the_node(slurm_cluster: LocalCluster) -> None:
    source = slurm_cluster.root / "not-there"
    result = run(
        "srun",
        "-w",
        "gpu01",
        f"--container-image={slurm_cluster.pytorch_image()}",
        f"--container-mounts={source}:/data",
        "true",
    )
    assert result.returncode != 0
    assert f"pyxis: --container-mounts: source path does not exist: {source}" in result.stderr


def test_a_real_container_has_the_images_filesystem_environment_workdir_and_mounts(slurm_cluster: LocalCluster) -> None:
    scratch, datasets = slurm_cluster.netscratch, slurm_cluster.datasets
    probe = (
        "import json, os, socket, sys; print(json.dumps({'cwd': os.getcwd(), 'python': sys.executable, "
        "'host_python': os.path.exists(os.environ.get('HOST_PYTHON', '')), 'host': socket.gethostname(), "
        "'image': os.environ.get('TEST_IMAGE'), 'ipykernel': __import__('ipykernel').__version__, "
        f"'ro': not os.access({str(datasets)!r}, os.W_OK), 'scratch': os.listdir({str(scratch / 'root')!r})}}))"
    )
    result = run(
        "srun",
        "-w",
        "gpu02",
        f"--container-image={slurm_cluster.pytorch_image()}",
        f"--container-mounts={scratch}:{scratch},{datasets}:{datasets}:ro",
        f"--container-workdir={scratch}",
        "--export",
        f"ALL,HOST_PYTHON={sys.executable}",
        "python3",
        "-c",
        probe,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen == {
        "cwd": str(scratch),
        "python": "/usr/bin/python3",
        "host_python": False,
        "host": "gpu02",
        "image": "python-ipykernel",
        "ipykernel": seen["ipykernel"],
        "ro": True,
        "scratch": seen["scratch"],
    }
    assert "hello.txt" in seen["scratch"]  # the host's file, through the mount (other tests may add their own)


def test_a_named_container_keeps_its_files_on_its_node_only(slurm_cluster: LocalCluster) -> None:
    """Each node has enroot storage of its own, as a cluster's nodes have their local disks."""
    name = f"--container-name=keep-{os.getpid()}"
    image = f"--container-image={slurm_cluster.pytorch_image()}"
    wrote = run("srun", "-w", "gpu01", image, name, "--container-writable", "sh", "-c", "echo kept > /opt/marker")
    assert wrote.returncode == 0, wrote.stderr
    again = run("srun", "-w", "gpu01", image, name, "cat", "/opt/marker")
    other_node = run("srun", "-w", "gpu02", image, name, "ls", "/opt")
    assert again.stdout.strip() == "kept", again.stderr
    assert other_node.returncode == 0 and "marker" not in other_node.stdout, other_node.stderr
    assert list((slurm_cluster.node_storage("gpu01") / "data").glob(f"user-*/pyxis_keep-{os.getpid()}/opt/marker"))


def test_a_node_resolves_names_at_once_without_a_dns_server(slurm_cluster: LocalCluster) -> None:
    """jupyter_client's localinterfaces looks up <hostname>.local in a container without `ip`: on a node whose
    resolver waits for an unreachable DNS server that cost every kernel start 10 s."""
    probe = (
        "import socket, time; start = time.monotonic()\n"
        "try: socket.gethostbyname(socket.gethostname() + '.local')\nexcept OSError: pass\n"
        "print(socket.gethostbyname(socket.gethostname()), round(time.monotonic() - start, 1))"
    )
    result = run("srun", "-w", "gpu01", f"--container-image={slurm_cluster.pytorch_image()}", "python3", "-c", probe)
    address, seconds = result.stdout.split()
    assert address == slurm_cluster.node_addr("gpu01")
    assert float(seconds) < 3, f"name lookups took {seconds}s"


def test_a_second_cluster_starts_beside_the_first_and_teardown_leaves_nothing(
    slurm_cluster: LocalCluster, fresh_cluster_prerequisites: None
) -> None:
    cluster = LocalCluster().start()
    state = cluster.state
    assert state.slot != slurm_cluster.state.slot
    sleeper = subprocess.Popen(
        ["srun", "-w", "gpu01", "sleep", "300"],
        env={**os.environ, **cluster.env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not _namespace_runs(state.namespaces[0], "sleep"):
        time.sleep(0.2)
    assert _namespace_runs(state.namespaces[0], "sleep"), "the job never started on gpu01"
    cluster.stop()
    sleeper.kill()  # srun, a client on this host, would retry the vanished controller for minutes
    sleeper.wait(timeout=30)
    assert leftovers(Path(state.root), state.namespaces, state.links, list(state.pids.values())) == []


def _namespace_runs(namespace: str, program: str) -> bool:
    return program in (_comm(pid) for pid in run("ip", "netns", "pids", namespace).stdout.split())


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""
