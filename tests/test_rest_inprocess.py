"""The in-process REST tests (tests/rest_inprocess, pytest-jupyter's jp_fetch): a pytest run of their own.

pytest-jupyter runs coroutine tests on an event loop of its own, which would take over every async test of
this suite (pytest-asyncio's); so they run apart, in a few seconds, without a cluster."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_the_rest_handlers_answer_and_refuse_in_process() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:asyncio",
            "--noconftest",
            "tests/rest_inprocess",
        ],
        cwd=REPO,
        # No cluster and no test kernelspecs: the suite's own SLURM_CONF and JUPYTER_PATH stay out.
        env={name: value for name, value in os.environ.items() if name not in ("SLURM_CONF", "JUPYTER_PATH")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed[1]) >= 8, done.stdout[-2000:]
