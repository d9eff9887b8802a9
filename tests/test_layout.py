"""The package's layout shows its architecture: subpackages whose imports point one way (README, "How the code
is laid out"). A module may import its own subpackage and those its subpackage stands on, nothing above."""

from __future__ import annotations

import ast
from pathlib import Path

import jupyter_asgard

PACKAGE = Path(jupyter_asgard.__file__).parent
ROOT = PACKAGE.name
# Each subpackage and what it may import besides itself; errors.py is the root's one module, under all.
STANDS_ON: dict[str, set[str]] = {
    "errors": set(),
    "node": set(),
    "launch": {"errors"},
    "slurm": {"errors", "launch"},
    "containers": {"errors", "launch", "slurm", "node"},
    "site": {"errors", "launch", "slurm", "containers"},
    "kernel": {"errors", "launch", "slurm", "containers", "site", "node"},
    "server": {"errors", "launch", "slurm", "containers", "site", "kernel", "node"},
    "widgets": {"errors", "launch", "slurm", "containers", "site", "kernel"},
    "cli": {"errors", "launch", "slurm", "containers", "site", "kernel"},
}


def part_of(path: Path) -> str:
    """The subpackage of a module (errors for errors.py, "" for the root's __init__)."""
    relative = path.relative_to(PACKAGE)
    if len(relative.parts) > 1:
        return relative.parts[0]
    return "" if relative.name == "__init__.py" else relative.stem


def imported_parts(path: Path) -> set[str]:
    """The subpackages (or errors) a module imports from, relative imports resolved."""
    package = [ROOT, *path.relative_to(PACKAGE).parent.parts]
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - node.level + 1]
            target = [*base, *(node.module or "").split(".")] if node.module else base
            names = [target] if node.module else [[*target, alias.name] for alias in node.names]
            parts |= {name[1] for name in names if len(name) > 1}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(f"{ROOT}."):
            parts.add(node.module.split(".")[1])  # type: ignore[union-attr]
    return parts


def test_every_module_is_in_a_subpackage_the_layout_names() -> None:
    modules = [path for path in PACKAGE.rglob("*.py") if "labextension" not in path.parts]
    assert {part_of(path) for path in modules} - {""} == set(STANDS_ON)


def test_imports_point_one_way() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        part = part_of(path)
        if not part or "labextension" in path.parts:
            continue
        for imported in imported_parts(path) - {part} - STANDS_ON[part]:
            wrong.append(f"{path.relative_to(PACKAGE)} imports {imported}")
    assert wrong == []
