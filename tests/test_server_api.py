"""The jupyter_asgard REST API on a real Jupyter server, with kernels on the real test cluster."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from jupyter_asgard.errors import BadRequest
from jupyter_asgard.server.handlers import parse_json
from tests.cluster import NODES, LocalCluster
from tests.kernels import KernelSpecs, kernel_jobs, wait_until_no_kernel_jobs
from tests.server import JupyterServer
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

ENDPOINTS = [
    ("GET", "/asgard/api/images"),
    ("GET", "/asgard/api/resources"),
    ("GET", "/asgard/api/config"),
    ("POST", "/asgard/api/validate"),
    ("GET", "/asgard/api/kernels"),
    ("GET", "/asgard/api/monitor"),
    ("DELETE", "/asgard/api/kernels/0000"),
    ("POST", "/asgard/api/kernels/0000/terminal"),
    ("POST", "/asgard/api/kernels/0000/save-image"),
    ("GET", "/asgard/api/kernels/0000/save-image"),
    ("GET", "/asgard/api/containers"),
    ("DELETE", "/asgard/api/containers/x"),
    ("GET", "/asgard/api/kernelspecs"),
    ("GET", "/asgard/api/kernelspecs/x"),
    ("PUT", "/asgard/api/kernelspecs/x"),
    ("DELETE", "/asgard/api/kernelspecs/x"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_no_credentials_no_answer(jupyter_server: JupyterServer, method: str, path: str, token: str | None) -> None:
    body = {} if method in ("POST", "PUT") else None
    response = jupyter_server.request(method, path, body, token=token)
    assert response.status in (401, 403)
    assert "image" not in str(response.body) and "kernels" not in str(response.body)


def test_images_are_found_and_named_from_their_files(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster
) -> None:
    answer = jupyter_server.request("GET", "/asgard/api/images")
    assert answer.status == 200
    by_path = {image["path"]: image for image in answer.body["images"] if image["path"]}
    pytorch = by_path[str(slurm_cluster.pytorch_image())]
    assert (pytorch["registry"], pytorch["repository"], pytorch["tag"]) == ("nvcr.io", "nvidia/pytorch", "23.12-py3")
    assert pytorch["display"] == "nvcr.io/nvidia/pytorch:23.12-py3"
    assert pytorch["size"] == slurm_cluster.pytorch_image().stat().st_size
    enroot_named = by_path[str(slurm_cluster.images_dir / "nvidia+pytorch+23.12-py3.sqsh")]
    assert (enroot_named["repository"], enroot_named["tag"]) == ("nvidia/pytorch", "23.12-py3")
    registry = [image for image in answer.body["images"] if image["kind"] == "registry"]
    assert [image["uri"] for image in registry] == ["docker://nvcr.io#nvidia/pytorch:24.05-py3"]
    assert any("/no/such/image/dir" in note for note in answer.body["notes"])


def test_resources_list_partitions_and_free_gpus(jupyter_server: JupyterServer) -> None:
    holder = subprocess.run(
        ["salloc", "--no-shell", "--gpus=1", "--nodelist=gpu01", "-J", "holder"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stderr.split()[-1]
    try:
        time.sleep(0.6)  # past the resources cache
        answer = jupyter_server.request("GET", "/asgard/api/resources")
    finally:
        subprocess.run(["scancel", holder])
    assert answer.status == 200
    partitions = {partition["name"]: partition for partition in answer.body["partitions"]}
    assert partitions["gpu"]["default"] is True and partitions["debug"]["default"] is False
    assert partitions["gpu"]["gpus"] == {"h100": {"total": 4, "free": 3}}
    assert partitions["debug"]["gpus"] == {"h100": {"total": 2, "free": 2}}
    assert partitions["debug"]["time_limit"] == "30:00"
    assert sorted(node["name"] for node in partitions["gpu"]["nodes"]) == list(NODES)


def test_config_offers_the_schema_defaults_and_limits(jupyter_server: JupyterServer) -> None:
    answer = jupyter_server.request("GET", "/asgard/api/config")
    assert answer.status == 200
    assert "image" in answer.body["schema"]["properties"]
    assert answer.body["limits"] == {"max_gpus": 8, "allowed_partitions": []}
    assert answer.body["defaults"]["mounts"] == []


def good_config(cluster: LocalCluster) -> dict[str, Any]:
    return {
        "image": str(cluster.pytorch_image()),
        "mounts": [f"{cluster.datasets}:/ds:ro"],
        "gpus": "h100:1",
        "partition": "gpu",
    }


def test_validate_accepts_a_good_configuration(jupyter_server: JupyterServer, slurm_cluster: LocalCluster) -> None:
    answer = jupyter_server.request("POST", "/asgard/api/validate", good_config(slurm_cluster))
    assert answer.status == 200
    assert answer.body["valid"] is True and answer.body["problems"] == []


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"mounts": ["data:/data"]}, "the source must be an absolute path"),
        ({"mounts": ["/no/such/source:/data"]}, "mount source /no/such/source does not exist"),
        ({"image": "/no/such/image.sqsh"}, "image /no/such/image.sqsh does not exist"),
        ({"image": "pytorch.sqsh"}, "give its absolute path"),
        ({"partition": "nope"}, "partition 'nope' does not exist; choose one of debug, gpu"),
        ({"gpus": 16}, "16 GPUs requested but this site allows at most 8"),
        ({"gpus": "a100:1"}, "partition 'gpu' has no GPUs of type 'a100'; it has h100"),
        ({"gpus": 6}, "partition 'gpu' has 4 GPUs in all; 6 can never be granted"),
        ({"time": "forever"}, "time 'forever': write minutes, HH:MM:SS or D-HH:MM:SS"),
        ({"gpu": 1}, "unknown setting 'gpu'"),
        ({"srun_args": ["--jobid=5"]}, "--jobid is set by jupyter-asgard"),
    ],
)
def test_validate_explains_each_problem(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster, change: dict[str, Any], problem: str
) -> None:
    answer = jupyter_server.request("POST", "/asgard/api/validate", {**good_config(slurm_cluster), **change})
    assert answer.status == 400
    assert any(problem in line for line in answer.body["problems"]), answer.body
    assert problem in answer.message


def test_validate_refuses_what_is_not_a_json_object(jupyter_server: JupyterServer) -> None:
    assert jupyter_server.request("POST", "/asgard/api/validate", ["image"]).status == 400
    too_big = jupyter_server.request("POST", "/asgard/api/validate", {"image": "/x" * 40000})
    assert too_big.status == 413


UNREADABLE_BODIES = [
    (b'{"image": "\xff\xfe"}', "the request body is not JSON: it is not UTF-8 text"),
    (b"[" * 30000 + b"]" * 30000, "the request body's JSON is nested too deeply to read"),
    (b'{"cpus_per_task": ' + b"9" * 5000 + b"}", "the request body's JSON holds a number with more digits than 4300"),
]


@pytest.mark.parametrize(("body", "message"), UNREADABLE_BODIES, ids=["not-utf8", "nested", "5000-digits"])
def test_parse_json_refuses_what_json_cannot_read_as_the_clients_mistake(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest) as refused:
        parse_json(body)
    assert (refused.value.status, refused.value.message) == (400, message)


@pytest.mark.parametrize(("body", "message"), UNREADABLE_BODIES, ids=["not-utf8", "nested", "5000-digits"])
def test_bodies_json_cannot_read_are_answered_400_not_500(
    jupyter_server: JupyterServer, body: bytes, message: str
) -> None:
    log_start = jupyter_server.log_path.stat().st_size
    for method, path in (("POST", "/asgard/api/validate"), ("PUT", "/asgard/api/kernelspecs/api-unreadable")):
        answer = jupyter_server.request(method, path, body)
        assert (answer.status, answer.message) == (400, message), (method, answer.body)
    assert jupyter_server.request("GET", "/asgard/api/kernelspecs/api-unreadable").status == 404
    logged = jupyter_server.log_path.read_bytes()[log_start:].decode(errors="replace")
    assert "Traceback" not in logged and f"400 {message}" in logged, logged  # a client's mistake: one line


@pytest.mark.parametrize("config", ["image", ["image"], None, 5])
def test_a_kernelspecs_config_must_be_a_json_object(jupyter_server: JupyterServer, config: Any) -> None:
    path = "/asgard/api/kernelspecs/api-config-type"
    answer = jupyter_server.request("PUT", path, {"display_name": "Config", "config": config})
    assert (answer.status, answer.message) == (400, "the kernelspec's config must be a JSON object"), answer.body
    assert jupyter_server.request("GET", path).status == 404


def test_user_kernelspecs_are_created_read_updated_and_deleted(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster
) -> None:
    path = "/asgard/api/kernelspecs/my-pytorch"
    created = jupyter_server.request("PUT", path, {"display_name": "My PyTorch", "config": good_config(slurm_cluster)})
    assert created.status == 200, created.body
    assert created.body["managed"] is True
    listed = jupyter_server.request("GET", "/api/kernelspecs").body["kernelspecs"]
    assert listed["my-pytorch"]["spec"]["display_name"] == "My PyTorch"
    assert listed["my-pytorch"]["spec"]["metadata"]["kernel_provisioner"]["config"]["gpus"] == "h100:1"
    updated = jupyter_server.request(
        "PUT", path, {"display_name": "My PyTorch 2", "config": {**good_config(slurm_cluster), "gpus": 2}}
    )
    assert updated.status == 200
    read = jupyter_server.request("GET", path)
    assert read.body["display_name"] == "My PyTorch 2" and read.body["config"]["gpus"] == 2
    assert jupyter_server.request("DELETE", path).status == 204
    assert jupyter_server.request("GET", path).status == 404
    assert "my-pytorch" not in jupyter_server.request("GET", "/api/kernelspecs").body["kernelspecs"]


def test_kernelspecs_refuse_bad_input_and_foreign_kernelspecs(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster
) -> None:
    bad = jupyter_server.request(
        "PUT",
        "/asgard/api/kernelspecs/broken",
        {"display_name": "Broken", "config": {"image": "/nope.sqsh", "mounts": ["x"]}},
    )
    assert bad.status == 400
    assert len(bad.body["problems"]) == 2
    assert jupyter_server.request("GET", "/asgard/api/kernelspecs/broken").status == 404
    # asgard-test was written by the test suite, not through this API: never overwritten or deleted.
    foreign = jupyter_server.request(
        "PUT", "/asgard/api/kernelspecs/asgard-test", {"display_name": "Mine now", "config": good_config(slurm_cluster)}
    )
    assert foreign.status == 409 and "choose another name" in foreign.message
    assert jupyter_server.request("DELETE", "/asgard/api/kernelspecs/asgard-test").status == 403
    assert jupyter_server.request("GET", "/asgard/api/kernelspecs/asgard-test").body["managed"] is False
    for name in ("..", ".hidden", "a b", "x" * 65):
        answer = jupyter_server.request(
            "PUT",
            f"/asgard/api/kernelspecs/{name.replace(' ', '%20')}",
            {"display_name": "x", "config": good_config(slurm_cluster)},
        )
        assert answer.status in (400, 404), name


def wait_for_row(server: JupyterServer, predicate: Callable[[dict], bool], timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    rows: list[dict] = []
    while time.monotonic() < deadline:
        answer = server.request("GET", "/asgard/api/kernels")
        assert answer.status == 200, (answer.body, server.log()[-3000:])
        rows = answer.body["kernels"]
        match = [row for row in rows if predicate(row)]
        if match:
            return match[0]
        time.sleep(0.2)
    raise AssertionError(f"no kernel row matched within {timeout}s: {rows}")


def test_kernels_show_pending_with_reason_then_running_with_node(
    jupyter_server: JupyterServer, kernelspecs: KernelSpecs, gpus_taken: list[str]
) -> None:
    """A kernel that waits behind a full cluster for longer than a proxy in front of the server waits for an
    answer (5 s here; nginx's default is 60 s): POST /api/kernels answers at once (pending kernels, on by
    default), and the kernel's websocket waits for the start, as JupyterLab's does."""
    name = kernelspecs.make("asgard-timed", time="2:00:00")
    answer = jupyter_server.request("POST", "/api/kernels", {"name": name}, timeout=5)
    assert answer.status == 201, answer.body
    kernel_id = answer.body["id"]
    assert answer.body["execution_state"] == "starting"
    pending = wait_for_row(jupyter_server, lambda row: row["state"] == "PENDING" and row["reason"] == "Resources")
    assert pending["kernel_id"] == kernel_id
    assert pending["queue_position"] == 0
    assert pending["job_id"] and pending["node"] == ""
    assert pending["gpus"] == {"count": 1, "type": ""}
    assert pending["kernel_name"] == name
    assert pending["cull_in_seconds"] is None  # not idle: it has not started
    time.sleep(6)  # longer than the proxy's timeout: the kernel still waits, and nothing cut it
    assert jupyter_server.request("GET", f"/asgard/api/kernels/{kernel_id}").body["state"] == "PENDING"
    subprocess.run(["scancel", gpus_taken[1]], check=True)
    assert jupyter_server.await_kernel(kernel_id, 60) == ""
    running = wait_for_row(
        jupyter_server,
        lambda row: row["kernel_id"] == kernel_id and row["state"] == "RUNNING" and row["start_time"] != "",
    )
    assert running["node"] == "gpu02"
    assert running["job_id"] == pending["job_id"]
    assert running["time_limit"] == "2:00:00"
    assert 7000 < running["time_left_seconds"] <= 7200
    single = jupyter_server.request("GET", f"/asgard/api/kernels/{kernel_id}")
    assert single.body["job_id"] == running["job_id"]
    assert jupyter_server.request("DELETE", f"/asgard/api/kernels/{kernel_id}").status == 204
    assert wait_until_no_kernel_jobs() == []
    assert jupyter_server.request("GET", f"/asgard/api/kernels/{kernel_id}").status == 404


def test_shutting_down_a_queued_kernel_cancels_its_job_at_once(
    jupyter_server: JupyterServer, gpus_taken: list[str]
) -> None:
    kernel_id = jupyter_server.request("POST", "/api/kernels", {"name": "asgard-test"}, timeout=5).body["id"]
    waiting: list[str] = []  # a client's websocket waiting for the start, as JupyterLab's does
    waiter = threading.Thread(target=lambda: waiting.append(jupyter_server.await_kernel(kernel_id, 60)))
    waiter.start()
    pending = wait_for_row(jupyter_server, lambda row: row["state"] == "PENDING")
    # Answered while the GPUs are still taken: the shutdown does not wait for the queue.
    assert jupyter_server.request("DELETE", f"/api/kernels/{kernel_id}", timeout=60).status == 204
    waiter.join(30)
    assert waiting and "shut down before it started" in waiting[0]
    assert not [line for line in kernel_jobs() if line.startswith(pending["job_id"] + " ")]
    assert jupyter_server.request("GET", f"/api/kernels/{kernel_id}").status == 404


@pytest.mark.parametrize("queued", [True, False], ids=["queued", "granted"])
def test_a_kernel_shut_down_at_any_moment_of_its_start_leaves_nothing(
    jupyter_server: JupyterServer, kernelspecs: KernelSpecs, request: pytest.FixtureRequest, queued: bool
) -> None:
    """DELETE soon after POST, four times over, at moments from before salloc runs to the container starting:
    each withdraws the start (rather than waiting for it to end, then shutting the kernel down), each waiting
    client is told why, no job is left (a salloc killed while it waits would leave its job queued for good), the
    monitor stops watching and polling, and no error is logged. How long a DELETE takes is the benchmarks' to
    measure: on a loaded machine the granted case's took 20 s once."""
    if queued:
        request.getfixturevalue("gpus_taken")
    # A container of its own: a job cancelled while enroot unpacks a named container leaves it half made.
    name = kernelspecs.make("asgard-withdrawn", container_name=f"withdrawn-{uuid.uuid4().hex[:8]}")

    def watching() -> tuple[int, int]:
        monitor = jupyter_server.request("GET", "/asgard/api/monitor").body
        return monitor["watched_jobs"], monitor["listeners"]

    before = watching()  # the session's server: what other tests' kernels have it watch
    log_start = jupyter_server.log_path.stat().st_size
    kernel_ids = []
    # From at once on: a salloc that has not named its job yet ignores SIGTERM and submits the job all the same.
    for delay in (0, 0.05, 0.1, 0.5):
        kernel_id = jupyter_server.request("POST", "/api/kernels", {"name": name}, timeout=5).body["id"]
        kernel_ids.append(kernel_id)
        time.sleep(delay)
        assert jupyter_server.request("DELETE", f"/api/kernels/{kernel_id}", timeout=60).status == 204
    for kernel_id in kernel_ids:
        assert jupyter_server.request("GET", f"/api/kernels/{kernel_id}").status == 404
    assert wait_until_no_kernel_jobs(timeout=20) == []
    wait_for(lambda: watching() == before, 10, "the monitor still watches a withdrawn kernel's job")
    if before == (0, 0):
        wait_for(lambda: not jupyter_server.request("GET", "/asgard/api/monitor").body["polling"], 10, "polling")
    with jupyter_server.log_path.open(errors="replace") as log:
        log.seek(log_start)
        logged = log.read()
    assert "[E " not in logged, logged  # a shutdown asked for is no error (jupyter's own logs would say so, thrice)
    withdrawn = [kernel_id for kernel_id in kernel_ids if f"{kernel_id}: shut down while it started" in logged]
    assert withdrawn == kernel_ids, logged


