"""One hierarchy for every error a user can cause, in one module, turned into JSON in one place."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from jupyter_asgard import errors
from jupyter_asgard.errors import AsgardError, ImageRefused, KernelStartError, LaunchConfigError, SlurmError

PACKAGE = Path(errors.__file__).parent


def exception_classes_outside_errors() -> list[str]:
    """Classes deriving from an exception type by a name that says so, anywhere in the package but errors.py."""
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = [ast.unparse(base) for base in node.bases]
                if any(base.endswith(("Error", "Exception", "Refused")) for base in bases):
                    found.append(f"{path.relative_to(PACKAGE)}: {node.name}({', '.join(bases)})")
    return found


def test_every_error_class_lives_in_errors_py() -> None:
    assert exception_classes_outside_errors() == []


def test_every_error_of_the_module_is_an_asgard_error_with_a_status() -> None:
    classes = [cls for _, cls in inspect.getmembers(errors, inspect.isclass) if cls.__module__ == errors.__name__]
    assert {cls.__name__ for cls in classes if not issubclass(cls, AsgardError)} == set()
    assert all(400 <= cls.status < 600 for cls in classes)


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (
            LaunchConfigError(["gpus: must be 1 to 8", "image: required"]),
            400,
            {
                "message": "gpus: must be 1 to 8; image: required",
                "problems": ["gpus: must be 1 to 8", "image: required"],
            },
        ),
        (ImageRefused(409, "an image exists"), 409, {"message": "an image exists", "problems": ["an image exists"]}),
        (
            SlurmError("slurm_load_partitions: Unable to contact slurm controller"),
            503,
            {
                "message": "slurm_load_partitions: Unable to contact slurm controller",
                "problems": ["slurm_load_partitions: Unable to contact slurm controller"],
            },
        ),
        (
            KernelStartError("no GPU", "ask for fewer"),
            500,
            {
                "message": "no GPU",
                "problems": ["no GPU"],
                "hint": "ask for fewer",
            },
        ),
    ],
    ids=["problems", "status", "slurm", "hint"],
)
def test_an_error_says_its_status_and_its_json(error: AsgardError, status: int, body: dict[str, object]) -> None:
    assert (error.status, error.to_json()) == (status, body)


def test_a_kernel_start_error_is_still_what_jupyter_server_shows() -> None:
    """jupyter_server shows an HTTPError's message in JupyterLab's kernel error dialog, and nothing else's."""
    from tornado.web import HTTPError

    error = KernelStartError("no GPU", "ask for fewer")
    assert isinstance(error, HTTPError)
    assert (error.status_code, error.log_message) == (500, "Asgard kernel: no GPU.\nHow to fix: ask for fewer")
