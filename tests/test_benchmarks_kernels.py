"""The smallest forms of the benchmarks of kernel starts and messages (tests/benchmark_runs.py)."""

from __future__ import annotations

import pytest

from tests.benchmark_runs import KERNELS, runs_and_prints_its_figures, timed_modules


@pytest.mark.usefixtures("slurm_cluster")  # its prerequisites; each benchmark starts a cluster of its own
@pytest.mark.parametrize("module", timed_modules(KERNELS))
def test_kernel_benchmark_runs_and_prints_its_figures(module: str) -> None:
    runs_and_prints_its_figures(module)
