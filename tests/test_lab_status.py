"""The JupyterLab extension in a real JupyterLab (headless Chromium) on the real test cluster: the status bar
item follows a notebook's kernel from the queue to its node, the Asgard side panel lists it and shuts it down,
and warnings come when its allocation runs out."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.browser import PANEL, STATUS, make_notebook, open_notebook, screenshot, wait_for_idle_kernel
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, kernel_jobs, wait_until_no_kernel_jobs
from tests.server import JupyterServer, execute_via_websocket, running_lab

pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")

expect: Any = pytest.importorskip("playwright.sync_api").expect
# Records each text the status bar item shows, in order, in window.asgardStatusTexts (page.add_init_script).
RECORD_STATUS_TEXTS = """
window.asgardStatusTexts = [];
new MutationObserver(() => {
  const item = document.querySelector('.jp-asgard-StatusItem');
  const seen = window.asgardStatusTexts;
  if (item && item.textContent && seen[seen.length - 1] !== item.textContent) {
    seen.push(item.textContent);
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


def shut_down_kernels_of(server: JupyterServer, path: str) -> None:
    """Leave the shared JupyterLab as it was: no kernel of the test's notebook lives on."""
    for row in server.request("GET", "/asgard/api/kernels").body["kernels"]:
        if row["path"] == path:
            server.request("DELETE", f"/asgard/api/kernels/{row['kernel_id']}")
    for session in server.request("GET", "/api/sessions").body:
        if session["path"] == path:
            server.request("DELETE", f"/api/sessions/{session['id']}")


def test_status_bar_follows_a_kernel_from_the_queue_to_its_node_and_the_panel_shuts_it_down(
    jupyter_lab: JupyterServer, browser: Any, gpus_taken_for_ten_minutes: list[str]
) -> None:
    gpus_taken = gpus_taken_for_ten_minutes  # jobs with a time limit: Slurm tells when the kernel will start
    path = make_notebook(jupyter_lab, "asgard-status.ipynb", "asgard-test")
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        open_notebook(page, jupyter_lab, path)
        status = page.locator(STATUS)
        # Pending kernels: the session answers at once, and the item finds the queued kernel by its id.
        expect(status).to_have_text(re.compile(r"queued: waiting for GPUs \(Resources\), next in line"), timeout=60_000)
        # Slurm's estimate: when the other user's jobs reach their limit, some 10 minutes from now
        expected = re.compile(r", expected \d\d:\d\d \(in ~(9|10)m\)$")
        expect(status).to_have_text(expected, timeout=30_000)
        expect(status).to_have_attribute("data-phase", "queued")
        screenshot(page, "asgard-status-bar")

        panel = page.locator(PANEL)
        expect(panel).to_be_hidden()
        status.click()  # opens the side panel
        expect(panel).to_be_visible()
        card = panel.locator(".jp-asgard-Kernel")
        expect(card).to_have_count(1)
        expect(card.locator(".jp-asgard-Kernel-name")).to_have_text(path)
        expect(card.locator(".jp-asgard-Kernel-state")).to_have_text(
            re.compile(r"^queued: waiting for GPUs \(Resources\), next in line, expected \d\d:\d\d \(in ~(9|10)m\)$")
        )
        expect(card.locator("dd[data-field='GPUs']")).to_have_text("1 GPU")  # asked for
        expect(card.locator("dd[data-field='Node']")).to_have_text("—")
        gpu = panel.locator(".jp-asgard-Partition[data-partition='gpu'] .jp-asgard-Partition-gpus")
        expect(gpu).to_have_text("0 of 4 H100 free", timeout=20_000)
        screenshot(page, "asgard-side-panel-queued")

        subprocess.run(["scancel", gpus_taken[1]], check=True)  # gpu02's two GPUs come free
        expect(status).to_have_text(re.compile(r"^running on gpu02, 1 GPU"), timeout=90_000)
        expect(status).to_have_attribute("data-phase", "running")
        wait_for_idle_kernel(page, 60_000)
        expect(card.locator(".jp-asgard-Kernel-state")).to_have_text("running")
        expect(card.locator("dd[data-field='Node']")).to_have_text("gpu02")
        expect(card.locator("dd[data-field='GPUs']")).to_have_text("1 GPU")
        expect(card.locator("dd[data-field='Image']")).to_have_text("nvcr.io_nvidia_pytorch_23.12-py3")
        expect(card.locator("dd[data-field='Time left']")).to_have_text(re.compile(r"^(\d+[dhm]|no limit)"))
        # JupyterLab's own websocket reaches the kernel through CurveZMQ (ipykernel 6 behind the proxy)
        expect(card.locator("dd[data-field='Traffic']")).to_have_text(
            "encrypted (CurveZMQ, through a proxy in the container)"
        )
        expect(gpu).to_have_text("1 of 4 H100 free", timeout=20_000)
        screenshot(page, "asgard-side-panel")

        job_id = jupyter_lab.request("GET", "/asgard/api/kernels").body["kernels"][0]["job_id"]
        assert any(line.startswith(f"{job_id} ") for line in kernel_jobs())
        card.get_by_role("button", name="Shut down").click()
        page.locator(".jp-Dialog").get_by_role("button", name="Shut Down").click()
        expect(card).to_have_count(0, timeout=30_000)
        expect(panel.locator(".jp-asgard-Panel-note").first).to_have_text("No Asgard kernels run on this server.")
        assert wait_until_no_kernel_jobs() == []
        expect(status).to_be_hidden(timeout=10_000)
    finally:
        page.close()
        shut_down_kernels_of(jupyter_lab, path)


def toasts(page: Any, text: str) -> Any:
    return page.locator(".Toastify__toast", has_text=text)


def test_warnings_when_the_allocation_runs_low_and_when_the_job_ends(
    jupyter_lab: JupyterServer, browser: Any, kernelspecs: KernelSpecs
) -> None:
    name = kernelspecs.make("asgard-short", time="9")  # 9 minutes: under the 10 minutes the warning is for
    path = make_notebook(jupyter_lab, "asgard-short.ipynb", name)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        open_notebook(page, jupyter_lab, path)
        expect(page.locator(STATUS)).to_have_text(
            re.compile(r"^running on gpu0[12], 1 GPU, [89]m left$"), timeout=60_000
        )
        wait_for_idle_kernel(page, 60_000)
        low = toasts(page, "left in its Slurm allocation")
        expect(low).to_have_count(1, timeout=20_000)
        expect(low).to_contain_text(re.compile(r"The Asgard kernel of asgard-short\.ipynb: [89]m left"))
        screenshot(page, "asgard-warning-low-time")

        job_id = next(
            row["job_id"]
            for row in jupyter_lab.request("GET", "/asgard/api/kernels").body["kernels"]
            if row["path"] == path
        )
        subprocess.run(["scancel", job_id], check=True)  # the job ends under the kernel
        ended = toasts(page, f"its Slurm job {job_id} ended")
        expect(ended).to_have_count(1, timeout=30_000)
        expect(ended).to_contain_text("Start a new kernel")
        screenshot(page, "asgard-warning-ended")
        page.wait_for_timeout(6_000)  # more polls: each warning came once
        expect(low).to_have_count(1)
        expect(ended).to_have_count(1)
    finally:
        page.close()
        shut_down_kernels_of(jupyter_lab, path)


def encryption_of(server: JupyterServer, path: str) -> str:
    return next(
        row["encryption"] for row in server.request("GET", "/asgard/api/kernels").body["kernels"] if row["path"] == path
    )


def test_a_kernel_in_the_clear_is_notified_once_and_an_encrypted_one_not_at_all(
    jupyter_lab: JupyterServer, browser: Any, kernelspecs: KernelSpecs
) -> None:
    """A hand-written kernelspec without "supported_encryption" runs in the clear under the default "auto":
    JupyterLab says so once per kernel, with how to fix it; not again on later polls, nor after the tab loads
    JupyterLab again; and never for an encrypted kernel."""
    clear_path = make_notebook(jupyter_lab, "asgard-clear.ipynb", kernelspecs.make("asgard-clear", encryption=False))
    curve_path = make_notebook(jupyter_lab, "asgard-curve.ipynb", "asgard-test")
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    clear = toasts(page, "is not encrypted")
    try:
        open_notebook(page, jupyter_lab, clear_path)
        expect(page.locator(STATUS)).to_have_text(re.compile(r"^running on gpu0[12]"), timeout=90_000)
        assert encryption_of(jupyter_lab, clear_path) == "none"
        expect(clear).to_have_count(1, timeout=20_000)
        expect(clear).to_contain_text(
            re.compile(r"The Asgard kernel of asgard-clear\.ipynb is not encrypted: other users on gpu0[12] can")
        )
        page.wait_for_timeout(6_000)  # more polls: the warning came once
        expect(clear).to_have_count(1)
        screenshot(page, "asgard-warning-clear-traffic")
        clear.get_by_role("button", name="How to fix").click()  # JupyterLab closes the toast
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("Kernel traffic not encrypted")
        expect(dialog).to_contain_text('add "supported_encryption": ["curve"] to the "metadata" of the kernelspec')
        expect(dialog).to_contain_text('c.PyxisProvisioner.transport_encryption = "required"')
        screenshot(page, "asgard-warning-clear-traffic-how-to-fix")
        dialog.locator(".jp-mod-accept").click()
        page.wait_for_timeout(6_000)  # dismissed, it does not come back
        expect(clear).to_have_count(0)

        # The same tab opens the other notebook (JupyterLab loads anew): its kernel is encrypted, and the
        # one in the clear, still running, was warned about already.
        open_notebook(page, jupyter_lab, curve_path)
        expect(page.locator(STATUS)).to_have_text(re.compile(r"^running on gpu0[12]"), timeout=90_000)
        assert encryption_of(jupyter_lab, curve_path) == "curve-proxy"
        assert encryption_of(jupyter_lab, clear_path) == "none"
        page.wait_for_timeout(6_000)
        expect(clear).to_have_count(0)
    finally:
        page.close()
        shut_down_kernels_of(jupyter_lab, clear_path)
        shut_down_kernels_of(jupyter_lab, curve_path)


def test_status_bar_shows_nothing_for_other_kernels_and_polling_stops_in_a_hidden_tab(
    jupyter_lab: JupyterServer, browser: Any
) -> None:
    path = make_notebook(jupyter_lab, "local-kernel.ipynb", "python3")
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    polls: list[float] = []
    page.on(
        "request",
        lambda request: (
            polls.append(time.monotonic()) if request.url.split("?")[0].endswith("/asgard/api/kernels") else None
        ),
    )
    try:
        open_notebook(page, jupyter_lab, path)
        wait_for_idle_kernel(page, 60_000)
        page.wait_for_timeout(6_000)  # past a poll of the Asgard API
        expect(page.locator(STATUS)).to_be_hidden()

        # No kernel queues or starts: one poll every 5 seconds.
        start = time.monotonic()
        page.wait_for_timeout(10_500)
        assert 1 <= len([at for at in polls if at >= start]) <= 3, polls

        # The tab goes to the background: no polls at all; back in front: a poll at once.
        page.evaluate("""() => {
            Object.defineProperty(document, 'visibilityState', {value: 'hidden', configurable: true});
            document.dispatchEvent(new Event('visibilitychange'));
        }""")
        hidden = time.monotonic()
        page.wait_for_timeout(11_000)
        assert [at for at in polls if at >= hidden + 0.5] == [], polls
        shown = time.monotonic()
        page.evaluate("""() => {
            Object.defineProperty(document, 'visibilityState', {value: 'visible', configurable: true});
            document.dispatchEvent(new Event('visibilitychange'));
        }""")
        page.wait_for_timeout(1_000)
        assert [at for at in polls if at >= shown], polls
    finally:
        page.close()
        shut_down_kernels_of(jupyter_lab, path)


def test_with_pending_kernels_the_item_finds_the_queued_kernel_by_its_id(
    jupyter_lab: JupyterServer, browser: Any, gpus_taken: list[str]
) -> None:
    """Pending kernels are on by default: the notebook's session (and kernel id) exists while it queues."""
    lab = jupyter_lab
    path = make_notebook(lab, "pending.ipynb", "asgard-test")
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        open_notebook(page, lab, path)
        status = page.locator(STATUS)
        expect(status).to_have_text(re.compile(r"^queued: waiting for GPUs \(Resources\)"), timeout=60_000)
        sessions = lab.request("GET", "/api/sessions").body
        assert [session["kernel"]["execution_state"] for session in sessions] == ["starting"]  # no wait for it
        # JupyterLab's own kernel shutdown works in the queue too: the job is withdrawn at once.
        page.get_by_role("menuitem", name="Kernel").click()
        page.get_by_text(re.compile("^Shut Down Kernel$")).click()
        expect(status).to_be_hidden(timeout=20_000)
        assert wait_until_no_kernel_jobs() == []
        page.wait_for_timeout(4_000)  # a shut-down kernel is no kernel whose job ended under it
        expect(toasts(page, "ended")).to_have_count(0)
    finally:
        page.close()
        shut_down_kernels_of(lab, path)


def test_the_status_bar_shows_the_container_phase_of_a_cold_start(
    jupyter_lab: JupyterServer, browser: Any, kernelspecs: KernelSpecs
) -> None:
    """A new named container: enroot unpacks the image on the node (seconds), and the item says so."""
    name = kernelspecs.make("lab-cold-start", container_name=f"asgard-cold-{uuid.uuid4().hex[:8]}")
    path = make_notebook(jupyter_lab, "cold-start.ipynb", name)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    # Every text the item shows, as the page changes it: the phase lasts a second or two with the test image,
    # shorter than the gaps between the checks of Playwright's expect (which backs off to one a second).
    page.add_init_script(RECORD_STATUS_TEXTS)
    try:
        open_notebook(page, jupyter_lab, path)
        status = page.locator(STATUS)
        expect(status).to_have_text(re.compile(r"^running on gpu0[12], 1 GPU"), timeout=120_000)
        shown = page.evaluate("window.asgardStatusTexts")
        assert [text for text in shown if re.match(r"^starting: creating container filesystem", text)], shown
    finally:
        page.close()
        shut_down_kernels_of(jupyter_lab, path)


def test_a_terminal_in_the_kernels_container_opens_from_the_side_panel_and_closes_with_the_kernel(
    jupyter_lab: JupyterServer, browser: Any, slurm_cluster: LocalCluster
) -> None:
    scratch = f"{slurm_cluster.netscratch}/root"
    marker = f"from-the-kernel-{uuid.uuid4().hex[:8]}"
    path = make_notebook(jupyter_lab, "terminal.ipynb", "asgard-test")
    # xterm.js draws on a canvas: with the screen reader mode its rows are text in the page too
    jupyter_lab.request(
        "PUT", "/lab/api/settings/@jupyterlab/terminal-extension:plugin", {"raw": '{"screenReaderMode": true}'}
    )
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        open_notebook(page, jupyter_lab, path)
        status = page.locator(STATUS)
        expect(status).to_have_text(re.compile(r"^running on gpu0[12]"), timeout=90_000)
        row = next(r for r in jupyter_lab.request("GET", "/asgard/api/kernels").body["kernels"] if r["path"] == path)
        write = f"open({scratch!r} + '/{marker}', 'w').write('x')"
        with ThreadPoolExecutor(1) as pool:  # Playwright's own event loop runs in this thread
            pool.submit(execute_via_websocket, jupyter_lab, row["kernel_id"], write).result(60)
        status.click()  # the side panel
        card = page.locator(f"{PANEL} .jp-asgard-Kernel[data-kernel-id='{row['kernel_id']}']")
        card.locator(".jp-asgard-Kernel-terminal").click()
        terminal = page.locator(".jp-Terminal")
        expect(terminal).to_be_visible(timeout=30_000)
        tab = page.locator(".lm-DockPanel-tabBar .lm-TabBar-tab.lm-mod-current")
        expect(tab).to_have_text(f"{row['node']}: Asgard test (asgard-test) ({row['kernel_id'][:8]})")
        terminal.click()
        page.keyboard.type(f"hostname; pwd; ls {scratch}; echo DONE-$((6*7))\n")
        screen = terminal.locator(".xterm-accessibility-tree")
        expect(screen).to_contain_text("DONE-42", timeout=30_000)
        expect(screen).to_contain_text(row["node"])  # the kernel's node
        expect(screen).to_contain_text(marker)  # the kernel's mounts and what it wrote
        expect(tab).to_have_text(re.compile(f"^{row['node']}: "))  # the shell's own window title does not win
        screenshot(page, "asgard-terminal-in-kernel-container")
        # Saving the environment: a name that makes no file name is refused on the card, saying why
        card.locator(".jp-asgard-Kernel-saveImage").click()
        page.locator(".jp-Dialog input").fill("../elsewhere")
        page.locator(".jp-Dialog").get_by_role("button", name="Save").click()
        expect(card.locator(".jp-asgard-Kernel-save")).to_contain_text("Not saved: the image name '../elsewhere'")
        card.get_by_role("button", name="Shut down").click()
        page.locator(".jp-Dialog").get_by_role("button", name="Shut Down").click()
        expect(terminal).to_have_count(0, timeout=60_000)  # the kernel's allocation ended, and its terminal
        assert wait_until_no_kernel_jobs() == []
    finally:
        page.close()
        shut_down_kernels_of(jupyter_lab, path)


def test_a_failed_start_shows_its_reason_as_jupyterlabs_kernel_error(
    jupyter_lab: JupyterServer, browser: Any, kernelspecs: KernelSpecs
) -> None:
    """With pending kernels the start fails after JupyterLab's session request has answered: the reason still
    reaches the user, in JupyterLab's own "Error Starting Kernel" dialog, and no job is left behind."""
    name = kernelspecs.make("lab-bad-image", image="/enroot/missing.sqsh")
    path = make_notebook(jupyter_lab, "bad-image.ipynb", name)
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        open_notebook(page, jupyter_lab, path)
        dialog = page.locator(".jp-Dialog")
        expect(dialog).to_contain_text("Error Starting Kernel", timeout=60_000)
        expect(dialog).to_contain_text("image /enroot/missing.sqsh does not exist")
        expect(dialog).to_contain_text("How to fix:")
        assert wait_until_no_kernel_jobs() == []
    finally:
        page.close()
        shut_down_kernels_of(jupyter_lab, path)


@pytest.fixture(scope="module")
def jupyter_lab_culling(
    kernelspecs: KernelSpecs, slurm_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterServer]:
    """JupyterLab whose server culls kernels idle for 4 minutes, connected ones too (a notebook tab is open)."""
    with running_lab(
        tmp_path_factory.mktemp("lab-culling"),
        "c.SlurmMonitor.poll_interval = 0.5\n"
        "c.MappingKernelManager.cull_idle_timeout = 240\n"
        "c.MappingKernelManager.cull_interval = 10\n"
        "c.MappingKernelManager.cull_connected = True\n",
    ) as lab:
        yield lab


def test_the_side_panel_counts_down_to_the_culler_and_warns_before_it_ends_the_kernel(
    jupyter_lab_culling: JupyterServer, browser: Any
) -> None:
    lab = jupyter_lab_culling
    path = make_notebook(lab, "asgard-idle.ipynb", "asgard-test")
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    try:
        open_notebook(page, lab, path)
        wait_for_idle_kernel(page, 60_000)
        # 4 minutes of idleness at most: within the 5 minutes before culling that the warning is for
        warning = toasts(page, "the server shuts it down in")
        expect(warning).to_have_count(1, timeout=30_000)
        expect(warning).to_contain_text(re.compile(r"The Asgard kernel of asgard-idle\.ipynb: idle for \d+[sm]"))
        expect(warning).to_contain_text("releases its GPUs. Run a cell to keep it.")
        page.locator(STATUS).click()  # the side panel
        idle = page.locator(PANEL).locator("dd[data-field='Idle']")
        expect(idle).to_have_text(re.compile(r"^\d+[sm], shut down in [34]m(\d+s)? if it stays idle$"), timeout=20_000)
        screenshot(page, "asgard-warning-cull")
    finally:
        page.close()
        shut_down_kernels_of(lab, path)
