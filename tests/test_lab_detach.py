"""Detachable kernels in a real JupyterLab (headless Chromium) on the real test cluster: an open notebook finds
its kernel again after its JupyterLab was killed and started again, the side panel shows what the kernel
printed meanwhile, and the cells whose replies went to the server that was killed are finished; the panel's
"Detached kernels" lists a kernel held by another server of the user (Adopt refused in the server's words,
Release ends it) and one that ended while detached (dismissable)."""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.browser import (
    PANEL,
    STATUS,
    make_notebook,
    open_lab,
    open_notebook,
    run_cell,
    screenshot,
    wait_for_idle_kernel,
)
from tests.detaching import SITE, TICKS, again, kernel_row, killed, records, release_left_kernels, wait_for
from tests.kernels import kernel_jobs
from tests.server import JupyterServer, started_lab, started_server

pytestmark = [pytest.mark.cluster, pytest.mark.usefixtures("detachable_kernelspec")]

expect: Any = pytest.importorskip("playwright.sync_api").expect
# A cell that ends within the 4 s its server is down (TICKS runs on for 30 s, longer than a server's restart)
SHORT = "import time\nprint('tick 0', flush=True)\ntime.sleep(2)\nprint('slept', flush=True)"


@pytest.fixture
def homes(tmp_path: Path, no_kernel_jobs_left: None) -> Iterator[Path]:
    """Where the test's servers live; the detachable kernels they leave are released afterwards (a server that
    stops leaves them running, which is the point), before no_kernel_jobs_left checks the queue."""
    yield tmp_path
    for data in tmp_path.glob("*/data"):
        release_left_kernels(data)


def stopped(*servers: JupyterServer | None) -> None:
    for server in servers:
        if server is not None:
            server.stop()


def page_log(page: Any) -> list[str]:
    """What the page logs, and its requests to the kernels API that fail or answer, with the time: the artifact
    that tells why a tab did not reconnect."""
    log: list[str] = []

    def kernels_api(what: str, url: str) -> None:
        if "/api/kernels/" in url:
            log.append(f"{time.strftime('%X')} {what} {url}")

    page.on("console", lambda message: log.append(f"{time.strftime('%X')} {message.type}: {message.text}"))
    page.on("requestfailed", lambda request: kernels_api(f"failed ({request.failure})", request.url))
    page.on("response", lambda response: kernels_api(str(response.status), response.url))
    return log