def test_a_kernel_row_names_the_notebook_while_jupyterlab_still_uses_a_placeholder_path(
    jupyter_server: JupyterServer,
) -> None:
    """JupyterLab opens a notebook's session under "dir/<uuid>" and renames it once the kernel is up."""
    assert jupyter_server.request("PUT", "/api/contents/work", {"type": "directory"}).status in (200, 201)
    placeholder = f"work/{uuid.uuid4()}"
    session = jupyter_server.request(
        "POST",
        "/api/sessions",
        {"path": placeholder, "name": "analysis.ipynb", "type": "notebook", "kernel": {"name": "asgard-test"}},
    )
    assert session.status == 201, session.body
    try:
        kernel_id = session.body["kernel"]["id"]
        assert wait_for_row(jupyter_server, lambda row: row["kernel_id"] == kernel_id)["path"] == "work/analysis.ipynb"
        renamed = jupyter_server.request("PATCH", f"/api/sessions/{session.body['id']}", {"path": "work/b.ipynb"})
        assert renamed.status == 200, renamed.body
        assert jupyter_server.request("GET", f"/asgard/api/kernels/{kernel_id}").body["path"] == "work/b.ipynb"
    finally:
        jupyter_server.request("DELETE", f"/api/sessions/{session.body['id']}")
    assert wait_until_no_kernel_jobs() == []


