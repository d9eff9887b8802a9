"""Real squashfs images for the test cluster, built once per machine and cached by a hash of the recipe.

Two Debian 12 (bookworm) root filesystems made with debootstrap, as enroot
would import them: one with ``python3-ipykernel`` (what a Jupyter-ready image
like NGC PyTorch has) and one with Python but no ipykernel.  Each image's
``/etc/environment`` is its ``ENV``, as enroot writes a Docker image's, with a
variable the tests check.  Building needs root (debootstrap and chroot) and
Debian's package mirror; everything after that only reads the cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

CACHE = Path(os.environ.get("ASGARD_IMAGE_CACHE", "/var/cache/jupyter-asgard/images"))
SUITE = "bookworm"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_VARIABLE = "TEST_IMAGE"  # set by each image's ENV; a kernelspec env of the same name must win
# name: (extra Debian packages, ENV)
RECIPES: dict[str, tuple[list[str], dict[str, str]]] = {
    "python-ipykernel": (
        ["python3-ipykernel"],
        {"PATH": SYSTEM_PATH, "PYTHONUNBUFFERED": "1", IMAGE_VARIABLE: "python-ipykernel"},
    ),
    "python": ([], {"PATH": SYSTEM_PATH, IMAGE_VARIABLE: "python"}),
}
BASE_PACKAGES = ["python3"]
# Besides documentation and caches, /dev's device nodes: a Docker image has none (the container gets the
# host's /dev), and an unprivileged enroot cannot unpack them.
TRIMMED = (
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "var/lib/apt/lists",
    "var/cache/apt",
    "var/cache/debconf",
    "var/log",
    "dev",
)
SQUASHFS_OPTIONS = ["-comp", "zstd", "-noappend", "-quiet"]
# What the recipe is: a change to any of it builds the images anew.
RECIPE_HASH = hashlib.sha256(
    json.dumps([SUITE, BASE_PACKAGES, RECIPES, TRIMMED, SQUASHFS_OPTIONS], sort_keys=True).encode()
).hexdigest()[:12]


class ImageBuildError(RuntimeError):
    """The images could not be built; the message says what is missing."""


def image_path(name: str) -> Path:
    return CACHE / RECIPE_HASH / f"{name}.sqsh"


def ensure_images() -> dict[str, Path]:
    """The cached images by name, built first where missing (one build at a time per machine)."""
    paths = {name: image_path(name) for name in RECIPES}
    if all(path.exists() for path in paths.values()):
        return paths
    if os.geteuid() != 0:
        raise ImageBuildError(
            f"the test images are not built yet ({CACHE / RECIPE_HASH}): run `./dev/install` "
            "as root once (debootstrap needs root)"
        )
    missing = [tool for tool in ("debootstrap", "mksquashfs", "chroot") if shutil.which(tool) is None]
    if missing:
        raise ImageBuildError(
            f"missing {', '.join(missing)}: run ./dev/install (apt-get install debootstrap squashfs-tools)"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "build.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not all(path.exists() for path in paths.values()):
            _build_all(paths)
            _remove_other_recipes()
    return paths


def _remove_other_recipes() -> None:
    """Images of an older recipe are never used again: each costs 120 MB of disk."""
    for entry in CACHE.iterdir():
        if entry.is_dir() and entry.name != RECIPE_HASH and re.fullmatch(r"[0-9a-f]{12}", entry.name):
            shutil.rmtree(entry, ignore_errors=True)


def _build_all(paths: dict[str, Path]) -> None:
    out = CACHE / RECIPE_HASH
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="asgard-images-", dir=CACHE) as work:
        base = Path(work) / "base"
        _run("debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", SUITE, str(base), *_mirror())
        for name, (packages, environment) in RECIPES.items():
            root = Path(work) / name
            _run("cp", "-a", str(base), str(root))
            if packages:
                _run(
                    "chroot",
                    str(root),
                    "apt-get",
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    *packages,
                    env={"DEBIAN_FRONTEND": "noninteractive", "PATH": SYSTEM_PATH},
                )
            (root / "etc" / "environment").write_text("".join(f"{k}={v}\n" for k, v in environment.items()))
            for trimmed in TRIMMED:
                shutil.rmtree(root / trimmed, ignore_errors=True)
                (root / trimmed).mkdir()
            partial = paths[name].with_suffix(".partial")
            _run("mksquashfs", str(root), str(partial), *SQUASHFS_OPTIONS)
            partial.rename(paths[name])
            shutil.rmtree(root, ignore_errors=True)


def _mirror() -> list[str]:
    """The Debian mirror this machine's apt uses (debootstrap's own default where none is found)."""
    for sources in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = sources.read_text()
        except OSError:
            continue
        for match in re.finditer(r"^(?:deb\s+(?:\[[^]]*\]\s+)?|URIs:\s*)(\S+)", text, re.MULTILINE):
            uri = match[1]
            if "security" not in uri and uri.startswith(("http://", "https://", "file:/")):
                return [uri]
    return []


def _run(*argv: str, env: dict[str, str] | None = None) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise ImageBuildError(
            f"building the test images: `{' '.join(argv[:4])} ...` failed:\n{(result.stdout + result.stderr)[-3000:]}"
        )
