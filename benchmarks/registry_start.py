"""A docker:// kernel's first and second start, with its image imported once, against Pyxis's own pull of the
same image and against a start from the image's squashfs file (issue 23).

Runs on the local Slurm test cluster (needs root), with real Pyxis and
enroot and the cluster's real registry (docker-registry with token
authentication, as nvcr.io), on one node (gpu01).  Four cases, each an
Asgard kernel of the same image (the test cluster's PyTorch image) in a new
named container, so enroot unpacks the image every time (a cold start):

- squashfs: from the image's squashfs file, the baseline;
- pyxis pull: from the registry URI with the site's
  c.PyxisProvisioner.import_registry_images = False, so that Pyxis imports
  the image at the new container (pull, convert to squashfs, unpack);
- asgard first: from the registry URI with an empty image_cache_dir: the
  tag's digest looked up (a step of the kernel's allocation), the image
  imported into the cache (another step), the kernel started from the file;
- asgard second: the same, with the cache the first start filled: the digest
  looked up, the kernel started from the cached file.

The node's enroot layer cache is emptied before each pyxis pull and asgard
first, so that both download every layer whichever ran before.  Each
figure runs from the request until the kernel answers a kernel_info
request (kernel_start.py's AsgardRunner and timing).  The cases take turns,
asgard first and second (in this order), pyxis pull, squashfs, and in every
other round the other way round, so machine noise hits all alike; the
figures that matter are the ratios of the medians.  Target: the second start costs at most 1.1x a
start from the squashfs file.

    sudo python3 -m benchmarks.registry_start [--rounds 3]
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from jupyter_client.manager import AsyncKernelManager
from traitlets.config import Config

from benchmarks.kernel_start import NODE, AsgardRunner, cold, main_with_rounds, remove_container
from jupyter_asgard.containers.image_import_progress import cache_file_name
from jupyter_asgard.slurm.monitor import SlurmMonitor
from tests.cluster import LocalCluster
from tests.cluster.registry import REFERENCES
from tests.kernels import KernelSpecs

SQUASHFS, PULL, FIRST, SECOND = "squashfs", "pyxis pull", "asgard first", "asgard second"
CASES = (SQUASHFS, PULL, FIRST, SECOND)
TARGET = 1.1  # the second start against a start from the squashfs file
START_TIMEOUT = 900.0  # seconds: the site's start_timeout, which a pull by Pyxis must fit in on a loaded machine


class SiteRunner(AsgardRunner):
    """An AsgardRunner that checks, at each start, that the site's settings reached the kernel's provisioner:
    they travel through the kernel manager's config, which a setting the provisioner did not take would
    silently leave at its default (and the cases would measure something else)."""

    async def start(self, container: str) -> AsyncKernelManager:
        km = await super().start(container)
        assert self.site is not None
        for name, value in self.site.PyxisProvisioner.items():
            if getattr(km.provisioner, name) != value:
                await self.stop(km)
                raise RuntimeError(
                    f"the kernel's provisioner has {name} {getattr(km.provisioner, name)!r}, not {value!r}"
                )
        return km


def site(**settings: Any) -> Config:
    """The site's c.PyxisProvisioner settings, the same START_TIMEOUT for every case."""
    return Config({"PyxisProvisioner": {"start_timeout": START_TIMEOUT, **settings}})


def forget_layers(cluster: LocalCluster) -> None:
    """Empty the node's enroot cache of downloaded layers (every user's): the next import downloads them all."""
    for user in (cluster.node_storage(NODE) / "cache").glob("user-*"):
        for entry in user.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def page_in(path: Path) -> None:
    """Read the whole file, so that it is in the page cache."""
    with open(path, "rb") as image:
        while image.read(1 << 20):
            pass


def registry_credentials(cluster: LocalCluster, workspace: Path) -> Path:
    """The registry's credentials in an enroot config directory of the benchmark's own, for every enroot the
    kernels run: ENROOT_CONFIG_PATH reaches Asgard's digest and import steps, which run with this process's
    environment. A kernel's own step gets no ENROOT_* variable (kernel_env.py), so the enroot that Pyxis runs
    there finds the directory as $XDG_CONFIG_HOME/enroot, enroot's default, as it finds a user's own."""
    config_home = Path(tempfile.mkdtemp(prefix="config-", dir=workspace))
    cluster.write_enroot_credentials(config_home / "enroot")
    os.environ["ENROOT_CONFIG_PATH"] = str(config_home / "enroot")
    os.environ["XDG_CONFIG_HOME"] = str(config_home)
    return config_home


