"""The user's named containers in a real JupyterLab (headless Chromium) on the real test cluster: the side panel's
Containers section lists a container a notebook's kernel made, refuses to remove it in the server's words while
the kernel runs in it, and removes it from the node's storage once it does not; a notebook whose kernel runs away
from its container says so in the status bar and on its card, and "Bring it here" brings what was installed in
it over, its progress on the card."""

from __future__ import annotations

import re
import subprocess
import uuid
from datetime import datetime
from typing import Any

import pytest

from tests.browser import PANEL, STATUS, make_notebook, open_notebook, run_cell, screenshot, wait_for_idle_kernel
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, container_storage
from tests.server import JupyterServer

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

expect: Any = pytest.importorskip("playwright.sync_api").expect
MOVE_TIMEOUT = 300_000  # ms: the container saved on its node as a squashfs, then unpacked anew for the restart
# Records each state the kernel card's move shows, with whether "Bring it here" was shown then, in order, in
# window.asgardMoveStates (page.add_init_script).
RECORD_MOVE_STATES = """
window.asgardMoveStates = [];
new MutationObserver(() => {
  const move = document.querySelector('.jp-asgard-Kernel-move:not([hidden])');
  const bring = move?.closest('.jp-asgard-Kernel')?.querySelector('.jp-asgard-Kernel-bring');
  if (!move || !bring) {
    return;
  }
  const seen = window.asgardMoveStates;
  const now = `${move.dataset.state} ${bring.hidden ? 'hidden' : 'shown'}`;
  if (seen[seen.length - 1] !== now) {
    seen.push(now);
  }
}).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
"""


def open_panel(page: Any) -> Any:
    page.locator(".lm-TabBar-tab[data-id='jupyter-asgard-panel']").click()
    panel = page.locator(PANEL)
    expect(panel).to_be_visible()
    return panel


def confirm(page: Any, says: str, button: str) -> None:
    """Answer JupyterLab's dialog, which must say what it does."""
    dialog = page.locator(".jp-Dialog")
    expect(dialog).to_contain_text(says)
    dialog.get_by_role("button", name=button).click()
    expect(dialog).to_have_count(0)


def shut_down_in_panel(page: Any, card: Any) -> None:
    card.get_by_role("button", name="Shut down").click()
    confirm(page, "is cancelled", "Shut Down")
    expect(card).to_have_count(0, timeout=30_000)


def remove_in_panel(page: Any, entry: Any, button: str) -> None:
    entry.get_by_role("button", name=button).click()
    confirm(page, "with everything that was installed in it there", "Remove")


def end_sessions_of(server: JupyterServer, *paths: str) -> None:
    """The notebooks' sessions ended, and their kernels with them (their Slurm jobs cancelled)."""
    for session in server.request("GET", "/api/sessions").body:
        if session["path"] in paths:
            server.request("DELETE", f"/api/sessions/{session['id']}", timeout=60)


def listed(server: JupyterServer, container: str) -> list[dict[str, Any]]:
    return [
        found
        for found in server.request("GET", "/asgard/api/containers").body["containers"]
        if found["name"] == container
    ]


