"""The user's image directory, where a save or an import writes a squashfs image and its manifest.

The directory must be the user's alone (directory_trust): enroot follows a link at the path it writes, the path
is in srun's argv for all to see, and the panel offers whatever is listed there as something to run. Pyxis or
enroot write into a private directory (0700) made in it, and the finished image and its manifest are renamed
into place (one directory, so atomic), so an image is listed only complete; nothing replaces a name that was
taken meanwhile.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from typing import Any

from ..errors import ImageRefused
from ..launch.launch_config import default_environ, expand_variables
from .container_steps import manifest_path
from .directory_trust import directory_problem


def now() -> str:
    """When an image was written, as its manifest and the UI say it (UTC, ISO 8601, seconds)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def configured_dir(setting: str, configured: str) -> str:
    """The site's directory c.PyxisProvisioner.<setting> with $USER, $HOME and ~ expanded; ImageRefused names a
    variable that is not set."""
    problems: list[str] = []
    directory = expand_variables(setting, configured, default_environ(), problems)
    if problems:
        raise ImageRefused(500, f"the site's c.PyxisProvisioner.{setting} cannot be used: {problems[0]}")
    return directory


def usable_dir(directory: str, setting: str) -> None:
    """Blocking (run in a thread): the directory (the site's c.PyxisProvisioner.<setting>) is made if missing
    and checked to be the user's alone and writable; ImageRefused says what is in the way."""
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
    except OSError as error:
        raise ImageRefused(
            400,
            f"cannot create the image directory {directory}: {error.strerror}; the site sets it as "
            f"c.PyxisProvisioner.{setting}",
        ) from None
    if problem := directory_problem(directory, os.geteuid()):
        raise ImageRefused(400, f"the image directory {directory} is not safe to write images in: {problem}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ImageRefused(
            400,
            f"cannot write to the image directory {directory}: permission denied; choose another with "
            f"c.PyxisProvisioner.{setting}, or ask for write access to it",
        )


def private_staging(directory: str, path: str, setting: str, prefix: str) -> str:
    """Blocking: once usable_dir has checked the directory, a private directory (0700, named prefix...) in it to
    write path's image in. ImageRefused says what is in the way."""
    usable_dir(directory, setting)
    if os.path.lexists(path):
        raise ImageRefused(409, f"an image {path} exists already: choose another name, or delete that file first")
    return tempfile.mkdtemp(prefix=prefix, dir=directory)


def write_manifest(path: str, manifest: dict[str, Any]) -> None:
    """Blocking: the manifest of the image at path (NAME.sqsh.json beside it), written in the private directory
    and moved into place with the image."""
    with open(manifest_path(path), "x") as out:
        json.dump(manifest, out, indent=1)
    os.chmod(manifest_path(path), 0o644)


def publish(staged: str, path: str) -> None:
    """Blocking: the finished image and its manifest renamed into place, the manifest first, so that the image,
    once listed, has it; the private directory goes. FileExistsError if the name was taken meanwhile."""
    if os.path.lexists(path) or os.path.lexists(manifest_path(path)):
        raise FileExistsError(f"{path} was made while the image was being written; this one was dropped")
    os.rename(manifest_path(staged), manifest_path(path))
    os.rename(staged, path)
    os.rmdir(os.path.dirname(staged))