class Benchmark:
    """The cases' runners and seconds; each round's asgard first starts with a cache directory of its own."""

    def __init__(self, cluster: LocalCluster, specs: KernelSpecs, workspace: Path) -> None:
        self.cluster, self.specs, self.workspace = cluster, specs, workspace
        self.registry_image = cluster.pytorch_registry_image()
        digest = cluster.registry_digest(REFERENCES["python-ipykernel"])
        self.cached_name = cache_file_name(digest)
        self.squashfs = SiteRunner(specs, str(workspace), SQUASHFS, site=site())
        self.pull = SiteRunner(specs, str(workspace), PULL, self.registry_image, site(import_registry_images=False))
        self.seconds: dict[str, list[float]] = {case: [] for case in CASES}

    async def case(self, runner: AsgardRunner, container: str) -> float:
        """Seconds of one cold start of the runner's kernel; its container removed from the node afterwards."""
        try:
            return await cold(runner, container)
        finally:
            remove_container(self.cluster, container)

    async def round(self, index: int) -> None:
        cache = Path(tempfile.mkdtemp(prefix="image-cache-", dir=self.workspace))
        imported = SiteRunner(
            self.specs,
            str(self.workspace),
            "asgard",
            self.registry_image,
            site(import_registry_images=True, image_cache_dir=str(cache)),
        )

        async def squashfs() -> None:
            self.seconds[SQUASHFS].append(await self.case(self.squashfs, f"bench-squashfs-{index}"))

        async def pull() -> None:
            await asyncio.to_thread(forget_layers, self.cluster)
            self.seconds[PULL].append(await self.case(self.pull, f"bench-pull-{index}"))

        async def first_and_second() -> None:
            await asyncio.to_thread(forget_layers, self.cluster)
            self.seconds[FIRST].append(await self.case(imported, f"bench-first-{index}"))
            cached = self.cached(cache)
            self.seconds[SECOND].append(await self.case(imported, f"bench-second-{index}"))
            if self.cached(cache) != cached:
                raise RuntimeError(f"the second start imported the image again into {cache}")

        turns: list[Callable[[], Awaitable[None]]] = [first_and_second, pull, squashfs]
        try:
            for turn in turns if index % 2 == 0 else turns[::-1]:
                await turn()
        finally:
            shutil.rmtree(cache, ignore_errors=True)

    def cached(self, cache: Path) -> tuple[int, int]:
        """The cached image's inode and modification time; an error unless the cache holds it (and its manifest)
        alone, under the digest the registry has for the tag: the first start imported it there."""
        names = sorted(path.name for path in cache.iterdir())
        if names != [self.cached_name, f"{self.cached_name}.json"]:
            raise RuntimeError(f"the cache {cache} holds {names}, not the image {self.cached_name} and its manifest")
        info = (cache / self.cached_name).stat()
        return info.st_ino, info.st_mtime_ns

    async def run(self, rounds: int) -> dict[str, list[float]]:
        """Seconds by case. No untimed start first, which would add a cold start to the suite's run: the first
        round begins with the asgard first start, whose import outweighs what the process's and the cluster's
        first kernel start cost besides; the squashfs file is read into the page cache beforehand, as the
        cached file is when the first start has written it."""
        await asyncio.to_thread(page_in, self.cluster.pytorch_image())
        for index in range(rounds):
            await self.round(index)
        return self.seconds


async def run(cluster: LocalCluster, specs: KernelSpecs, rounds: int) -> dict[str, list[float]]:
    workspace = cluster.root / "workspace"
    config_home = registry_credentials(cluster, workspace)
    try:
        return await Benchmark(cluster, specs, workspace).run(rounds)
    finally:
        await SlurmMonitor.instance().stop()  # before the loop closes, which would cancel a squeue in flight
        shutil.rmtree(config_home)


def report(seconds: dict[str, list[float]], rounds: int) -> None:
    medians = {case: statistics.median(seconds[case]) for case in CASES}
    print(f"median of {rounds} rounds on {NODE}, seconds from request to ready kernel, each in a new container")
    for case, what in (
        (SQUASHFS, "from the squashfs file (baseline)"),
        (PULL, "docker:// URI, Pyxis imports the image"),
        (FIRST, "docker:// URI, empty cache: digest, import, start"),
        (SECOND, "docker:// URI, cached: digest, start from the cached file"),
    ):
        print(f"  {case:<14} {medians[case]:8.3f}  {what}")
    second = medians[SECOND] / medians[SQUASHFS]
    verdict = "meets" if second <= TARGET else "misses"
    print(f"  {SECOND} / {SQUASHFS:<11} {second:5.2f}x ({verdict} the {TARGET}x target)")
    print(f"  {FIRST} / {PULL:<12} {medians[FIRST] / medians[PULL]:5.2f}x")
    print(f"  {PULL} / {SECOND:<10} {medians[PULL] / medians[SECOND]:5.2f}x")


def main() -> int:
    return main_with_rounds(__doc__, 3, run, report)


if __name__ == "__main__":
    sys.exit(main())
