"""jupyter-asgard behind a real JupyterHub (tests/hub.py), as most clusters serve Jupyter: two Unix users' servers,
spawned by the hub as those users, run Asgard kernels on the test cluster's GPU nodes; everything goes through the
hub's proxy and its authentication, as a browser's or a program's requests do. The hub's idle culler leaves a
server whose kernel runs a silent cell alone and stops an idle one (a detachable kernel lives on for the next
one), a user's named servers each have kernels of their own, and a server the hub stops shuts down in order.

Who may do what on the first user's server is what the hub's roles grant, no more: the second user, granted
nothing there, is refused everywhere (the websockets too) and sees none of its kernels; a reader granted read
there lists its kernels but shuts none down and opens no terminal in it; a writer may shut a kernel down but
neither open a terminal in its container nor save it as an image, which run commands in the kernel (execute).
"""

from __future__ import annotations

import pwd
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.browser import PANEL, STATUS, make_notebook, open_notebook, run_cell, screenshot, wait_for_idle_kernel
from tests.cluster import NODES, LocalCluster
from tests.detaching import job_listed
from tests.hub import Hub, HubUserServer, running_hub
from tests.kernels import KernelSpecs, wait_until_no_kernel_jobs
from tests.server import (
    execute_via_websocket,
    free_port,
    terminal_session,
    terminal_websocket,
    websocket_request,
    websocket_status,
)
from tests.terminal_signals import AS_FROM_A_TERMINAL
from tests.unix_users import REPO, throwaway_user
from tests.waiting import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("no_kernel_jobs_left"), pytest.mark.timeout(600)]

READER, WRITER = "reader", "writer"  # hub users granted read, and write, on the first user's servers
SECOND = "second"  # the name of the first user's second server
CULL_AFTER = 15  # seconds unused after which the culler stops a server (a site would say an hour or more)
NODE_CELL = "import os; print('node', os.environ['SLURMD_NODENAME'])"
SILENT_CELL = f"import time; time.sleep({CULL_AFTER * 3}); print('done')"


@pytest.fixture(scope="module")
def hub(slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, detachable_kernelspec: str) -> Iterator[Hub]:
    """One hub for the module (it and the users' servers take a while to start), with two Unix users, whose
    servers offer the session's kernelspecs, a detachable one among them."""
    with throwaway_user("asghuba") as first, throwaway_user("asghubb") as second:
        with running_hub(
            slurm_cluster, kernelspecs.kernels_dir, [first, second], {READER: "read", WRITER: "write"}
        ) as hub:
            yield hub


@pytest.fixture
def owner(hub: Hub) -> Iterator[HubUserServer]:
    """The first user's server, running, as the first user reaches it; its kernels shut down after the test."""
    for user in hub.users:
        hub.start_server(user.name)
    server = hub.server(hub.owner.name)
    yield server
    hub.start_server(hub.owner.name)  # a test may have stopped it
    for kernel in server.request("GET", "/api/kernels").body:
        server.request("DELETE", f"/api/kernels/{kernel['id']}")


@pytest.fixture
def second(hub: Hub, owner: HubUserServer) -> Iterator[HubUserServer]:
    """The first user's named server SECOND, running; afterwards its kernels are shut down, those it left
    detached released, and it is stopped."""
    hub.start_server(owner.owner, SECOND)
    server = hub.server(owner.owner, SECOND)
    yield server
    hub.start_server(owner.owner, SECOND)  # a test may have stopped it
    for kernel in server.request("GET", "/api/kernels").body:
        server.request("DELETE", f"/api/kernels/{kernel['id']}")
    for found in server.request("GET", "/asgard/api/detached").body["found"]:
        server.request("DELETE", f"/asgard/api/detached/{found['kernel_id']}")
    hub.stop_server(owner.owner, SECOND)


def job_users(kernel_id: str) -> list[str]:
    """The users of the Slurm jobs of the Asgard kernel (squeue's names carry the kernel's id)."""
    queue = subprocess.run(["squeue", "-h", "-o", "%u %j"], capture_output=True, text=True, timeout=30).stdout
    return [line.split()[0] for line in queue.splitlines() if kernel_id in line]


def kernel_ids(server: HubUserServer) -> list[str]:
    return [row["kernel_id"] for row in kernel_rows(server)]


def kernel_rows(server: HubUserServer) -> list[dict[str, Any]]:
    answer = server.request("GET", "/asgard/api/kernels")
    assert answer.status == 200, (answer.status, answer.body)
    rows: list[dict[str, Any]] = answer.body["kernels"]
    return rows