def test_the_side_panel_lists_a_container_a_kernel_made_and_removes_it_once_no_kernel_runs_in_it(
    jupyter_lab: JupyterServer, browser: Any, kernelspecs: KernelSpecs, slurm_cluster: LocalCluster
) -> None:
    container = f"ui-listed-{uuid.uuid4().hex[:8]}"
    spec = kernelspecs.make(
        f"asgard-{container}", container_name=container, gpus=None, salloc_args=["--nodelist=gpu02"]
    )
    path = make_notebook(jupyter_lab, f"{container}.ipynb", spec)
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        open_notebook(page, jupyter_lab, path)
        wait_for_idle_kernel(page)
        panel = open_panel(page)
        entry = panel.locator(f".jp-asgard-ContainersSection .jp-asgard-Container[data-name='{container}']")
        expect(entry.locator(".jp-asgard-Container-name")).to_have_text(container, timeout=30_000)
        expect(entry.locator("dd[data-field='Nodes']")).to_have_text("gpu02")
        expect(entry.locator("dd[data-field='Image']")).to_have_text("nvcr.io_nvidia_pytorch_23.12-py3")
        expect(entry.locator("dd[data-field='Filesystem']")).to_have_text("writable")
        # the kernel's start, in the browser's (this machine's) time: "today 12:42" (a date after midnight)
        clock = datetime.fromisoformat(listed(jupyter_lab, container)[0]["last_use"]).astimezone().strftime("%H:%M")
        expect(entry.locator("dd[data-field='Last use']")).to_have_text(
            re.compile(rf"^(today|\d{{4}}-\d\d-\d\d) {clock}$")
        )
        expect(entry.locator("dd[data-field='Kernels']")).to_have_text(f"{path} on gpu02")
        screenshot(page, "asgard-containers-section")

        # A kernel runs in it: the server refuses, and the panel says so in the server's words.
        remove_in_panel(page, entry, "Remove")
        refusal = jupyter_lab.request("DELETE", f"/asgard/api/containers/{container}?node=gpu02")
        assert refusal.status == 409, refusal.body
        expect(entry.locator(".jp-asgard-Container-error")).to_contain_text(f"Not removed: {refusal.body['message']}")
        expect(entry.locator(".jp-asgard-Container-hint")).to_have_text(f"How to fix: {refusal.body['hint']}")
        assert len(container_storage(slurm_cluster, "gpu02", container)) == 1
        screenshot(page, "asgard-containers-refused")

        shut_down_in_panel(page, panel.locator(".jp-asgard-Kernel", has_text=path))
        expect(entry.locator("dd[data-field='Kernels']")).to_have_text("none", timeout=30_000)
        remove_in_panel(page, entry, "Remove")
        expect(entry).to_have_count(0, timeout=60_000)
        assert container_storage(slurm_cluster, "gpu02", container) == []
        assert listed(jupyter_lab, container) == []
    finally:
        page.close()
        end_sessions_of(jupyter_lab, path)
        jupyter_lab.request("DELETE", f"/asgard/api/containers/{container}", timeout=120)


