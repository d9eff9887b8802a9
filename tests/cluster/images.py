"""Real squashfs images for the test cluster, built once per machine and cached by a hash of the recipe.

Three Debian 12 (bookworm) root filesystems made with debootstrap, as enroot
would import them: one with Debian's ``python3-ipykernel`` (what a
Jupyter-ready image like NGC PyTorch has), one with Python but no ipykernel,
and one with that same Python plus ipykernel 7 and its dependencies from PyPI
(wheels installed by this machine's pip into the image's
``/usr/local/lib/python3.11/dist-packages``, as ``pip install`` in a
Dockerfile would).  Each image's ``/etc/environment`` is its ``ENV``, as
enroot writes a Docker image's, with a variable the tests check.  Besides
them, a tiny image of a few files in three layers (``TINY_RECIPE``), for
the tests of imports themselves; registry.py builds it into the registry
alone, since it needs no root filesystem.  Building
needs root (debootstrap and chroot), Debian's package mirror and PyPI (or
the index this machine's pip uses); everything after that only reads the
cache.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

CACHE = Path(os.environ.get("ASGARD_IMAGE_CACHE", "/var/cache/jupyter-asgard/images"))
SUITE = "bookworm"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
IMAGE_VARIABLE = "TEST_IMAGE"  # set by each image's ENV; a kernelspec env of the same name must win
IPYKERNEL7 = "7.4.0"


@dataclass(frozen=True)
class Recipe:
    """One image: the root it starts from, what is installed into it, and its ENV.

    base: the recipe whose root filesystem (as installed, before its ENV and trimming) this one copies;
    None: debootstrap's.  debian_packages: installed with the image's apt.  pypi_requirements: wheels
    from PyPI, with their dependencies, installed by this machine's pip (see PIP_STEP)."""

    env: dict[str, str]
    base: str | None = None
    debian_packages: tuple[str, ...] = ()
    pypi_requirements: tuple[str, ...] = ()


RECIPES: dict[str, Recipe] = {
    "python-ipykernel": Recipe(
        debian_packages=("python3-ipykernel",),
        env={"PATH": SYSTEM_PATH, "PYTHONUNBUFFERED": "1", IMAGE_VARIABLE: "python-ipykernel"},
    ),
    "python": Recipe(env={"PATH": SYSTEM_PATH, IMAGE_VARIABLE: "python"}),
    "python-ipykernel7": Recipe(
        base="python",
        # pip: a user installs into a writable named container (offline in the tests: from a local directory)
        pypi_requirements=(f"ipykernel=={IPYKERNEL7}", "pip"),
        env={"PATH": SYSTEM_PATH, "PYTHONUNBUFFERED": "1", IMAGE_VARIABLE: "python-ipykernel7"},
    ),
}
BASE_PACKAGES = ["python3"]


@dataclass(frozen=True)
class FilesRecipe:
    """An image made of files alone, layer by layer (no debootstrap: it builds in a second). A layer is a
    mapping of paths to contents, a text or a number of pseudo-random bytes (which no compression shrinks), or
    a path alone: a layer that removes it (a whiteout)."""

    layers: tuple[dict[str, str | int] | str, ...]
    env: dict[str, str]


# For the tests of imports themselves, where importing a debootstrap image (10 s and more) would be most of the
# time: three small layers, the last a whiteout (so that enroot converts one). Its squashfs is over 1 MiB, more
# than a 512 KiB tmpfs holds.
TINY = "tiny"
TINY_RECIPE = FilesRecipe(
    layers=(
        {
            "etc/os-release": 'NAME="Asgard tiny test image"\n',
            "data/noise.bin": 1024 * 1024,
            "data/obsolete.txt": "the third layer removes this file\n",
        },
        {"app/hello.txt": "hello from the second layer\n"},
        "/data/obsolete.txt",
    ),
    env={"PATH": SYSTEM_PATH, IMAGE_VARIABLE: TINY},
)