def test_a_user_s_server_runs_an_asgard_kernel_on_a_gpu_node_as_that_user(hub: Hub, owner: HubUserServer) -> None:
    kernel_id = owner.start_kernel("asgard-test")
    assert job_users(kernel_id) == [owner.owner]  # the job is the user's, not root's (the hub's)
    printed = execute_via_websocket(owner, kernel_id, NODE_CELL).split()
    assert printed[0] == "node" and printed[1] in NODES, printed
    rows = kernel_rows(owner)
    assert [(row["kernel_id"], row["node"], row["state"]) for row in rows] == [(kernel_id, printed[1], "RUNNING")]

    assert owner.request("DELETE", f"/api/kernels/{kernel_id}").status == 204
    assert wait_until_no_kernel_jobs(60) == []
    assert kernel_rows(owner) == []


def test_another_user_is_refused_everywhere_on_the_first_user_s_server_and_sees_none_of_its_kernels(
    hub: Hub, owner: HubUserServer
) -> None:
    kernel_id = owner.start_kernel("asgard-test")
    opened = owner.request("POST", f"/asgard/api/kernels/{kernel_id}/terminal")
    assert opened.status == 201, (opened.status, opened.body)
    terminal = opened.body["name"]
    # The owner's terminal in the kernel's container, through the proxy: on the kernel's node.
    node = kernel_rows(owner)[0]["node"]
    assert node in terminal_session(owner, terminal, "echo on-$SLURMD_NODENAME\r", f"on-{node}")
    channels = f"/api/kernels/{kernel_id}/channels"
    assert websocket_status(websocket_request(owner, channels)) == 101

    other = hub.users[1].name
    intruder = hub.server(owner.owner, as_user=other)
    for method, path in [
        ("GET", "/asgard/api/kernels"),
        ("GET", f"/asgard/api/kernels/{kernel_id}"),
        ("DELETE", f"/asgard/api/kernels/{kernel_id}"),
        ("POST", f"/asgard/api/kernels/{kernel_id}/terminal"),
        ("POST", f"/asgard/api/kernels/{kernel_id}/save-image"),
        ("GET", "/api/kernels"),
    ]:
        assert intruder.request(method, path, {} if method == "POST" else None).status == 403, (method, path)
    assert websocket_status(websocket_request(intruder, channels)) == 403
    assert websocket_status(terminal_websocket(intruder, terminal)) == 403

    own = hub.server(other)  # the second user's own server: nothing of the first user's there
    assert kernel_rows(own) == []
    assert own.request("GET", "/api/kernels").body == []
    assert own.request("GET", f"/asgard/api/kernels/{kernel_id}").status == 404
    assert [row["kernel_id"] for row in kernel_rows(owner)] == [kernel_id]  # untouched by all that
    assert execute_via_websocket(owner, kernel_id, "print('still mine')") == "still mine\n"


def test_a_granted_reader_lists_the_kernels_and_a_writer_shuts_one_down_but_neither_runs_anything_in_it(
    hub: Hub, owner: HubUserServer
) -> None:
    kernel_id = owner.start_kernel("asgard-test")
    reader = hub.server(owner.owner, as_user=READER)
    writer = hub.server(owner.owner, as_user=WRITER)
    channels = f"/api/kernels/{kernel_id}/channels"

    assert [row["kernel_id"] for row in kernel_rows(reader)] == [kernel_id]
    assert reader.request("GET", f"/asgard/api/kernels/{kernel_id}").status == 200
    for refused in (
        reader.request("DELETE", f"/asgard/api/kernels/{kernel_id}"),
        reader.request("DELETE", f"/api/kernels/{kernel_id}"),
    ):
        assert refused.status == 403 and "write on resource: kernels" in refused.message, refused
    for granted in (reader, writer):
        terminal = granted.request("POST", f"/asgard/api/kernels/{kernel_id}/terminal")
        assert terminal.status == 403 and "execute on resource: kernels" in terminal.message, terminal
        saved = granted.request("POST", f"/asgard/api/kernels/{kernel_id}/save-image", {"name": "theirs"})
        assert saved.status == 403 and "execute on resource: kernels" in saved.message, saved
        assert websocket_status(websocket_request(granted, channels)) == 403
    assert execute_via_websocket(owner, kernel_id, "print('still mine')") == "still mine\n"

    assert writer.request("DELETE", f"/asgard/api/kernels/{kernel_id}").status == 204
    assert wait_until_no_kernel_jobs(60) == []
    assert kernel_rows(owner) == []


