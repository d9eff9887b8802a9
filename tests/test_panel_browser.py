"""The container panel in a real JupyterLab (headless Chromium): pick, mount, save, then run the saved kernel."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.browser import open_lab, run_cell, screenshot, wait_for_idle_kernel
from tests.cluster import LocalCluster
from tests.server import JupyterServer

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

PANEL_CELL = "from jupyter_asgard.widgets import ContainerPanel\npanel = ContainerPanel()\npanel"


def new_notebook(page, kernel_label: str) -> None:
    page.locator(".jp-LauncherCard", has_text=kernel_label).first.click()
    page.wait_for_selector(".jp-Notebook .jp-Cell .cm-content", timeout=60_000)
    wait_for_idle_kernel(page, 120_000)


def dismiss_news(page) -> None:
    """JupyterLab asks once whether to fetch Jupyter news; say no so the toast covers nothing."""
    answer = page.get_by_role("button", name="No", exact=True)
    try:
        answer.click(timeout=5_000)
    except Exception:  # the question did not come: nothing to dismiss
        pass


def panel_text_input(page, placeholder_start: str):
    return page.locator(f"input[placeholder^='{placeholder_start}']").last


def test_panel_saves_a_kernel_that_then_runs_on_the_cluster(
    jupyter_lab: JupyterServer, browser, slurm_cluster: LocalCluster
) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    try:
        open_lab(page, jupyter_lab)
        dismiss_news(page)
        new_notebook(page, "Python 3")
        run_cell(page, PANEL_CELL)
        page.wait_for_selector("text=Asgard container", timeout=60_000)
        page.get_by_text(re.compile(r"\d+ images, \d+ partitions")).wait_for(timeout=60_000)

        image = panel_text_input(page, "choose an image")
        image.fill("nvcr.io/nvidia/pytorch:23.12-py3")
        option = page.locator("datalist option[value^='nvcr.io/nvidia/pytorch:23.12-py3 ·']")
        image.fill(option.first.get_attribute("value"))
        image.press("Enter")
        # Slurm's estimate and a cheaper alternative, once the settings rest (the cluster has free GPUs)
        estimate = page.locator(".asgard-estimate")
        expect(estimate).to_contain_text(re.compile(r"^starts now on gpu0[12]"), timeout=30_000)
        expect(estimate).to_contain_text(re.compile(r"or time limit 1:00:00: starts now on gpu0[12]"))
        sources = page.locator("input[placeholder^='source on the cluster']")
        rows = sources.count()
        page.get_by_role("button", name="Add mount").click()
        page.wait_for_function(
            f"document.querySelectorAll(\"input[placeholder^='source on the cluster']\").length > {rows}"
        )
        panel_text_input(page, "source on the cluster").fill(str(slurm_cluster.netscratch / "root"))
        target = "/data"  # only inside the container: Pyxis creates the mount point
        panel_text_input(page, "inside the container").fill(target)
        panel_text_input(page, "inside the container").press("Tab")
        page.wait_for_selector(f"pre:has-text('{slurm_cluster.netscratch}/root:{target}')", timeout=10_000)
        panel_text_input(page, "e.g. PyTorch 24.05").fill("Panel PyTorch")
        panel_text_input(page, "e.g. PyTorch 24.05").press("Tab")
        page.get_by_role("button", name="Save as kernel").click()
        page.wait_for_selector("text=Saved kernel", timeout=30_000)
        screenshot(page, "container-panel")

        page.reload()
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        # The Kernel menu acts on the notebook that has the focus: after a reload it may be the file browser's
        # (its row of the notebook highlighted), and every item of the menu is then disabled.
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.get_by_role("menuitem", name="Kernel").click()
        change_kernel = page.get_by_role("menuitem", name=re.compile("^Change Kernel"))
        expect(change_kernel).not_to_have_class(re.compile("lm-mod-disabled"))
        change_kernel.click()
        dialog = page.locator(".jp-Dialog")
        dialog.locator("select").select_option(label="Panel PyTorch")
        dialog.get_by_role("button", name="Select").click()
        wait_for_idle_kernel(page, 120_000)
        run_cell(page, f"import os; print('node', os.environ['SLURMD_NODENAME'], os.path.exists('{target}/hello.txt'))")
        output = page.locator(".jp-OutputArea-output").last
        output.wait_for(timeout=60_000)
        assert re.fullmatch(r"node gpu0[12] True", output.inner_text().strip())
        screenshot(page, "panel-kernel-running")
    finally:
        (screenshot(page, "container-panel-last").with_suffix(".console.txt")).write_text("\n".join(console))
        page.close()
        for kernel in jupyter_lab.request("GET", "/api/kernels").body:
            jupyter_lab.request("DELETE", f"/api/kernels/{kernel['id']}")


def test_panel_imports_a_registry_image_following_it_and_then_offers_it(
    jupyter_lab: JupyterServer, browser, slurm_cluster: LocalCluster, tmp_path: Path
) -> None:
    """The panel's import box: the real import job against the test registry, its status line while it runs,
    and the new image chosen in the picker once imported."""
    config_dir = tmp_path / "enroot"  # the registry's credentials, where this user's enroot reads them
    slurm_cluster.write_enroot_credentials(config_dir)
    name = f"panel-import-{uuid.uuid4().hex[:8]}"
    image = slurm_cluster.netscratch / "root" / "images" / f"{name}.sqsh"  # the lab's saved_images_dir
    page = browser.new_page(viewport={"width": 1400, "height": 1300})
    try:
        open_lab(page, jupyter_lab)
        dismiss_news(page)
        new_notebook(page, "Python 3")
        run_cell(page, f"import os\nos.environ['ENROOT_CONFIG_PATH'] = {str(config_dir)!r}\n{PANEL_CELL}")
        page.get_by_text(re.compile(r"\d+ images, \d+ partitions")).wait_for(timeout=60_000)
        panel_text_input(page, "registry image").fill(slurm_cluster.tiny_registry_image())
        panel_text_input(page, "name (optional").fill(name)
        page.get_by_role("button", name="Import").click()
        shown: list[str] = []
        deadline = time.monotonic() + 120
        while f"imported as {image}" not in (shown or [""])[-1] and time.monotonic() < deadline:
            status = page.locator(".widget-html-content", has_text="asgard/tiny:1.0:").last.inner_text(timeout=5_000)
            if not shown or status != shown[-1]:
                shown.append(status)
            time.sleep(0.1)
        assert shown[-1].endswith(f"imported as {image}"), shown
        assert len(shown) > 1, shown  # it was followed on its way, not only seen at its end
        expect(panel_text_input(page, "choose an image")).to_have_value(re.compile(name), timeout=30_000)
        screenshot(page, "container-panel-imported")
    finally:
        page.close()
        for kernel in jupyter_lab.request("GET", "/api/kernels").body:
            jupyter_lab.request("DELETE", f"/api/kernels/{kernel['id']}")
        for path in (image, image.with_name(f"{image.name}.json")):
            path.unlink(missing_ok=True)
