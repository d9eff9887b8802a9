"""Detachable kernels that end while detached, and who may touch them: the grace and the time limit, a node
that fails, a kernel that exits, another user of the cluster. The next server says why each one ended."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.cluster import LocalCluster
from tests.detaching import GRACE, SITE, again, job_listed, kernel_row, killed, records, wait_for
from tests.faults import kill_node, revive_node
from tests.kernels import KernelSpecs
from tests.server import execute_via_websocket, started_server
from tests.unix_users import UnixUser

pytestmark = pytest.mark.cluster


def test_kernels_nobody_takes_over_end_by_their_grace_or_time_limit_and_the_next_server_says_why(
    detach_home: Path, kernelspecs: KernelSpecs
) -> None:
    kernelspecs.make("asgard-detachable-1min", detachable=True, detach_grace=900, time="1")
    server = started_server(detach_home, SITE)
    try:
        by_grace = server.start_kernel("asgard-detachable")
        by_time = server.start_kernel("asgard-detachable-1min")
        jobs = [kernel_row(server, kernel_id)["job_id"] for kernel_id in (by_grace, by_time)]
        killed(server)
        wait_for(lambda: not any(map(job_listed, jobs)), GRACE + 45, "both jobs end")
        server = again(server)
        assert server.request("GET", "/api/kernels").body == []
        ended = {item["kernel_id"]: item["why"] for item in server.request("GET", "/asgard/api/detached").body["ended"]}
        assert ended == {
            by_grace: f"no Jupyter server of yours took it over within its grace ({GRACE} s)",
            by_time: "it reached its time limit",
        }
        assert "ended while detached" in server.log()
        assert not any(records(server).iterdir())
    finally:
        server.stop()


def test_another_user_can_neither_read_nor_cancel_them(
    detach_home: Path, another_user: UnixUser, slurm_cluster: LocalCluster
) -> None:
    server = started_server(detach_home, SITE)
    try:
        kernel_id = server.start_kernel("asgard-detachable")
        job = kernel_row(server, kernel_id)["job_id"]
        root = records(server)
        for directory in reversed([root.parent, *root.parent.parents]):  # all the way to it, but not into it
            directory.chmod(directory.stat().st_mode | 0o005)
        listing = another_user.run("ls", str(root))
        reading = another_user.run("cat", str(root / kernel_id / "kernel.json"))
        cancelling = another_user.run("scancel", job, env=slurm_cluster.env)  # Slurm itself refuses
        assert "Permission denied" in listing.stderr and "Permission denied" in reading.stderr
        assert "Access/permission denied" in cancelling.stderr, cancelling
        assert job_listed(job)
        assert execute_via_websocket(server, kernel_id, "print('mine')") == "mine\n"
        assert server.request("DELETE", f"/api/kernels/{kernel_id}").status == 204
    finally:
        server.stop()


def test_a_node_that_fails_while_detached_ends_its_kernel_for_good(
    detach_home: Path, slurm_cluster: LocalCluster
) -> None:
    server = started_server(detach_home, SITE)
    try:
        kernel_id = server.start_kernel("asgard-detachable")
        row = kernel_row(server, kernel_id)
        killed(server)
        kill_node(slurm_cluster, row["node"])
        try:
            wait_for(lambda: not job_listed(row["job_id"]), 60, "the job ends with its node")
            server = again(server)
            ended = server.request("GET", "/asgard/api/detached").body["ended"]
            assert [(item["kernel_id"], item["why"]) for item in ended] == [(kernel_id, "its node failed")]
            time.sleep(3)
            assert not job_listed(row["job_id"]), "the job was requeued"
        finally:
            revive_node(slurm_cluster, row["node"])
    finally:
        server.stop()


def test_a_kernel_that_exits_while_detached_is_reported_and_its_allocation_released(detach_home: Path) -> None:
    server = started_server(detach_home, SITE)
    try:
        kernel_id = server.start_kernel("asgard-detachable")
        job = kernel_row(server, kernel_id)["job_id"]
        execute_via_websocket(server, kernel_id, "import os, threading\nthreading.Timer(3, os._exit, [3]).start()")
        killed(server)
        time.sleep(6)  # the kernel exits meanwhile; its job goes on, waiting for a server
        server = again(server)
        ended = server.request("GET", "/asgard/api/detached").body["ended"]
        assert [(item["kernel_id"], "exit status 3" in item["why"]) for item in ended] == [(kernel_id, True)]
        wait_for(lambda: not job_listed(job), 30, "its job is released")
        assert server.request("GET", "/api/kernels").body == []
    finally:
        server.stop()


def test_a_keeper_the_node_cannot_run_fails_the_start_saying_why_and_leaves_no_job(detach_home: Path) -> None:
    server = started_server(detach_home, SITE + "c.PyxisProvisioner.keeper_python = '/no/such/python3'\n")
    try:
        answer = server.request("POST", "/api/kernels", {"name": "asgard-detachable"})
        assert answer.status == 201, answer.body
        reason = server.failed_start(answer.body["id"])
        assert "before its keeper ran" in reason and "keeper_python" in reason, reason
        wait_for(lambda: not any(records(server).glob("*/kernel.json")), 30, "its record removed")
    finally:
        server.stop()
