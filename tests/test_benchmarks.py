"""The smallest forms of the benchmarks of images and of the server's load (tests/benchmark_runs.py)."""

from __future__ import annotations

import pytest

from tests.benchmark_runs import IMAGES_AND_LOAD, KERNELS, REPO, SMALLEST, runs_and_prints_its_figures, timed_modules

BENCHMARKS = REPO / "benchmarks"
NOT_BENCHMARKS = {"__init__", "on_cluster"}  # what the benchmarks share


@pytest.mark.usefixtures("slurm_cluster")  # its prerequisites; each benchmark starts a cluster of its own
@pytest.mark.parametrize("module", timed_modules(IMAGES_AND_LOAD))
def test_benchmark_runs_and_prints_its_figures(module: str) -> None:
    runs_and_prints_its_figures(module)


def test_every_benchmark_runs_in_one_of_the_two_modules() -> None:
    assert sorted(IMAGES_AND_LOAD + KERNELS) == sorted(SMALLEST)
    assert sorted(SMALLEST) == sorted(
        f"benchmarks.{path.stem}" for path in BENCHMARKS.glob("*.py") if path.stem not in NOT_BENCHMARKS
    )
