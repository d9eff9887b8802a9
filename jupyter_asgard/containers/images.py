"""Container images a kernel can start from: squashfs files on shared storage and configured registry images.

The panel lists them so that a user picks an image instead of typing a path or an enroot URI.
Squashfs files are named two ways in practice (see the reference on enroot image files):
Asgard's shared images keep the registry and separate fields with ``_``
(``nvcr.io_nvidia_pytorch_23.12-py3.sqsh``), while ``enroot import`` replaces ``/`` with ``+``,
drops the registry and appends the tag with ``+`` (``nvidia+pytorch+23.12-py3.sqsh``).
A name that fits neither is still listed, under its bare name.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .directory_trust import directory_problem

SQUASHFS_SUFFIX = ".sqsh"
DIGEST_MARK = "@sha256:"  # a reference pinned to a manifest digest: IMAGE[:TAG]@sha256:HEX
MANIFEST_SUFFIX = ".json"  # a saved image's manifest: NAME.sqsh.json
_SIZE_UNITS = ("B", "KB", "MB", "GB", "TB", "PB")
MANIFEST_LIMIT = 1024 * 1024  # a real manifest (a few hundred package lines) is a few KiB


@dataclass(frozen=True)
class ImageName:
    """A Docker image reference split the way enroot needs it: the registry stands apart from the repository."""

    registry: str
    repository: str
    tag: str
    digest: str = ""  # sha256:HEX, where the reference pins the image's manifest (enroot then ignores the tag)

    @property
    def uri(self) -> str:
        """The enroot URI (``docker://REGISTRY#REPOSITORY:TAG``), which ``enroot import`` and Pyxis accept."""
        registry = f"{self.registry}#" if self.registry else ""
        return f"docker://{registry}{self.repository}{self._reference}"

    @property
    def display(self) -> str:
        """The name people know from ``docker pull``: ``REGISTRY/REPOSITORY:TAG``."""
        registry = f"{self.registry}/" if self.registry else ""
        return f"{registry}{self.repository}{self._reference}"

    @property
    def _reference(self) -> str:
        return (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")


@dataclass(frozen=True)
class ImageFile:
    """A squashfs image found on disk; its path is what ``--container-image`` is given."""

    path: str
    name: ImageName
    size: int
    modified: float
    manifest: dict[str, Any] | None = field(default=None, compare=False, hash=False)  # a saved image's

    def to_json(self) -> dict[str, Any]:
        return {
            **_name_json(self.name),
            "path": self.path,
            "size": self.size,
            "size_text": format_size(self.size),
            "modified": datetime.fromtimestamp(self.modified, timezone.utc).isoformat(timespec="seconds"),
            "kind": "squashfs",
            **({"manifest": self.manifest} if self.manifest is not None else {}),
        }


def _name_json(name: ImageName) -> dict[str, Any]:
    return {
        "uri": name.uri,
        "display": name.display,
        "registry": name.registry,
        "repository": name.repository,
        "tag": name.tag,
    }


def _looks_like_host(field: str) -> bool:
    """Docker's rule for telling a registry from a repository component: a host name has a dot or a port."""
    return "." in field or ":" in field


def parse_image_filename(filename: str) -> ImageName | None:
    """The image a squashfs file was made from, judged by its name alone; None for files that are not squashfs."""
    if not filename.endswith(SQUASHFS_SUFFIX):
        return None
    stem = filename[: -len(SQUASHFS_SUFFIX)]
    if not stem:
        return None
    # '+' never occurs in Docker repository names or tags, so it marks enroot's naming.
    enroot_naming = "+" in stem
    fields = stem.split("+" if enroot_naming else "_")
    if len(fields) < 2 or not all(fields):
        return ImageName("", stem, "")
    if enroot_naming:
        fields = _join_port(fields)
    registry = ""
    if len(fields) >= 3 and _looks_like_host(fields[0]):
        registry, fields = fields[0], fields[1:]
    return ImageName(registry, "/".join(fields[:-1]), fields[-1])


def _join_port(fields: list[str]) -> list[str]:
    """enroot's dockerd:// and podman:// imports turn every ':' into '+', so a registry port becomes a field."""
    if len(fields) >= 4 and "." in fields[0] and fields[1].isdigit():
        return [f"{fields[0]}:{fields[1]}", *fields[2:]]
    return fields


def format_size(size: int) -> str:
    """A size people read at a glance (binary multiples, as ``ls -lh`` and Jupyter's file browser use)."""
    value = float(size)
    unit = 0
    while value >= 1024 and unit < len(_SIZE_UNITS) - 1:
        value /= 1024
        unit += 1
    if unit == 0:
        return f"{size} B"
    return f"{value:.1f} {_SIZE_UNITS[unit]}" if value < 100 else f"{value:.0f} {_SIZE_UNITS[unit]}"


def scan_image_dirs(dirs: list[str]) -> tuple[list[ImageFile], list[str]]:
    """Every squashfs file directly inside the directories, and a note for each directory that cannot be read.

    Blocking (the caller runs it in a thread). A missing or unreadable directory is a site
    configuration matter to show, not an error to raise: the other directories still count. A directory
    someone else can change is not listed (directory_trust): its images could be anyone's.
    """
    images: list[ImageFile] = []
    notes: list[str] = []
    for directory in dict.fromkeys(dirs):  # a directory configured twice is listed once
        if os.path.isdir(directory) and (problem := directory_problem(directory, os.geteuid())):
            notes.append(f"image directory {directory} is not listed: {problem}")
            continue
        try:
            images += _scan_dir(directory)
        except FileNotFoundError:
            notes.append(f"image directory {directory} does not exist")
        except NotADirectoryError:
            notes.append(f"image directory {directory} is not a directory")
        except OSError as error:
            notes.append(f"image directory {directory} is not readable: {error.strerror}")
    images.sort(key=lambda image: (image.name.display, image.path))
    return images, notes


def _scan_dir(directory: str) -> list[ImageFile]:
    images = []
    with os.scandir(directory) as entries:
        for entry in entries:
            name = parse_image_filename(entry.name)
            if name is None:
                continue
            try:
                info = entry.stat()  # follows symlinks: a link to an image is an image
            except OSError:
                continue  # removed while scanning, or a dangling link
            if stat.S_ISREG(info.st_mode):
                path = os.path.join(directory, entry.name)
                images.append(ImageFile(path, name, info.st_size, info.st_mtime, read_manifest(path)))
    return images


def read_manifest(image_path: str) -> dict[str, Any] | None:
    """The manifest a saved image has beside it (IMAGE.sqsh.json: where it came from, its packages).

    Only a regular file of at most MANIFEST_LIMIT bytes counts, read without following a link and without
    waiting: a link to /dev/zero would be read until memory runs out, a FIFO would hold the listing forever.
    """
    try:
        text = _read_small_file(image_path + MANIFEST_SUFFIX, MANIFEST_LIMIT)
        found = json.loads(text) if text is not None else None
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def _read_small_file(path: str, limit: int) -> bytes | None:
    """path's content if it is a regular file of at most limit bytes, else None; OSError for a link (ELOOP)."""
    handle = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(handle, "rb") as opened:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            return None
        content = opened.read(limit + 1)
    return content if len(content) <= limit else None


def parse_image_uri(uri: str) -> tuple[str, ImageName]:
    """The user and image of an enroot URI ``docker://[USER@][REGISTRY#]IMAGE[:TAG][@sha256:DIGEST]`` or
    ``REGISTRY/IMAGE:TAG``.

    Without ``#``, a first path component that looks like a host is the registry (Docker's rule, which
    enroot 4 follows too); otherwise the image comes from Docker Hub.
    """
    rest = uri.strip().removeprefix("docker://")
    digest = ""
    if DIGEST_MARK in rest:
        rest, _, hex_digest = rest.rpartition(DIGEST_MARK)
        digest = DIGEST_MARK.removeprefix("@") + hex_digest
    user, _, rest = rest.rpartition("@")
    if "#" in rest:
        registry, _, image = rest.partition("#")
    else:
        first, slash, remainder = rest.partition("/")
        registry, image = (first, remainder) if slash and _looks_like_host(first) else ("", rest)
    repository, _, tag = image.partition(":")
    return user, ImageName(registry, repository, tag, digest)


def registry_images(uris: list[str]) -> list[dict[str, Any]]:
    """Configured registry images as list entries shaped like squashfs ones, so the panel shows them side by side.

    Entries naming no repository (blank or malformed configuration) are left out: there is nothing to pull.
    """
    entries = []
    for uri in uris:
        user, name = parse_image_uri(uri)
        if not name.repository:
            continue
        entries.append(
            {
                **_name_json(name),
                "uri": _with_user(name.uri, user),
                "path": "",
                "size": None,
                "size_text": "",
                "modified": None,
                "kind": "registry",
            }
        )
    return entries


def _with_user(uri: str, user: str) -> str:
    """Keep the configured user: enroot picks that user's registry credentials by it."""
    return uri.replace("docker://", f"docker://{user}@", 1) if user else uri
