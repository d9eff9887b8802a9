"""Headless Chromium (Debian's, driven by Playwright) against a real JupyterLab, for the browser tests."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Any

CHROMIUM = "/usr/bin/chromium"
# Without these flags Chromium reaches for Google's services, which this network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
STATUS = ".jp-asgard-StatusItem"
PANEL = "#jupyter-asgard-panel"
ARTIFACTS = Path(os.environ.get("ASGARD_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def screenshot(page: Any, name: str) -> Path:
    """Keep a screenshot as a test artifact (test-artifacts/, ignored by git)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def open_lab(page: Any, server: Any) -> None:
    """Open JupyterLab logged in with the server's token, in a workspace of its own (the default one holds what
    earlier tests left open, and shows no launcher then), and wait until its shell is up."""
    page.goto(f"{server.url}/lab/workspaces/test-{uuid.uuid4().hex[:8]}?token={server.token}")
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)


def make_notebook(server: Any, name: str, kernel_name: str) -> str:
    """A notebook whose metadata names the kernel, so JupyterLab starts that kernel when it opens it."""
    spec = server.request("GET", "/api/kernelspecs").body["kernelspecs"][kernel_name]["spec"]
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "cells": [],
        "metadata": {
            "kernelspec": {"name": kernel_name, "display_name": spec["display_name"], "language": spec["language"]}
        },
    }
    answer = server.request("PUT", f"/api/contents/{name}", {"type": "notebook", "format": "json", "content": notebook})
    assert answer.status in (200, 201), answer.body
    return name


def open_notebook(page: Any, server: Any, path: str, token: bool = True) -> None:
    """Open a notebook of the server in JupyterLab, in a workspace of its own; token=False: without the server's
    token in the URL, for a browser that logged in (to a JupyterHub) already."""
    # The answer a person gives to JupyterLab's first question ("notified about official Jupyter news?"),
    # so that its toast does not cover the status bar.
    server.request(
        "PUT", "/lab/api/settings/@jupyterlab/apputils-extension:notification", {"raw": '{"fetchNews": "false"}'}
    )
    # A workspace of its own: JupyterLab would otherwise reopen (and restart the kernels of) the notebooks
    # earlier tests left open in the default workspace of the shared server.
    workspace = f"{Path(path).stem}-{uuid.uuid4().hex[:8]}"
    page.goto(f"{server.url}/lab/workspaces/{workspace}/tree/{path}" + (f"?token={server.token}" if token else ""))
    page.wait_for_selector("#jp-main-dock-panel", timeout=60_000)
    page.wait_for_selector(".jp-NotebookPanel", timeout=60_000)


def wait_for_idle_kernel(page: Any, timeout: float = 120_000) -> None:
    """Until the notebook's kernel is idle as JupyterLab's status bar says ("Asgard test (x) | Idle"): the
    toolbar's execution indicator says idle before the session has a kernel, and a cell run then gets
    JupyterLab's "Select Kernel" dialog instead."""
    status = page.locator(".jp-StatusBar-Widget").get_by_text(re.compile(r"\S \| Idle$"))
    status.first.wait_for(timeout=timeout)


def click(page: Any, target: Any) -> None:
    """Click, and when that fails, say what a JupyterLab dialog covering the target says (a screenshot kept)."""
    try:
        target.click()
    except Exception:
        dialog = page.locator(".jp-Dialog")
        if dialog.count():
            screenshot(page, "dialog-in-the-way")
            raise AssertionError(f"a dialog covers the notebook: {dialog.first.inner_text()!r}") from None
        raise


def run_cell(page: Any, code: str) -> None:
    """Type code into the last cell (through the keyboard: CodeMirror ignores a bare DOM fill) and run it.
    A notebook whose kernel connection is still settling may ignore the first run, and a fresh editor may
    not have focus yet: both are checked and retried, as a person would."""
    cell = page.locator(".jp-Notebook .jp-CodeCell").last
    editor = cell.locator(".cm-content")
    for _ in range(10):
        click(page, editor)
        page.keyboard.press("Control+a")
        page.keyboard.press("Delete")
        page.keyboard.insert_text(code)
        if code.splitlines()[0] in editor.inner_text():
            break
        page.wait_for_timeout(500)
    prompt = cell.locator(".jp-InputPrompt")
    for _ in range(15):
        click(page, editor)
        page.keyboard.press("Control+Enter")
        page.wait_for_timeout(1000)
        if re.search(r"\[(\d+|\*)\]", prompt.inner_text()):
            return
    raise AssertionError(f"the cell never ran: {prompt.inner_text()!r}")