def test_a_user_logs_in_through_the_hub_and_runs_a_notebook_on_a_gpu_node_listed_in_the_side_panel(
    hub: Hub, owner: HubUserServer, browser: Any
) -> None:
    expect = pytest.importorskip("playwright.sync_api").expect
    hub.stop_server(owner.owner)  # logging in starts it, as for a user who comes back
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    try:
        page.goto(f"{hub.url}/hub/login")
        page.fill("#username_input", owner.owner)
        page.fill("#password_input", "any password: the dummy authenticator takes it")
        page.click("#login_submit")
        page.wait_for_url(re.compile(rf"/user/{owner.owner}/lab"), timeout=120_000)
        assert hub.user_model(owner.owner)["servers"][""]["ready"]

        path = make_notebook(owner, "through-the-hub.ipynb", "asgard-test")
        open_notebook(page, owner, path, token=False)  # the hub's login is all the browser has
        wait_for_idle_kernel(page)
        run_cell(page, NODE_CELL)
        output = page.locator(".jp-OutputArea-output").last
        output.wait_for(timeout=60_000)
        assert re.fullmatch(r"node gpu0[12]", output.inner_text().strip()), output.inner_text()

        page.locator(STATUS).click()  # the side panel
        card = page.locator(f"{PANEL} .jp-asgard-Kernel")
        expect(card).to_have_count(1)
        expect(card.locator(".jp-asgard-Kernel-name")).to_have_text(path)
        expect(card.locator("dd[data-field='Node']")).to_have_text(output.inner_text().split()[1])
        screenshot(page, "hub-side-panel")
    finally:
        page.close()
        for session in owner.request("GET", "/api/sessions").body or []:
            owner.request("DELETE", f"/api/sessions/{session['id']}")


def log_in(browser: Any, hub: Hub, user: str, to: str) -> Any:
    """A browser page of its own (its own cookies) logged in to the hub as user and sent on to the path to, which
    authorizes the hub's OAuth request of another user's server where the hub asks."""
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(f"{hub.url}/hub/login?next={to}")
    page.fill("#username_input", user)
    page.fill("#password_input", "any password: the dummy authenticator takes it")
    page.click("#login_submit")
    page.wait_for_load_state()
    if page.get_by_role("button", name="Authorize").count():  # the hub asks before it lets another user in
        page.get_by_role("button", name="Authorize").click()
        page.wait_for_load_state()
    return page


def open_side_panel(page: Any) -> Any:
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    page.locator(".lm-TabBar-tab[data-id='jupyter-asgard-panel']").click()
    return page.locator(PANEL)


def test_in_a_browser_a_reader_sees_the_kernel_but_cannot_shut_it_down_and_another_user_sees_nothing_of_it(
    hub: Hub, owner: HubUserServer, browser: Any
) -> None:
    expect = pytest.importorskip("playwright.sync_api").expect
    kernel_id = owner.start_kernel("asgard-test")
    lab = f"/user/{owner.owner}/lab/workspaces/reader"
    reader = log_in(browser, hub, READER, lab)
    try:
        card = open_side_panel(reader).locator(".jp-asgard-Kernel")
        expect(card).to_have_count(1)
        expect(card.locator("dd[data-field='Node']")).to_have_text(kernel_rows(owner)[0]["node"])
        card.get_by_role("button", name="Shut down").click()
        reader.locator(".jp-Dialog").get_by_role("button", name="Shut Down").click()
        refused = reader.locator(".Toastify__toast", has_text="Could not shut down the kernel")
        expect(refused).to_contain_text("not authorized to write on resource: kernels")
        screenshot(reader, "hub-reader-refused")
        expect(card).to_have_count(1)
        assert kernel_ids(owner) == [kernel_id] and job_users(kernel_id) == [owner.owner]
    finally:
        reader.context.close()

    other = hub.users[1].name
    intruder = log_in(browser, hub, other, f"/user/{other}/lab/workspaces/own")
    try:
        panel = open_side_panel(intruder)
        expect(panel).to_contain_text("No Asgard kernels run on this server.")
        expect(panel.locator(".jp-asgard-Kernel")).to_have_count(0)
        refused_page = intruder.goto(f"{hub.url}{lab}")
        assert refused_page is not None and refused_page.status == 403, refused_page and refused_page.status
    finally:
        intruder.context.close()
    assert execute_via_websocket(owner, kernel_id, "print('still mine')") == "still mine\n"