def started_kernel(server: JupyterServer) -> str:
    """A detachable kernel of a server, started from a thread of its own: Playwright's event loop runs in this one,
    and the kernel's websocket client runs one of its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(server.start_kernel, "asgard-detachable").result(180)


def output(page: Any) -> Any:
    return page.locator(".jp-Notebook .jp-CodeCell").last.locator(".jp-OutputArea-output")


def kernel_status(page: Any) -> Any:
    """JupyterLab's status bar item of the notebook's kernel: "Asgard test (asgard-detachable) | Idle"."""
    return page.locator(".jp-StatusBar-Widget").get_by_text(re.compile(r"\(asgard-detachable\) \| "))


def dismiss_connection_error(page: Any) -> None:
    """JupyterLab says it lost its server while it was down; the server is back, so the user dismisses that."""
    dialog = page.locator(".jp-Dialog", has_text="Server Connection Error")
    if dialog.count():
        dialog.get_by_role("button", name="Close").click()
        expect(dialog).to_have_count(0)


def test_an_open_notebook_finds_its_detachable_kernel_again_after_its_jupyterlab_was_killed(
    homes: Path, browser: Any
) -> None:
    lab = started_lab(homes / "lab", SITE)
    kernel_id = ""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    sockets: list[str] = []
    page.on("websocket", lambda socket: sockets.append(socket.url))
    console = page_log(page)
    try:
        path = make_notebook(lab, "detachable.ipynb", "asgard-detachable")
        open_notebook(page, lab, path)
        wait_for_idle_kernel(page, 120_000)
        run_cell(page, "x = 42")
        prompt = page.locator(".jp-Notebook .jp-InputPrompt").last
        expect(prompt).to_have_text(re.compile(r"^\[\d+\]:$"), timeout=60_000)  # JupyterLab may have run it twice
        (session,) = [item for item in lab.request("GET", "/api/sessions").body if item["path"] == path]
        kernel_id = session["kernel"]["id"]
        job_id = kernel_row(lab, kernel_id)["job_id"]

        page.locator(STATUS).click()  # the side panel: the kernel is detachable
        card = page.locator(f"{PANEL} .jp-asgard-Kernel[data-kernel-id='{kernel_id}']")
        tag = card.locator(".jp-asgard-Kernel-tag")
        expect(tag).to_have_text("detachable", timeout=30_000)
        expect(tag).to_be_visible()
        expect(tag).to_have_attribute("title", re.compile("keeps running when this Jupyter server stops"))
        expect(card.locator(".jp-asgard-WhileDetached")).to_be_hidden()

        # The server writes the notebook's session down for the kernel's next server once the kernel runs: killed
        # before that, it would leave the kernel without it, and the tab would not find its kernel again.
        record = records(lab) / kernel_id / "kernel.json"
        wait_for(lambda: json.loads(record.read_text()).get("session", {}).get("path") == path, 30, "session kept")
        run_cell(page, SHORT)  # a cell that ends while no server holds the kernel
        expect(output(page)).to_contain_text("tick 0", timeout=30_000)
        killed(lab)
        before = len(sockets)
        page.wait_for_timeout(4_000)
        assert any(line.startswith(f"{job_id} ") for line in kernel_jobs()), "the job ended with JupyterLab"
        lab = again(lab)
        kernels = [kernel["id"] for kernel in lab.request("GET", "/api/kernels").body]
        assert kernels == [kernel_id], f"{kernels} (before: {kernel_id})\n{lab.log()}"

        # The same tab: JupyterLab reconnects its kernel (idle, the cell having ended), the card says what the
        # kernel printed while no server held it, and the cell, whose reply went to nobody, is finished: its
        # count, and the rest of what it printed, once.
        expect(kernel_status(page)).to_have_text(re.compile(r"\| Idle$"), timeout=120_000)
        dismiss_connection_error(page)
        printed = card.locator(".jp-asgard-WhileDetached")
        expect(printed).to_contain_text("While detached:", timeout=90_000)
        expect(printed.locator(".jp-asgard-WhileDetached-output")).to_contain_text("slept")
        expect(prompt).to_have_text(re.compile(r"^\[\d+\]:$"), timeout=30_000)
        expect(output(page)).to_have_text("tick 0\nslept")
        expect(tag).to_be_visible()
        screenshot(page, "asgard-detachable-kernel-taken-over")
        run_cell(page, "print(x)")
        expect(output(page)).to_have_text("42", timeout=60_000)

        # A cell still running when the next server takes the kernel over: its reply goes to the connection of
        # the server it was sent through, which is gone, and its tab missed what it printed until it reconnected;
        # once it ends, the cell shows its count and all it printed all the same.
        run_cell(page, TICKS)
        expect(output(page)).to_contain_text("tick 1", timeout=30_000)
        killed(lab)
        lab = again(lab)
        expect(prompt).to_have_text(re.compile(r"^\[\d+\]:$"), timeout=120_000)
        dismiss_connection_error(page)
        expect(output(page)).to_have_text("\n".join(f"tick {tick}" for tick in range(30)))  # each once, in order
        expect(kernel_status(page)).to_have_text(re.compile(r"\| Idle$"))
        channels = [url for url in sockets[before:] if "/api/kernels/" in url and "/channels" in url]
        assert channels and all(f"/api/kernels/{kernel_id}/channels" in url for url in channels), channels
        (session,) = [item for item in lab.request("GET", "/api/sessions").body if item["path"] == path]
        assert session["kernel"]["id"] == kernel_id
        assert kernel_row(lab, kernel_id)["job_id"] == job_id
    finally:
        screenshot(page, "asgard-detachable-last").with_suffix(".console.txt").write_text("\n".join(console))
        page.close()
        if kernel_id and lab.answers():
            lab.request("DELETE", f"/asgard/api/kernels/{kernel_id}")
        lab.stop()


def test_the_panel_lists_a_kernel_held_by_another_server_and_releases_it_and_one_that_ended_while_detached(
    homes: Path, browser: Any
) -> None:
    """Server A holds a detachable kernel; server A2 started one and died, and its job ended since. JupyterLab B
    of the same user (the same data directory) finds A's kernel held (Adopt refused, saying why; Release ends
    it) and A2's ended (dismissed for good)."""
    holder = started_server(homes / "a", SITE)
    dead: JupyterServer | None = None
    lab: JupyterServer | None = None
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        held = started_kernel(holder)
        held_job = kernel_row(holder, held)["job_id"]
        (homes / "a2").mkdir()
        (homes / "a2" / "data").symlink_to(homes / "a" / "data")  # the same user's data
        dead = started_server(homes / "a2", SITE)
        ended = started_kernel(dead)
        ended_job = kernel_row(dead, ended)["job_id"]
        killed(dead)
        subprocess.run(["scancel", ended_job], check=True)
        wait_for(lambda: not any(line.startswith(f"{ended_job} ") for line in kernel_jobs()), 60, "the job ends")

        (homes / "b").mkdir()
        (homes / "b" / "data").symlink_to(homes / "a" / "data")
        lab = started_lab(homes / "b", SITE)
        open_lab(page, lab)
        page.locator(".lm-TabBar-tab[data-id='jupyter-asgard-panel']").click()
        section = page.locator(f"{PANEL} .jp-asgard-DetachedSection")
        expect(section).to_be_visible(timeout=30_000)
        found = section.locator(f".jp-asgard-Detached[data-kernel-id='{held}']")
        expect(found).to_contain_text("another Jupyter server of yours holds it")
        expect(found).to_contain_text(f"Slurm job {held_job} on gpu0")
        gone = section.locator(f".jp-asgard-Detached.jp-mod-ended[data-kernel-id='{ended}']")
        expect(gone).to_contain_text(re.compile(r"ended while detached: \w"))
        expect(gone).to_contain_text(f"Slurm job {ended_job}")
        screenshot(page, "asgard-detached-kernels")

        found.get_by_role("button", name="Adopt").click()
        expect(found.locator(".jp-asgard-Detached-error")).to_contain_text(
            f"the detached kernel {held} cannot be taken over: another Jupyter server of yours holds it"
        )
        gone.get_by_role("button", name="Dismiss").click()
        expect(gone).to_have_count(0)

        found.get_by_role("button", name="Release").click()
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text(f"Slurm job {held_job} is cancelled")
        dialog.get_by_role("button", name="Release").click()
        expect(found).to_have_count(0, timeout=30_000)
        expect(section).to_be_hidden()  # nothing left to show: the ended kernel was dismissed
        wait_for(lambda: not any(line.startswith(f"{held_job} ") for line in kernel_jobs()), 60, "the job ends")

        page.reload()  # a dismissed ended kernel stays dismissed (the panel lists them in its first poll)
        page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
        note = page.locator(f"{PANEL} .jp-asgard-Panel-note").first
        expect(note).to_have_text("No Asgard kernels run on this server.", timeout=30_000)
        expect(page.locator(f"{PANEL} .jp-asgard-DetachedSection")).to_have_attribute("hidden", "")
    finally:
        page.close()
        stopped(lab, dead, holder)
