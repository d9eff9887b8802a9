"""Shared fixtures: the real Slurm test cluster every integration test runs on."""

from __future__ import annotations

import inspect
import os
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from jupyter_asgard.slurm.monitor import SlurmMonitor
from tests import known_state
from tests.browser import CHROMIUM, launch
from tests.cluster import NODES, ClusterUnavailable, LocalCluster, check_prerequisites
from tests.cluster.images import ensure_images
from tests.detaching import GRACE, release_left_kernels
from tests.kernels import TEST_CONTAINER, KernelSpecs, cluster_site, wait_until_no_kernel_jobs
from tests.server import JupyterServer, running_lab, running_server
from tests.unix_users import UnixUser, throwaway_user

# Run apart, by tests/test_rest_inprocess.py: pytest-jupyter's event loop would take over this suite's async tests.
collect_ignore = ["rest_inprocess"]


CLUSTER_FIXTURES = {"slurm_cluster", "fresh_cluster_prerequisites"}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs a real Slurm test cluster (root, Slurm, Pyxis, enroot)")
    # Kernels started in this process keep their state in the Jupyter data directory (where each named container
    # is, which steers placement): one of this process's own, not the user's, which other runs and the other
    # worker (with a cluster of its own, whose nodes have the same names) would share.
    os.environ["JUPYTER_DATA_DIR"] = tempfile.mkdtemp(prefix="asgard-test-data-")


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(os.environ["JUPYTER_DATA_DIR"], ignore_errors=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests on a cluster are marked `cluster`; async tests run Asgard kernels in the test's own event loop,
    whose monitor must settle before it closes."""
    for item in items:
        fixtures: list[str] = getattr(item, "fixturenames", [])
        if CLUSTER_FIXTURES & set(fixtures) or item.get_closest_marker("cluster"):
            item.add_marker(pytest.mark.cluster)
        if inspect.iscoroutinefunction(getattr(item, "function", None)):
            fixtures.append("monitor_settles")


class KnownState:
    """Every test on the session's cluster starts from its known state (known_state.py; restored first if an
    earlier test broke it) and must leave it so: after its teardown, Slurm must have released everything it
    held (waited for, not just asked for) and every node must be in service with its GPUs, else the cluster
    is restored and the test fails, named as the one that left it. Containers a test made are removed.

    A test class's kernel (jupyter_kernel_test's setUpClass, a class-scoped fixture) lives across the class's
    tests: within a class the cluster is checked before its first test and after its last only."""

    cluster: LocalCluster | None = None  # the session's cluster, while it runs
    previous: pytest.Item | None = None

    @staticmethod
    def applies(item: pytest.Item) -> bool:
        return "slurm_cluster" in getattr(item, "fixturenames", [])

    @staticmethod
    def same_class(item: pytest.Item, other: pytest.Item | None) -> bool:
        cls = getattr(item, "cls", None)
        return other is not None and cls is not None and getattr(other, "cls", None) is cls


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    cluster = KnownState.cluster
    if cluster and KnownState.applies(item) and not KnownState.same_class(item, KnownState.previous):
        if known_state.problems(cluster) and (still := known_state.restore(cluster)):
            pytest.fail(f"the test cluster could not be brought back to its known state: {still}")
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    result = yield  # the test's fixtures torn down (and the session's after the last test: nothing to check)
    KnownState.previous = item
    cluster = KnownState.cluster
    if not cluster or not KnownState.applies(item) or KnownState.same_class(item, nextitem):
        return result
    left = known_state.settled(cluster)
    still = known_state.restore(cluster) if left else []
    # A job cancelled while enroot unpacked a named container leaves it half made: after a restore, none stays.
    known_state.remove_containers(cluster, keep=None if left else TEST_CONTAINER)
    if left:
        pytest.fail(f"the test left the cluster so: {left}" + (f"; restoring it failed: {still}" if still else ""))
    return result


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
    KnownState.cluster = cluster
    try:
        yield cluster
    finally:
        KnownState.cluster = None
        cluster.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def fresh_cluster_prerequisites() -> None:
    """For tests that start clusters of their own: the images are built first (minutes, once per machine),
    so that a test's own waits measure what it tests, not the first build or another worker's."""
    _require_cluster_prerequisites()
    ensure_images()


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
def detachable_kernelspec(kernelspecs: KernelSpecs) -> str:
    """An Asgard kernelspec whose kernels outlive the server (with a site that allows it: tests.detaching.SITE)."""
    return kernelspecs.make("asgard-detachable", detachable=True, detach_grace=GRACE)


@pytest.fixture
def detach_home(tmp_path: Path, detachable_kernelspec: str, no_kernel_jobs_left: None) -> Iterator[Path]:
    """A home for the test's servers; the detachable kernels they leave are released afterwards (a stopped
    server leaves them running, which is the point)."""
    home = tmp_path / "home"
    yield home
    release_left_kernels(home / "data")


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
    with running_server(tmp_path_factory.mktemp("server"), cluster_site(slurm_cluster)) as server:
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


@pytest.fixture
def another_user(fresh_cluster_prerequisites: None) -> Iterator[UnixUser]:
    """The other researcher on the cluster: a second Unix user, who can write to shared directories, see every
    process on the login node, and run code on a compute node (`another_user.run(..., netns=node namespace)`)."""
    with throwaway_user("asgother") as user:
        yield user
