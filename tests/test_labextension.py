"""The JupyterLab extension's TypeScript (labextension/): lint, type check and unit tests pass, and the
extension the package installs is enabled in JupyterLab."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

LABEXTENSION = Path(__file__).resolve().parent.parent / "labextension"


def run(argv: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        argv,
        cwd=LABEXTENSION,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"},
    )


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
    result = subprocess.run(
        [sys.executable, "-m", "jupyter", "labextension", "list"], capture_output=True, text=True, timeout=120
    )
    listing = re.sub(r"\x1b\[[0-9;]*m", "", result.stdout + result.stderr)
    assert re.search(r"jupyter-asgard v\S+ enabled OK \(python, jupyter-asgard\)", listing), listing


TS_TYPES = {
    "string": "string",
    "number": "integer",
    "boolean": "boolean",
    "null": "null",
    "IGpus": "object",
    "IContainerMove": "object",
}


def typescript_fields(name: str) -> dict[str, str]:
    """The fields of a TypeScript interface in api.ts, with their types as written."""
    source = (LABEXTENSION / "src" / "api.ts").read_text()
    body = re.search(rf"export interface {name} \{{(.*?)\n\}}", source, re.DOTALL)
    assert body, f"no interface {name} in api.ts"
    return dict(re.findall(r"^\s+(\w+): ([^;]+);", body.group(1), re.MULTILINE))


def typescript_interface(name: str) -> dict[str, list[str]]:
    """The fields of a TypeScript interface in api.ts, with their types as JSON schema type names."""
    return {
        field: sorted(TS_TYPES[kind.strip()] for kind in kinds.split("|"))
        for field, kinds in typescript_fields(name).items()
    }


def test_the_typescript_kernel_row_is_the_rows_schema() -> None:
    """The row is defined once (jupyter_asgard/kernel/kernel_row.py); the front end's IKernelRow is held to its
    schema."""
    from jupyter_asgard.kernel.kernel_row import row_schema

    schema = {
        name: sorted([spec["type"]] if isinstance(spec["type"], str) else spec["type"])
        for name, spec in row_schema()["properties"].items()
    }
    assert typescript_interface("IKernelRow") == schema


def test_the_typescript_image_import_is_the_imports_json() -> None:
    """An import's JSON is made once (ImageImport.to_json); the front end's IImageImport names its fields, and
    its states, and reads only fields of its progress that the progress has."""
    from jupyter_asgard.containers.image_imports import ImageImport

    found = ImageImport("a1b2", "docker://nvcr.io#nvidia/pytorch:24.05-py3", "pytorch", "/images/pytorch.sqsh")
    answer = found.to_json()
    fields = typescript_fields("IImageImport")
    assert set(fields) == set(answer)
    assert set(re.findall(r"'(\w+)'", fields["state"])) == {"queued", "importing", "imported", "failed", "cancelled"}
    assert set(typescript_fields("IImportProgress")) <= set(answer["progress"])


def test_the_front_ends_words_for_ended_jobs_are_the_servers() -> None:
    from jupyter_asgard.kernel.kernel_row import ENDED

    source = (LABEXTENSION / "src" / "format.ts").read_text()
    table = re.search(r"const ENDED_WORDS: \{ \[state: string\]: string \} = \{(.*?)\};", source, re.DOTALL)
    assert table
    assert dict(re.findall(r"(\w+): '([^']*)'", table.group(1))) == {
        state: short for state, (short, _) in ENDED.items()
    }


def test_the_front_ends_words_for_an_unknown_start_are_the_servers() -> None:
    from jupyter_asgard.kernel.kernel_row import UNKNOWN_START

    source = (LABEXTENSION / "src" / "format.ts").read_text()
    assert f"export const UNKNOWN_START = '{UNKNOWN_START}';" in source


def typescript_constant(module: str, name: str) -> str:
    """The value of a string constant in labextension/src/<module>.ts."""
    source = (LABEXTENSION / "src" / f"{module}.ts").read_text()
    match = re.search(rf"export const {name} = '([^']*)';", source)
    assert match, f"no string constant {name} in {module}.ts"
    return match.group(1)


def test_the_clear_traffic_warning_names_the_servers_own_fixes() -> None:
    """The notification about a kernel in the clear names the kernelspec metadata that makes the server
    encrypt it, and the site setting that makes the server refuse such kernels: both as the server reads them."""
    from traitlets.config import Config

    from jupyter_asgard.launch.encryption import declares_curve, encryption_problem
    from jupyter_asgard.site.site_policy import SitePolicy

    spec = SimpleNamespace(metadata=json.loads("{" + typescript_constant("alerts", "CURVE_METADATA") + "}"))
    assert declares_curve(spec)
    site: dict[str, Any] = {"c": Config()}
    exec(typescript_constant("alerts", "REQUIRE_ENCRYPTION"), site)  # as Jupyter reads a config file
    policy = SitePolicy(config=site["c"]).transport_encryption
    assert policy == "required"
    assert encryption_problem(policy, SimpleNamespace(metadata={}), "hand-written")