def test_the_idle_culler_lets_a_cell_run_then_stops_the_idle_server_releasing_its_kernel_a_detachable_one_back_after(
    hub: Hub, owner: HubUserServer
) -> None:
    released = owner.start_kernel("asgard-test")
    kept = owner.start_kernel("asgard-detachable")
    assert execute_via_websocket(owner, kept, "x = 'kept'; print(x)") == "kept\n"
    jobs = {row["kernel_id"]: row["job_id"] for row in kernel_rows(owner)}

    with hub.culling(timeout=CULL_AFTER, every=5), ThreadPoolExecutor(1) as cell:
        # A cell that prints nothing for longer than the culler's timeout: the server is in use all along.
        silent = cell.submit(execute_via_websocket, owner, released, SILENT_CELL, 120)
        assert silent.result(timeout=150) == "done\n", "the culler stopped the server while a cell ran"
        wait_for(lambda: "" not in hub.user_model(owner.owner)["servers"], 180, "the culler to stop the idle server")
    wait_for(lambda: not job_listed(jobs[released]), 60, "the allocation of the kernel that is not detachable to end")
    assert job_listed(jobs[kept]), "the detachable kernel ended with the server"

    hub.start_server(owner.owner)  # the user is back
    assert [(row["kernel_id"], row["job_id"]) for row in kernel_rows(owner)] == [(kept, jobs[kept])]
    assert execute_via_websocket(owner, kept, "print(x)") == "kept\n"


def test_two_servers_of_one_user_have_their_own_kernels_and_tell_their_detached_kernels_apart(
    hub: Hub, owner: HubUserServer, second: HubUserServer
) -> None:
    mine = owner.start_kernel("asgard-test")
    theirs = second.start_kernel("asgard-detachable")
    assert kernel_ids(owner) == [mine] and kernel_ids(second) == [theirs]  # what each side panel lists
    assert [kernel["id"] for kernel in second.request("GET", "/api/kernels").body] == [theirs]
    job = kernel_rows(second)[0]["job_id"]

    hub.stop_server(owner.owner, SECOND)  # its detachable kernel runs on without it
    assert job_listed(job)
    hub.stop_server(owner.owner)  # the default server starts again: the kernel is not its own to take over
    hub.start_server(owner.owner)
    assert kernel_ids(owner) == []
    found = owner.request("GET", "/asgard/api/detached").body["found"]
    assert [(kernel["kernel_id"], kernel["hub_server"]) for kernel in found] == [(theirs, SECOND)]
    assert f"your server '{SECOND}'" in found[0]["why"], found

    hub.start_server(owner.owner, SECOND)  # its own server takes it back
    assert kernel_ids(second) == [theirs]
    assert second.request("GET", "/asgard/api/detached").body["found"] == []


def test_a_server_the_hub_stops_shuts_down_in_order_ending_a_kernel_whose_shutdown_was_under_way(
    hub: Hub, owner: HubUserServer
) -> None:
    """The hub stops a server with SIGINT (a server with no terminal): it stops as on SIGTERM, shutting its kernels
    down; a detachable kernel the user was shutting down ends with it instead of waiting out its grace."""
    kernel_id = owner.start_kernel("asgard-detachable")
    job = kernel_rows(owner)[0]["job_id"]
    record = hub.owner.home / ".local/share/jupyter/asgard/detachable" / kernel_id
    assert record.is_dir()
    # answered at once: with pending kernels, jupyter_server shuts the kernel down after it answers
    assert owner.request("DELETE", f"/api/kernels/{kernel_id}").status == 204
    hub.stop_server(owner.owner)
    assert not record.exists()
    wait_for(lambda: not job_listed(job), 30, "the kernel's job to end")


def test_the_demo_behind_a_hub_lets_its_users_log_in_to_their_notebooks_and_ctrl_c_stops_it_all(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, browser: Any
) -> None:
    """dev/demo-hub's hub (python3 -m tests.hub), on the session's cluster instead of one of its own."""
    expect = pytest.importorskip("playwright.sync_api").expect
    port = free_port()
    argv = [*AS_FROM_A_TERMINAL, sys.executable, "-m", "tests.hub", "--root", str(slurm_cluster.root)]
    argv += ["--port", str(port)]
    argv += ["--kernels", str(kernelspecs.kernels_dir), "--notebooks", str(REPO / "examples")]
    demo = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert demo.stdout is not None
        said = demo.stdout.readline()
        assert said.startswith(f"JupyterHub: http://127.0.0.1:{port}/hub/login  users: "), said
        users = re.findall(r"(alice\d+|bob\d+)", said)
        assert len(users) == 2, said
        page = browser.new_context().new_page()
        try:
            page.goto(f"http://127.0.0.1:{port}/hub/login")
            page.fill("#username_input", users[0])
            page.fill("#password_input", "anything")
            page.click("#login_submit")
            page.wait_for_url(re.compile(rf"/user/{users[0]}/lab"), timeout=120_000)
            expect(page.locator(".jp-DirListing-item", has_text="hello-asgard.ipynb")).to_have_count(1)
        finally:
            page.context.close()
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            rest, _ = demo.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            demo.terminate()  # the hub, its servers and the throwaway users go as on Ctrl-C
            demo.communicate(timeout=180)
            raise
    assert demo.returncode == 0, rest
    assert "stopping the hub" in rest
    for user in users:
        with pytest.raises(KeyError):
            pwd.getpwnam(user)
