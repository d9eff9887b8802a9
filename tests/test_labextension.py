"""The JupyterLab extension's TypeScript (labextension/): lint, type check and unit tests pass, and the
extension the package installs is enabled in JupyterLab."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

LABEXTENSION = Path(__file__).resolve().parent.parent / "labextension"


def run(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=LABEXTENSION, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"})


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The locked node dependencies (`pip install -e .` installs them; else npm ci does, from the lock)."""
    if shutil.which("npm") is None:
        if os.environ.get("CI"):
            pytest.fail("CI must check the labextension: Node.js and npm are missing")
        pytest.skip("no npm: install Node.js to check the labextension")
    modules = LABEXTENSION / "node_modules"
    if not (modules / ".bin" / "tsc").exists():
        installed = run(["npm", "ci", "--no-audit", "--no-fund"], timeout=600)
        assert installed.returncode == 0, f"npm ci failed:\n{installed.stdout}\n{installed.stderr}"
    return modules


@pytest.mark.parametrize("script", ["lint", "typecheck", "test"])
def test_npm_script_passes(node_modules: Path, script: str) -> None:
    result = run(["npm", "run", script])
    assert result.returncode == 0, f"npm run {script} failed:\n{result.stdout}\n{result.stderr}"


def test_the_lock_pins_every_dependency(node_modules: Path) -> None:
    """package-lock.json agrees with package.json, so `npm ci` installs exactly what was tested."""
    result = run(["npm", "ls", "--all", "--package-lock-only"])
    assert result.returncode == 0, f"package-lock.json does not match package.json:\n{result.stdout}\n{result.stderr}"


def test_jupyterlab_has_the_extension_enabled() -> None:
    result = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True,
                            text=True, timeout=120)
    listing = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert re.search(r"jupyter-asgard v\S+ enabled OK \(python, jupyter-asgard\)", listing), listing