def test_a_failed_start_shows_the_reason_in_the_kernel_error(
    jupyter_server: JupyterServer, kernelspecs: KernelSpecs
) -> None:
    """With pending kernels the POST answers before the start fails: the kernel model carries the reason for
    any client, and a client's websocket (JupyterLab's "Error Starting Kernel") gets it too."""
    name = kernelspecs.make("api-bad-image", image="/enroot/missing.sqsh")
    answer = jupyter_server.request("POST", "/api/kernels", {"name": name})
    assert answer.status == 201, answer.body
    reason = jupyter_server.failed_start(answer.body["id"])
    assert "image /enroot/missing.sqsh does not exist" in reason
    assert "How to fix:" in reason
    assert jupyter_server.await_kernel(answer.body["id"], 30) == reason
    assert jupyter_server.request("DELETE", f"/api/kernels/{answer.body['id']}").status == 204
    assert wait_until_no_kernel_jobs() == []


def test_slurm_calls_per_interval_do_not_grow_with_kernels(
    jupyter_server: JupyterServer, kernelspecs: KernelSpecs
) -> None:
    name = kernelspecs.make("asgard-cpu", gpus=None)

    def extra_squeue_calls(seconds: float = 4) -> int:
        """squeue calls beyond one per poll in a window (a call in flight at either edge may count once)."""
        before = jupyter_server.request("GET", "/asgard/api/monitor").body
        time.sleep(seconds)
        after = jupyter_server.request("GET", "/asgard/api/monitor").body
        polls = after["polls"] - before["polls"]
        assert polls >= 4
        return after["calls"]["squeue"] - before["calls"]["squeue"] - polls

    kernels = [jupyter_server.start_kernel(name)]
    try:
        assert extra_squeue_calls() in (-1, 0, 1)
        kernels += [jupyter_server.request("POST", "/api/kernels", {"name": name}).body["id"] for _ in range(9)]
        for kernel_id in kernels:
            assert jupyter_server.await_kernel(kernel_id, 300) == ""
        rows = jupyter_server.request("GET", "/asgard/api/kernels").body["kernels"]
        assert sum(row["state"] == "RUNNING" for row in rows) == 10
        assert extra_squeue_calls() in (-1, 0, 1)
    finally:
        for kernel in jupyter_server.request("GET", "/api/kernels").body:
            if kernel["name"] == name:
                jupyter_server.request("DELETE", f"/api/kernels/{kernel['id']}")