def write_files(root: Path, files: dict[str, str | int]) -> None:
    """A FilesRecipe layer's files below root."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, int):
            path.write_bytes(hashlib.shake_256(name.encode()).digest(content))
        else:
            path.write_text(content)


def _check_bases(recipes: dict[str, Recipe]) -> None:
    """Each recipe's chain of bases ends at debootstrap's root: a recipe it would not reach is never built."""
    for name, recipe in recipes.items():
        seen, base = {name}, recipe.base
        while base is not None:
            if base not in recipes or base in seen:
                raise ValueError(f"image recipe {name!r}: its base {base!r} is no recipe, or one based on it")
            seen.add(base)
            base = recipes[base].base


_check_bases(RECIPES)


@dataclass(frozen=True)
class PipStep:
    """How PyPI requirements go into an image: the host's pip picks wheels for the image's Python and C
    library (pip evaluates environment markers with its own Python, so that must be the image's version),
    installs them below ``target``, its console scripts into ``scripts`` (their ``#!`` made the image's
    ``python``), its data files (e.g. ipykernel's kernelspec) below ``data``; the image's Python then
    byte-compiles them, as Debian's packages are."""

    python_version: str = "3.11"  # bookworm's python3
    glibc: tuple[int, int] = (2, 36)  # bookworm's libc6: the newest manylinux its wheels may need
    machine: str = platform.machine()  # debootstrap builds the host's architecture
    python: str = "/usr/bin/python3"
    target: str = "/usr/local/lib/python3.11/dist-packages"
    scripts: str = "/usr/local/bin"
    data: str = "/usr/local"
    options: tuple[str, ...] = field(
        default=(
            "--only-binary=:all:",  # no sdist: it would build with the host's compiler and libraries
            "--no-compile",  # the image's python3 compiles them
            "--no-warn-conflicts",  # against the host's own packages, which the image does not have
            "--implementation=cp",
        )
    )

    @property
    def platforms(self) -> list[str]:
        """Every manylinux tag the image's C library runs, newest first: pip (23.2 at least) does not expand
        ``--platform manylinux_2_36_x86_64`` to the older tags, and most wheels carry older ones."""
        major, newest = self.glibc
        tags = [f"manylinux_{major}_{minor}_{self.machine}" for minor in range(newest, 4, -1)]
        legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}  # PEP 600's aliases of those
        return tags + [f"{alias}_{self.machine}" for minor, alias in legacy.items() if minor <= newest]

    def pip_argv(self, root: Path, requirements: tuple[str, ...]) -> list[str]:
        abi = "cp" + self.python_version.replace(".", "")
        return [
            sys.executable,
            "-m",
            "pip",
            "install",
            f"--target={root}{self.target}",
            *self.options,
            f"--python-version={self.python_version}",
            f"--abi={abi}",
            *(f"--platform={tag}" for tag in self.platforms),
            *requirements,
        ]


PIP_STEP = PipStep()
# The host's pip configuration (indexes, find-links, certificates) applies, but not its constraints: they are
# for the host's own environment, and one could forbid a version an image asks for.
PIP_ENV = {"PIP_CONSTRAINT": os.devnull, "PIP_ROOT_USER_ACTION": "ignore", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
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
    json.dumps(
        [
            SUITE,
            BASE_PACKAGES,
            {name: asdict(recipe) for name, recipe in RECIPES.items()},
            {**asdict(PIP_STEP), "platforms": PIP_STEP.platforms, "env": PIP_ENV},
            TRIMMED,
            SQUASHFS_OPTIONS,
        ],
        sort_keys=True,
    ).encode()
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
        for name, recipe in RECIPES.items():
            if recipe.base is None:
                _build(name, base, Path(work), paths)


def _build(name: str, parent: Path, work: Path, paths: dict[str, Path]) -> None:
    """The image of recipe name from a copy of parent's root, and (before its ENV and trimming) those of
    the recipes based on it."""
    recipe = RECIPES[name]
    root = work / name
    _run("cp", "-a", str(parent), str(root))
    if recipe.debian_packages:
        _run(
            "chroot",
            str(root),
            "apt-get",
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            *recipe.debian_packages,
            env={"DEBIAN_FRONTEND": "noninteractive", "PATH": SYSTEM_PATH},
        )
    if recipe.pypi_requirements:
        _pip_install(root, recipe.pypi_requirements)
    for child, based in RECIPES.items():
        if based.base == name:
            _build(child, root, work, paths)
    (root / "etc" / "environment").write_text("".join(f"{k}={v}\n" for k, v in recipe.env.items()))
    for trimmed in TRIMMED:
        shutil.rmtree(root / trimmed, ignore_errors=True)
        (root / trimmed).mkdir()
    partial = paths[name].with_suffix(".partial")
    _run("mksquashfs", str(root), str(partial), *SQUASHFS_OPTIONS)
    partial.rename(paths[name])
    shutil.rmtree(root, ignore_errors=True)


def _pip_install(root: Path, requirements: tuple[str, ...]) -> None:
    """requirements and their dependencies, as wheels for the image's Python, into root (see PipStep)."""
    step = PIP_STEP
    host = f"{sys.version_info.major}.{sys.version_info.minor}"
    if host != step.python_version:
        raise ImageBuildError(
            f"building the test images needs Python {step.python_version} (the images' Python), not {host}: "
            "pip decides which dependencies a wheel needs (environment markers) by the Python it runs with"
        )
    _run(*step.pip_argv(root, requirements), env={**os.environ, **PIP_ENV})
    installed = Path(f"{root}{step.target}")
    # pip --target puts console scripts and data files below the target too, the scripts run by the host's
    # Python: move them where `pip install` in the image would have put them, made the image's.
    scripts = installed / "bin"
    if scripts.is_dir():
        destination = Path(f"{root}{step.scripts}")
        destination.mkdir(parents=True, exist_ok=True)
        for script in scripts.iterdir():
            text = script.read_bytes()
            first, newline, rest = text.partition(b"\n")
            if first.startswith(b"#!") and sys.executable.encode() in first:
                first = f"#!{step.python}".encode()
            if sys.executable.encode() in first + rest:
                raise ImageBuildError(f"building the test images: {script.name} from pip runs {sys.executable}")
            (destination / script.name).write_bytes(first + newline + rest)
            (destination / script.name).chmod(0o755)
        shutil.rmtree(scripts)
    data = installed / "share"
    if data.is_dir():
        shutil.copytree(data, Path(f"{root}{step.data}") / "share", symlinks=True, dirs_exist_ok=True)
        shutil.rmtree(data)
    _run("chroot", str(root), step.python, "-m", "compileall", "-q", step.target, env={"PATH": SYSTEM_PATH})


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
