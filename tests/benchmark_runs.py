"""The README's benchmark commands, each in its smallest form, and the figures each must print.

The figures themselves are measured by hand on a quiet machine (README, Benchmarks); the suite runs each
benchmark once end to end on a cluster of its own (tests/test_benchmarks*.py, two modules so that the suite's two
workers share them), so a benchmark that no longer runs, or a kernel start that fails under a small storm, is
found.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

SMALLEST = {
    "benchmarks.container_placement": (
        ["--rounds", "1"],
        [
            r"^ +bare warm +[\d.]+ +gpu02 warm +pinned",  # the benchmark checks each start's node and temperature
            r"^ +with placement +[\d.]+ +gpu02 warm +no node named",
            r"^ +without placement +[\d.]+ +gpu01 cold +no node named",
            r"^ +with placement / bare warm +[\d.]+x \((meets|misses) the 1\.15x target\)$",
            r"^ +without placement / bare warm +[\d.]+x$",
        ],
    ),
    "benchmarks.kernel_start": (
        ["--rounds", "1"],
        [rf"^ +{phase} +bare +[\d.]+ +asgard +[\d.]+ +ratio +[\d.]+x" for phase in ("cold", "warm", "restart")],
    ),
    "benchmarks.kernel_messages": (
        ["--executes", "20", "--print-mib", "1", "--prints", "1", "--starts", "1"],
        [
            rf"^ +{title} +{mode} +[\d.]+ ms / [\d.]+ ms +[\d.]+ +[\d.]+$"
            for title, mode in (
                ("local ipykernel \\(reference\\)", "none"),
                ("Asgard, unencrypted", "none"),  # the benchmark checks each kernel's encryption at every start
                ("Asgard, unencrypted, 7.4", "none"),
                ("Asgard, native Curve", "curve"),
                ("Asgard, Curve via proxy", "curve-proxy"),
            )
        ]
        + [
            rf"^ +Asgard, {kind} +vs Asgard, unencrypted{same} +round trip [\d.]+x \((meets|misses)"
            for kind, same in (("native Curve", ", 7.4"), ("Curve via proxy", ""))
        ],
    ),
    "benchmarks.readoption": (
        ["--counts", "1", "--rounds", "1"],
        [
            r"^ +0 +[\d.]+ s +[\d.]+ s +baseline$",
            r"^ +1 +[\d.]+ s +[\d.]+ s +[\d.]+x +[+-][\d.]+ s +[+-][\d.]+ s +[\d.]+ s$",
            r"^target: 8 kernels usable within [\d.]+ s .*: not measured",
        ],
    ),
    "benchmarks.registry_start": (
        ["--rounds", "1"],
        [
            *(rf"^ +{case} +[\d.]+ +\S" for case in ("squashfs", "pyxis pull", "asgard first", "asgard second")),
            r"^ +asgard second / squashfs +[\d.]+x \((meets|misses) the 1\.1x target\)$",
            r"^ +asgard first / pyxis pull +[\d.]+x$",
            r"^ +pyxis pull / asgard second +[\d.]+x$",
        ],
    ),
    "benchmarks.slurm_load": (["--counts", "1", "2", "--window", "2"], [r"^ +1 +[\d.]+ +[\d.]+", r"^ +2 +[\d.]+"]),
    "benchmarks.start_storm": (
        ["--counts", "1", "2", "--rounds", "1", "--memory-kernels", "2"],
        [
            r"ratio Asgard/local: [\d.]+x",
            r"kernel starts that failed \(their storm was run again, their REST start tried "
            r"again\): 0$",
        ],
    ),
}


# The two modules' shares, about three minutes each on an idle 2-core machine.
IMAGES_AND_LOAD = ["benchmarks.readoption", "benchmarks.registry_start", "benchmarks.slurm_load"]
KERNELS = [
    "benchmarks.container_placement",
    "benchmarks.kernel_messages",
    "benchmarks.kernel_start",
    "benchmarks.start_storm",
]

# Seconds a smallest form may take, where 240 is too few: the registry benchmark imports the image twice (Pyxis's
# pull, Asgard's first start), which with its cluster took 100 s on an idle 2-core machine, and a loaded machine
# (the suite's other worker) can double that.
TIMEOUTS = {"benchmarks.registry_start": 480}


def timed_modules(modules: list[str]) -> list[Any]:
    """The modules, each with pytest's own timeout a minute over its run's (pyproject.toml's 300 s for 240)."""
    return [pytest.param(module, marks=pytest.mark.timeout(TIMEOUTS.get(module, 240) + 60)) for module in modules]


def runs_and_prints_its_figures(module: str) -> None:
    """The benchmark in its smallest form exits 0 and prints each of its figures; the README names it."""
    args, figures = SMALLEST[module]
    timeout = TIMEOUTS.get(module, 240)
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for figure in figures:
        assert re.search(figure, done.stdout, re.MULTILINE), f"{figure!r} not in:\n{done.stdout}"
    assert f"python3 -m {module}" in (REPO / "README.md").read_text()
