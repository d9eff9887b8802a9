"""A client whose kernel websocket was open across a restart it did not ask for reaches the kernel again
(server/kernel_websockets.py): an Asgard kernel comes back on new ports, and the server closes the websockets
left on the old ones, as a service restart (1012), for their clients to reconnect. A kernel that comes back where
it was (a local one) keeps its websockets open."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from jupyter_asgard.server.kernel_websockets import SERVICE_RESTART
from tests.browser import make_notebook, open_notebook, run_cell, wait_for_idle_kernel
from tests.server import JupyterServer, execute_on, kernel_info_request, kernel_websocket, request_on, run_async

if TYPE_CHECKING:
    from tornado.websocket import WebSocketClientConnection

pytestmark = pytest.mark.cluster


def restarted_by_another_client(server: JupyterServer, kernel_id: str) -> tuple[int | None, str, str]:
    """A client's websocket, open while another client restarts the kernel through the REST API: how the server
    closed it (its close code, None for not at all), and what the kernel printed to that client after the
    restart, first through the same websocket where the server left it open, then through one reopened in the
    same session (as JupyterLab reconnects)."""

    async def go() -> tuple[int | None, str, str]:
        session = uuid.uuid4().hex
        connection = await kernel_websocket(server, kernel_id, session)
        assert await execute_on(connection, "x = 6 * 7; print('before')", session) == "before\n"
        answer = await asyncio.to_thread(server.request, "POST", f"/api/kernels/{kernel_id}/restart")
        assert answer.status == 200, answer.body
        try:
            await iopub_subscribed(connection, session)
            same = await execute_on(connection, "print('same websocket')", session, timeout=30)
        except ConnectionError:
            same = ""
        connection.close()
        again = await kernel_websocket(server, kernel_id, session)
        try:
            return connection.close_code, same, await execute_on(again, "print('x' in dir())", session)
        finally:
            again.close()

    return run_async(go)


async def iopub_subscribed(connection: WebSocketClientConnection, session: str, timeout: float = 30) -> None:
    """Where a websocket outlives a restart on the same ports, its iopub subscription to the new kernel process
    is made again by ZeroMQ in the background, and what the kernel publishes before that is lost (the slow
    joiner). jupyter_server nudges a websocket's iopub at its open, not after a restart; this nudges as it does:
    kernel_info requests until one's status comes back on iopub. ConnectionError where the server closes."""

    async def status(request: tuple[str, str]) -> None:
        async for reply in request_on(connection, request):
            if reply["msg_type"] == "status":
                return

    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        try:
            return await asyncio.wait_for(status(kernel_info_request(session)), 1)
        except asyncio.TimeoutError:
            continue
    raise AssertionError(f"no iopub message from the kernel in {timeout} s through a websocket left open")


def test_a_websocket_open_across_another_clients_restart_is_told_to_reconnect_and_reaches_the_kernel(
    jupyter_server: JupyterServer,
) -> None:
    kernel_id = jupyter_server.start_kernel("asgard-test")
    try:
        closed, same, again = restarted_by_another_client(jupyter_server, kernel_id)
        assert (closed, same) == (SERVICE_RESTART, ""), "the websocket was left on the kernel's old ports"
        assert again == "False\n"  # the restarted kernel, its variables gone
        told = f"Kernel {kernel_id}: 1 client(s) told to reconnect to its new address"
        assert told in jupyter_server.log_path.read_text()
    finally:
        jupyter_server.request("DELETE", f"/api/kernels/{kernel_id}")


def test_a_local_kernel_keeps_its_websockets_across_a_restart(jupyter_server: JupyterServer) -> None:
    """A local kernel restarts on its ports: its websockets reach it as they did, none is closed."""
    kernel_id = jupyter_server.start_kernel("python3")
    try:
        closed, same, again = restarted_by_another_client(jupyter_server, kernel_id)
        assert (closed, same, again) == (None, "same websocket\n", "False\n")
        assert f"Kernel {kernel_id}: 1 client(s) told to reconnect" not in jupyter_server.log_path.read_text()
    finally:
        jupyter_server.request("DELETE", f"/api/kernels/{kernel_id}")


def test_in_jupyterlab_a_restart_in_one_tab_leaves_the_other_tab_of_the_notebook_on_the_kernel(
    jupyter_lab: JupyterServer, browser: Any
) -> None:
    """Two JupyterLab tabs on one notebook (or JupyterLab and VS Code on one kernel): the tab that restarts the
    kernel reconnects itself, the other is told to by the server's close, and both run cells in the new kernel."""
    expect = pytest.importorskip("playwright.sync_api").expect
    path = make_notebook(jupyter_lab, f"two-tabs-{uuid.uuid4().hex[:8]}.ipynb", "asgard-test")
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    restarting, other = context.new_page(), context.new_page()
    try:
        for page in (restarting, other):
            open_notebook(page, jupyter_lab, path)
            wait_for_idle_kernel(page)
        run_cell(other, "x = 6 * 7; print(x)")
        expect(other.locator(".jp-OutputArea-output").last).to_have_text("42", timeout=60_000)
        sessions = [item for item in jupyter_lab.request("GET", "/api/sessions").body if item["path"] == path]
        assert len(sessions) == 1, sessions  # one kernel, two tabs

        restarting.locator(".lm-MenuBar-itemLabel", has_text="Kernel").click()
        restarting.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Restart Kernel…$")).click()
        dialog = restarting.locator(".jp-Dialog")
        expect(dialog).to_contain_text("Do you want to restart the kernel")
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        expect(dialog).to_have_count(0)
        wait_for_idle_kernel(restarting)
        for page in (other, restarting):
            run_cell(page, "print('x' in dir())")
            expect(page.locator(".jp-OutputArea-output").last).to_have_text("False", timeout=60_000)
    finally:
        context.close()
        for item in jupyter_lab.request("GET", "/api/sessions").body:
            if item["path"] == path:
                jupyter_lab.request("DELETE", f"/api/sessions/{item['id']}")
