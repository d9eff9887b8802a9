"""Headless Chromium (Debian's, driven by Playwright) against a real JupyterLab, for the browser tests."""

from __future__ import annotations

import os
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
