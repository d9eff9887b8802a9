"""Shared fixtures: the real Slurm test cluster every integration test runs on."""

from __future__ import annotations

import inspect
import os
import subprocess
from collections.abc import AsyncIterator, Iterator

import pytest

from jupyter_asgard.monitor import SlurmMonitor
from tests import known_state
from tests.browser import CHROMIUM, launch
from tests.cluster import NODES, ClusterUnavailable, LocalCluster, check_prerequisites
from tests.kernels import TEST_CONTAINER, KernelSpecs, wait_until_no_kernel_jobs
from tests.server import JupyterServer, running_lab, running_server

# Run apart, by tests/test_rest_inprocess.py: pytest-jupyter's event loop would take over this suite's async tests.
collect_ignore = ["rest_inprocess"]


CLUSTER_FIXTURES = {"slurm_cluster", "fresh_cluster_prerequisites"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs a real Slurm test cluster (root, Slurm, Pyxis, enroot)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on the suite's cluster start from its known state and must leave it (known_state.py), and are
    marked `cluster`; async tests run Asgard kernels in the test's own event loop, whose monitor must settle
    before it closes."""
    for item in items:
        fixtures: list[str] = getattr(item, "fixturenames", [])
        if CLUSTER_FIXTURES & set(fixtures) or item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.cluster)
        if "slurm_cluster" in fixtures:
            fixtures.insert(0, "cluster_in_known_state")  # set up first, so it checks after every other teardown
        if inspect.iscoroutinefunction(getattr(item, "function", None)):
            fixtures.append("monitor_settles")


@pytest.fixture
def cluster_in_known_state(slurm_cluster: LocalCluster) -> Iterator[None]:
    """The test starts on a cluster in the known state (restored first if an earlier test broke it) and must
    leave it so: after its own teardown, Slurm must have released everything it held (waited for, not just
    asked for) and every node must be in service with its GPUs; else the cluster is restored and the test
    fails, named as the one that left it. Containers the test made are removed either way."""
    before = known_state.problems(slurm_cluster)
    if before and (still := known_state.restore(slurm_cluster)):
        pytest.fail(f"the test cluster could not be brought back to its known state: {still}")
    yield
    left = known_state.settled(slurm_cluster)
    if left:
        still = known_state.restore(slurm_cluster)
    known_state.remove_stray_containers(slurm_cluster, TEST_CONTAINER)
    if left:
        pytest.fail(f"the test left the cluster so: {left}" + (f"; restoring it failed: {still}" if still else ""))


@pytest.fixture
async def monitor_settles() -> AsyncIterator[None]:
    """Closing the loop cancels the monitor's poll; mid-squeue that can hang the loop (see SlurmMonitor.stop)."""
    yield
    await SlurmMonitor.instance().stop()


def _require_cluster_prerequisites() -> None:
    """Skip on a developer machine that cannot run the cluster; fail on CI, where it must."""
    try:
        check_prerequisites()
    except ClusterUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm test cluster: {error}")
        pytest.skip(f"no Slurm test cluster: {error}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalCluster]:
    """One cluster for the whole session; Slurm's clients find it through SLURM_CONF."""
    _require_cluster_prerequisites()
    cluster = LocalCluster().start()
    saved = {name: os.environ.get(name) for name in cluster.env}
    os.environ.update(cluster.env)
    try:
        yield cluster
    finally:
        cluster.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def fresh_cluster_prerequisites() -> None:
    """For tests that start clusters of their own."""
    _require_cluster_prerequisites()


@pytest.fixture(scope="session")
def kernelspecs(slurm_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KernelSpecs]:
    """A JUPYTER_PATH entry holding Asgard kernelspecs made for the test cluster."""
    jupyter_dir = tmp_path_factory.mktemp("jupyter-path")
    saved = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(jupyter_dir)
    SlurmMonitor.instance().poll_interval = 0.5
    specs = KernelSpecs(jupyter_dir / "kernels", slurm_cluster)
    specs.make("asgard-test")
    try:
        yield specs
    finally:
        if saved is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = saved


@pytest.fixture(scope="session")
def native_kernelspec(kernelspecs: KernelSpecs) -> str:
    """An Asgard kernelspec whose image has ipykernel 7.4, which encrypts with CurveZMQ by itself."""
    return kernelspecs.make("asgard-test-native", image=str(kernelspecs.cluster.ipykernel7_image()))


def take_gpus(time_limit: str = "") -> list[str]:
    """Every GPU of the cluster held by another user's job, one per node (with time_limit: Slurm can tell when
    they end); their job ids."""
    jobs = []
    for node in NODES:
        result = subprocess.run(
            ["salloc", "--no-shell", "--gpus=2", f"--nodelist={node}", "-J", "other-user"]
            + ([f"--time={time_limit}"] if time_limit else []),
            capture_output=True,
            text=True,
            timeout=30,
        )
        jobs.append(result.stderr.split()[-1])
    return jobs


@pytest.fixture
def gpus_taken(slurm_cluster: LocalCluster) -> Iterator[list[str]]:
    """Every GPU of the cluster held by another user's job, so a kernel's allocation waits in the queue
    (reason Resources); yields their job ids, one per node."""
    jobs = take_gpus()
    yield jobs
    subprocess.run(["scancel", *jobs], capture_output=True)


@pytest.fixture
def gpus_taken_for_ten_minutes(slurm_cluster: LocalCluster) -> Iterator[list[str]]:
    """As gpus_taken, by jobs with a 10-minute time limit: Slurm's scheduler can tell when a waiting kernel
    will start."""
    jobs = take_gpus("10")
    yield jobs
    subprocess.run(["scancel", *jobs], capture_output=True)


@pytest.fixture
def no_kernel_jobs_left(slurm_cluster: LocalCluster) -> Iterator[None]:
    """Fails a test that leaves an Asgard job in the queue, and cancels it so the next test starts clean."""
    yield
    left = wait_until_no_kernel_jobs()
    if left:
        subprocess.run(["scancel", *(line.split()[0] for line in left)], capture_output=True)
        pytest.fail(f"jobs left in the queue: {left}")


@pytest.fixture(scope="session")
def jupyter_server(
    kernelspecs: KernelSpecs, slurm_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterServer]:
    """A real `jupyter server` with the jupyter_asgard extension, configured for the test cluster."""
    scratch = slurm_cluster.netscratch
    with running_server(
        tmp_path_factory.mktemp("server"),
        "c.SlurmMonitor.poll_interval = 0.5\n"
        f"c.AsgardSite.image_dirs = [{str(slurm_cluster.images_dir)!r}, '/no/such/image/dir']\n"
        "c.AsgardSite.registry_images = ['docker://nvcr.io#nvidia/pytorch:24.05-py3']\n"
        "c.AsgardSite.resources_cache_seconds = 0.5\n"
        f"c.PyxisProvisioner.saved_images_dir = '{scratch}/$USER/images'\n",
    ) as server:
        yield server


@pytest.fixture(scope="session")
def jupyter_lab(
    kernelspecs: KernelSpecs, slurm_cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[JupyterServer]:
    """A real JupyterLab with the jupyter_asgard extensions, configured for the test cluster.

    The configuration lives in JUPYTER_CONFIG_DIR, where notebook kernels (the container panel) read it too.
    """
    scratch, datasets = slurm_cluster.netscratch, slurm_cluster.datasets
    with running_lab(
        tmp_path_factory.mktemp("lab"),
        "c.SlurmMonitor.poll_interval = 0.5\n"
        f"c.AsgardSite.image_dirs = [{str(slurm_cluster.images_dir)!r}]\n"
        f"c.PyxisProvisioner.mounts = ['{scratch}/$USER:{scratch}/$USER', "
        f"'{datasets}:{datasets}:ro']\n"
        f"c.PyxisProvisioner.saved_images_dir = '{scratch}/$USER/images'\n",
    ) as lab:
        yield lab


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium, headless, driven by Playwright (its own browser download does not work here).

    Module scope: Playwright's sync API keeps an event loop of its own, which would stop pytest-asyncio
    from running the async tests of later modules."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: install Debian's chromium ({CHROMIUM} is missing)")
        pytest.skip(f"no {CHROMIUM}: apt-get install chromium")
    with playwright_api.sync_playwright() as playwright:
        chromium = launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()
