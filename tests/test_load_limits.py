"""On the test cluster, through a running server: who may run commands in a kernel's container (save-image, the
container terminal: `execute` on kernels), and the limits that keep one user's loop from loading shared services
(estimates at once, terminals per kernel), answered with 429. Slurm is the real one: srun on the server's PATH
is a script that runs the real srun, writes down when each `srun --test-only` begins and ends, and holds
them while the test says so (to fill the server's estimate slots without any timing)."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs
from tests.server import (
    JupyterServer,
    Response,
    running_server,
    terminal_session,
    terminal_websocket,
    websocket_status,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

SRUN = """#!/bin/sh
case " $* " in
*" --test-only "*)
    echo "start" >> {log}
    while [ -e {hold} ]; do sleep 0.05; done
    {real} "$@"
    status=$?
    echo "end" >> {log}
    exit $status ;;
esac
exec {real} "$@"
"""


@dataclass
class Site:
    server: JupyterServer
    deny_execute: Path  # while it exists, the server's authorizer grants no `execute`
    hold: Path  # while it exists, every srun --test-only waits before it runs
    srun_log: Path  # "start" and "end" of each srun --test-only
    images: Path  # saved_images_dir

    def srun_lines(self) -> list[str]:
        return self.srun_log.read_text().split() if self.srun_log.exists() else []


@pytest.fixture(scope="module")
def site(
    kernelspecs: KernelSpecs, slurm_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("limits")
    deny_execute, hold, srun_log = home / "deny-execute", home / "hold", home / "srun.log"
    images = slurm_cluster.netscratch / "root" / f"limits-images-{uuid.uuid4().hex[:8]}"
    real = shutil.which("srun")
    assert real
    (home / "bin").mkdir()
    (home / "bin" / "srun").write_text(SRUN.format(log=srun_log, hold=hold, real=real))
    (home / "bin" / "srun").chmod(0o755)
    environ = {**os.environ, "PATH": f"{home / 'bin'}:{os.environ['PATH']}"}
    config = (
        "c.SlurmMonitor.poll_interval = 0.5\n"
        "c.ServerApp.authorizer_class = 'tests.authorizers.ExecuteSwitchAuthorizer'\n"
        f"c.ExecuteSwitchAuthorizer.deny_execute_file = {str(deny_execute)!r}\n"
        f"c.AsgardSite.image_dirs = [{str(slurm_cluster.images_dir)!r}]\n"
        "c.AsgardSite.images_cache_seconds = 3600\n"
        "c.AsgardSite.estimates_at_once = 2\n"
        "c.AsgardSite.estimate_cache_seconds = 3600\n"
        "c.AsgardSite.max_terminals_per_kernel = 2\n"
        f"c.PyxisProvisioner.saved_images_dir = {str(images)!r}\n"
    )
    try:
        with running_server(home / "server", config, environ) as server:
            yield Site(server, deny_execute, hold, srun_log, images)
    finally:
        shutil.rmtree(images, ignore_errors=True)


def open_terminal(server: JupyterServer, kernel_id: str) -> Response:
    return server.request("POST", f"/asgard/api/kernels/{kernel_id}/terminal")


def test_save_image_and_the_container_terminal_need_execute_on_kernels(site: Site) -> None:
    server = site.server
    kernel_id = server.start_kernel("asgard-test")
    try:
        opened = open_terminal(server, kernel_id)
        assert opened.status == 201, opened.body
        listed_before = server.request("GET", "/asgard/api/images").body["images"]
        site.deny_execute.touch()
        try:
            refused = open_terminal(server, kernel_id)
            assert refused.status == 403 and "execute on resource: kernels" in refused.message
            saved = server.request("POST", f"/asgard/api/kernels/{kernel_id}/save-image", {"name": "env"})
            assert saved.status == 403 and "execute on resource: kernels" in saved.message
            assert websocket_status(terminal_websocket(server, opened.body["name"])) == 403
            assert not site.images.exists()  # the refused save wrote nothing
        finally:
            site.deny_execute.unlink()
        assert "DONE-42" in terminal_session(server, opened.body["name"], "echo DONE-$((6*7))\r", "DONE-42")
        saved = server.request("POST", f"/asgard/api/kernels/{kernel_id}/save-image", {"name": "env"})
        assert saved.status == 202, saved.body
        done = wait_for(
            lambda: (
                (state := server.request("GET", f"/asgard/api/kernels/{kernel_id}/save-image").body)["state"]
                != "saving"
                and state
            ),
            300,
            "the save over",
        )
        assert done["state"] == "saved", done
        # The listing was cached before the save (for an hour): this server's own save shows at once.
        listed = [image["path"] for image in server.request("GET", "/asgard/api/images").body["images"]]
        assert done["path"] not in [image["path"] for image in listed_before] and done["path"] in listed
    finally:
        server.request("DELETE", f"/api/kernels/{kernel_id}")


def test_a_kernel_gets_at_most_so_many_terminals_and_one_more_once_one_is_closed(site: Site) -> None:
    server = site.server
    kernel_id = server.start_kernel("asgard-test")
    try:
        names = [open_terminal(server, kernel_id).body["name"] for _ in range(2)]
        refused = open_terminal(server, kernel_id)
        assert refused.status == 429, refused.body
        assert "this kernel has 2 terminals open" in refused.message
        assert "c.AsgardSite.max_terminals_per_kernel = 2" in refused.message and "close one" in refused.message
        assert server.request("DELETE", f"/api/terminals/{names[0]}").status == 204
        wait_for(
            lambda: names[0] not in [terminal["name"] for terminal in server.request("GET", "/api/terminals").body],
            30,
            "the closed terminal gone",
        )
        again = open_terminal(server, kernel_id)
        assert again.status == 201, again.body
        assert "DONE-42" in terminal_session(server, again.body["name"], "echo DONE-$((6*7))\r", "DONE-42")
    finally:
        server.request("DELETE", f"/api/kernels/{kernel_id}")


def most_at_once(lines: list[str]) -> int:
    running = most = 0
    for line in lines:
        running += 1 if line == "start" else -1
        most = max(most, running)
    return most


def test_a_burst_of_estimates_runs_at_most_so_many_sruns_at_once_and_is_answered_or_refused_with_429(
    site: Site, slurm_cluster: LocalCluster
) -> None:
    server = site.server
    image = str(slurm_cluster.pytorch_image())
    bodies = [{"image": image, "gpus": "2", "time": f"{hours}:00:00"} for hours in range(2, 8)]
    answers: dict[int, Response] = {}  # by the body's index

    def ask(index: int) -> None:
        answers[index] = server.request("POST", "/asgard/api/estimate", bodies[index])

    burst = [threading.Thread(target=ask, args=(index,)) for index in range(len(bodies))]
    before = len(site.srun_lines())
    site.hold.touch()
    try:
        for thread in burst:
            thread.start()
        wait_for(lambda: len(answers) == 4, 60, "four of the six requests refused while two wait for Slurm")
        assert site.srun_lines()[before:] == ["start", "start"]  # the two slots are full, the rest waits
    finally:
        site.hold.unlink()
    for thread in burst:
        thread.join(120)
    statuses = sorted(answer.status for answer in answers.values())
    assert statuses == [200, 200, 429, 429, 429, 429], {index: answer.body for index, answer in answers.items()}
    refused = next(answer for answer in answers.values() if answer.status == 429)
    assert "c.AsgardSite.estimates_at_once = 2" in refused.message and "try again" in refused.message
    answered = {index: answer.body for index, answer in answers.items() if answer.status == 200}
    assert all(body["estimate"]["nodes"] and not body["estimate"]["error"] for body in answered.values()), answered
    lines = site.srun_lines()[before:]
    assert most_at_once(lines) == 2 and lines.count("start") == lines.count("end") == 2 * 3

    # Asked again: the two answered come from the cache (the same answer, no srun), the four refused are asked.
    again = {index: server.request("POST", "/asgard/api/estimate", body) for index, body in enumerate(bodies)}
    assert all(answer.status == 200 for answer in again.values())
    assert {index: again[index].body for index in answered} == answered
    assert site.srun_lines()[before:].count("start") == 2 * 3 + 4 * 3