def hold_gpus_of(node: str) -> str:
    """Another user's job holding every GPU of node, granted before this returns (once a job ending there has
    released its GPU: --nodelist alone would take the other node's too); its id."""
    argv = ["salloc", "--no-shell", "--nodes=1", "--gpus=2", f"--nodelist={node}", "-J", "other-user"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stderr.split()[-1]


def test_a_notebook_away_from_its_container_says_so_and_brings_it_here(
    jupyter_lab: JupyterServer, browser: Any, kernelspecs: KernelSpecs, slurm_cluster: LocalCluster
) -> None:
    """A notebook's kernel made the container on gpu02 and left a file in it; with gpu02's GPUs held by another
    job, another notebook of that container starts on gpu01 in a fresh copy, and says where the container is.
    Bring it here (the save on gpu02 needs no GPU) restarts its kernel on gpu01 with the file."""
    tag = uuid.uuid4().hex[:8]
    container, marker = f"ui-moved-{tag}", f"/opt/asgard-ui-marker-{tag}"
    pinned = kernelspecs.make(f"asgard-ui-pinned-{tag}", container_name=container, salloc_args=["--nodelist=gpu02"])
    home = make_notebook(jupyter_lab, f"home-{tag}.ipynb", pinned)
    away = make_notebook(
        jupyter_lab, f"away-{tag}.ipynb", kernelspecs.make(f"asgard-ui-away-{tag}", container_name=container)
    )
    read_marker = (
        f"import os; print(open({marker!r}).read() if os.path.exists({marker!r}) else 'no marker', "
        "os.environ['SLURMD_NODENAME'])"
    )
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    page.add_init_script(RECORD_MOVE_STATES)
    other = ""
    try:
        open_notebook(page, jupyter_lab, home)
        wait_for_idle_kernel(page)
        run_cell(page, f"open({marker!r}, 'w').write('made on gpu02')\n{read_marker}")
        expect(page.locator(".jp-OutputArea-output").last).to_have_text("made on gpu02 gpu02", timeout=60_000)
        end_sessions_of(jupyter_lab, home)
        other = hold_gpus_of("gpu02")

        open_notebook(page, jupyter_lab, away)
        wait_for_idle_kernel(page)
        row = next(
            row for row in jupyter_lab.request("GET", "/asgard/api/kernels").body["kernels"] if row["path"] == away
        )
        assert row["node"] == "gpu01", row
        assert re.match(
            f"your container {container}, with what you installed, is on gpu02, which is busy", row["container_notice"]
        )
        notice = page.locator(f"{STATUS} .jp-asgard-StatusItem-notice")
        expect(notice).to_have_text("⚠ container on gpu02", timeout=30_000)
        expect(notice).to_have_attribute("title", f"Y{row['container_notice'][1:]}")
        screenshot(page, "asgard-status-container-notice")
        run_cell(page, read_marker)
        expect(page.locator(".jp-OutputArea-output").last).to_have_text("no marker gpu01", timeout=60_000)

        page.locator(STATUS).click()
        card = page.locator(PANEL).locator(".jp-asgard-Kernel", has_text=away)
        expect(card.locator(".jp-asgard-Kernel-notice")).to_have_text(row["container_notice"])
        screenshot(page, "asgard-card-container-notice")
        card.get_by_role("button", name="Bring it here").click()
        confirm(
            page, "restarts on gpu01 in a copy of it: what was installed in it comes along", "Restart and Bring It Here"
        )
        move = card.locator(".jp-asgard-Kernel-move")
        expect(move).to_have_attribute("data-state", re.compile("done|failed"), timeout=MOVE_TIMEOUT)
        expect(move).to_have_attribute("data-state", "done")
        expect(move).to_have_text(f"Brought here: {container} is on gpu01 now, with what was installed in it on gpu02")
        expect(card.locator(".jp-asgard-Kernel-notice")).to_be_hidden()
        expect(card.get_by_role("button", name="Bring it here")).to_be_hidden()
        expect(notice).to_be_hidden()
        screenshot(page, "asgard-card-container-brought")
        states = page.evaluate("window.asgardMoveStates")
        assert [state for state in states if not state.startswith("done")] == ["saving hidden", "restarting hidden"], (
            states
        )

        wait_for_idle_kernel(page)
        run_cell(page, read_marker)
        expect(page.locator(".jp-OutputArea-output").last).to_have_text("made on gpu02 gpu01", timeout=60_000)

        # The container is on both nodes now (gpu01's the newest): removed from each in the panel.
        shut_down_in_panel(page, card)
        entry = page.locator(f"{PANEL} .jp-asgard-Container[data-name='{container}']")
        expect(entry.locator("dd[data-field='Nodes']")).to_have_text("gpu01, gpu02")
        expect(entry.locator("dd[data-field='Kernels']")).to_have_text("none", timeout=30_000)
        remove_in_panel(page, entry, "Remove from gpu01")
        expect(entry.locator("dd[data-field='Nodes']")).to_have_text("gpu02", timeout=60_000)
        assert container_storage(slurm_cluster, "gpu01", container) == []
        assert len(container_storage(slurm_cluster, "gpu02", container)) == 1
        remove_in_panel(page, entry, "Remove")
        expect(entry).to_have_count(0, timeout=60_000)
        assert container_storage(slurm_cluster, "gpu02", container) == []
    finally:
        page.close()
        end_sessions_of(jupyter_lab, home, away)
        if other:
            subprocess.run(["scancel", other], capture_output=True)
        jupyter_lab.request("DELETE", f"/asgard/api/containers/{container}", timeout=120)
