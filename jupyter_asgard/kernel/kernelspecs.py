"""The kernelspecs shipped with jupyter-asgard, and installing them with a site's settings.

A site differs from a bundled kernelspec in a few places only (where its
images live, which partition, what to mount, how many GPUs).  These helpers
apply those differences and check the result with the provisioner's own rules
(LaunchConfig.parse), so a typo fails at install time rather than at the first
kernel start, after a wait in the Slurm queue.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager

from ..errors import KernelspecError, LaunchConfigError
from ..launch.launch_config import LaunchConfig

PROVISIONER_NAME = "pyxis-provisioner"
DEFAULT_KERNEL = "asgard-pytorch"
# jupyter_client's rule for kernel names, checked here to report it in our words before anything is copied.
# \Z: "$" would let "name\n" through; re.ASCII: IGNORECASE alone folds the Kelvin sign (U+212A) onto k.
KERNEL_NAME = re.compile(r"^[a-z0-9._-]+\Z", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True)
class SiteOverrides:
    """What a site changes in a bundled kernelspec; empty or None keeps the bundled value."""

    image: str = ""
    image_dir: str = ""
    partition: str = ""
    mounts: tuple[str, ...] | None = None
    gpus: int | str | None = None
    display_name: str = ""


class _PlaceholderEnviron(dict[str, str]):
    """Every variable counts as set, with a path-like value.

    $USER and friends must stay literal in the installed file: the provisioner
    expands them at kernel start, in the Jupyter server's environment, which
    the installer cannot know.  Validation only needs a stand-in value.
    """

    def __contains__(self, key: object) -> bool:
        return True

    def __missing__(self, key: str) -> str:
        return "/placeholder"


def bundled_kernelspecs_dir() -> Path:
    """A wheel carries the kernelspecs inside the package (force-include); a source tree keeps them at its top."""
    package = Path(__file__).resolve().parent.parent  # jupyter_asgard/
    for candidate in (package / "bundled_kernelspecs", package.parent / "kernelspecs"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no kernelspecs directory in {package} or next to it: the installation is incomplete")


def bundled_kernelspec_dir(name: str = DEFAULT_KERNEL) -> Path:
    """The resource directory (kernel.json and logos) of one bundled kernelspec."""
    root = bundled_kernelspecs_dir()
    if not (root / name / "kernel.json").is_file():
        bundled = sorted(path.parent.name for path in root.glob("*/kernel.json"))
        raise KernelspecError(f"no bundled kernelspec {name!r} (bundled: {', '.join(bundled) or 'none'})")
    return root / name


def load_kernelspec(resource_dir: Path) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((resource_dir / "kernel.json").read_text())
    return spec


def provisioner_config(spec: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pyxis-provisioner config of a kernelspec; None for kernels that do not run through it."""
    provisioner = spec.get("metadata", {}).get("kernel_provisioner", {})
    if provisioner.get("provisioner_name") != PROVISIONER_NAME:
        return None
    config: dict[str, Any] = provisioner.get("config", {})
    return config


def apply_overrides(spec: Mapping[str, Any], overrides: SiteOverrides) -> dict[str, Any]:
    """A copy of spec with the site's settings, checked the way the provisioner checks it at kernel start."""
    result = copy.deepcopy(dict(spec))
    if provisioner_config(result) is None:
        raise KernelspecError(f"kernelspec {result.get('display_name', '')!r} does not use {PROVISIONER_NAME}")
    config = result["metadata"]["kernel_provisioner"].setdefault("config", {})
    if overrides.image:
        config["image"] = overrides.image
    if overrides.image_dir:
        config["image"] = _move_image(config.get("image", ""), overrides.image_dir)
    if overrides.partition:
        config["partition"] = overrides.partition
    if overrides.mounts is not None:
        config["mounts"] = list(overrides.mounts)
    if overrides.gpus is not None:
        config["gpus"] = overrides.gpus
    if overrides.display_name:
        result["display_name"] = overrides.display_name
    check_config(config)
    return result


def _move_image(image: str, image_dir: str) -> str:
    """Sites keep the same squashfs files in different directories; only file images can move."""
    if not (image.startswith(("/", ".")) or image.endswith(".sqsh")):
        raise KernelspecError(
            f"image_dir {image_dir!r} applies to squashfs files, but the image is the registry image {image!r}"
        )
    return str(PurePosixPath(image_dir) / PurePosixPath(image).name)


def check_config(config: Mapping[str, Any]) -> None:
    """Raise KernelspecError with every problem the provisioner would find, variables left unexpanded."""
    try:
        placeholders = _PlaceholderEnviron()  # any name counts: the server's list of names applies at start
        LaunchConfig.parse(config, environ=placeholders, variables=placeholders)
    except LaunchConfigError as error:
        raise KernelspecError(str(error)) from error


def install_kernelspec(
    resource_dir: Path,
    kernel_name: str,
    overrides: SiteOverrides,
    *,
    user: bool = False,
    prefix: str | None = None,
    manager: KernelSpecManager | None = None,
) -> Path:
    """Install resource_dir with the overridden kernel.json; returns where it went.

    The modified kernel.json is staged in a temporary copy because
    KernelSpecManager installs whole directories and the bundled one must stay
    untouched (it may be read-only in an installed package).
    """
    if not KERNEL_NAME.match(kernel_name):
        raise KernelspecError(f"kernel name {kernel_name!r} may contain only ASCII letters, digits, '-', '.' and '_'")
    spec = apply_overrides(load_kernelspec(resource_dir), overrides)
    with tempfile.TemporaryDirectory(prefix="jupyter-asgard-") as staging:
        staged = Path(staging) / kernel_name
        shutil.copytree(resource_dir, staged, ignore=shutil.ignore_patterns("kernel.json"))
        (staged / "kernel.json").write_text(json.dumps(spec, indent=2) + "\n")
        destination = (manager or KernelSpecManager()).install_kernel_spec(
            str(staged), kernel_name, user=user, prefix=prefix
        )
    return Path(destination)


def installed_kernelspecs(manager: KernelSpecManager | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(name, spec) of every installed kernelspec that runs through pyxis-provisioner, by name."""
    specs = (manager or KernelSpecManager()).get_all_specs()
    found = [(name, entry["spec"]) for name, entry in specs.items() if provisioner_config(entry["spec"]) is not None]
    return sorted(found, key=lambda item: item[0])
