"""JupyterLab in headless Chromium: the browser test setup itself works."""

from __future__ import annotations

from tests.browser import open_lab, screenshot
from tests.server import JupyterServer


def test_jupyterlab_opens_and_lists_the_asgard_kernels(jupyter_lab: JupyterServer, browser) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    try:
        open_lab(page, jupyter_lab)
        page.wait_for_selector(".jp-LauncherCard", timeout=60_000)
        labels = page.locator(".jp-LauncherCard-label").all_inner_texts()
        assert any("Asgard test (asgard-test)" in label for label in labels), labels
        screenshot(page, "lab-launcher")
    finally:
        page.close()
