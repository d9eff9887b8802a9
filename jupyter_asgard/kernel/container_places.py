"""Where the user's named containers live: which node's enroot storage holds which of them.

A named container is a directory in one node's enroot storage (Pyxis names it pyxis_NAME), and what the user
installed in it stays there. Slurm knows nothing of it, so the server keeps what it observes, per user, in the
user's Jupyter data directory (shared by every server and nbclient of theirs, on every login node that mounts
the home): a kernel that ran in a container on a node proves it is there; Pyxis saying it created the
container's filesystem on a node where one was recorded proves the recorded one was gone (removed behind the
server's back), and the record is made anew. Placement (provisioner) reads it; the side panel, the REST API and
`jupyter asgard containers` list it.

One JSON file, 0600 in a 0700 directory: whoever could write it could steer the user's kernels to a node of
their choosing. Each change is read, changed and replaced under a lock file, so processes never lose each
other's changes and readers never see half a file.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir

from ..containers.image_dir import now
from .detach_records import private_root, read_json, write_private

PLACES_FILE = "containers.json"
HOLDS = "the list of your containers and their nodes, which steers where your kernels start"


def places_root() -> Path:
    return Path(jupyter_data_dir()) / "asgard" / "containers"


@dataclass(frozen=True)
class ContainerPlace:
    """One named container on one node, as the server last saw it there."""

    name: str  # Pyxis's --container-name, without its flag (the filesystem's name on the node)
    node: str
    image: str = ""  # the image it was created from, as the kernel named it
    writable: bool | None = None  # --container-writable (True), --container-readonly (False), Pyxis's default
    partition: str = ""  # the kernel's partition there: a job on that node (a save, a removal) asks for it
    # Made from the image because the container's node could not take the kernel: without what the user had
    # installed there, so placement prefers the other (a copy brought here is no fresh copy)
    fresh_copy: bool = False
    created: str = ""  # when the server saw Pyxis create its filesystem ("" where it was there already)
    last_use: str = ""  # the last start of a kernel in it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def parse(cls, data: Any) -> ContainerPlace | None:
        """A place from the file, None where it is not one (a file edited by hand, an older format)."""
        if not isinstance(data, dict) or not all(isinstance(data.get(key), str) for key in ("name", "node")):
            return None
        writable = data.get("writable")
        return cls(
            name=data["name"],
            node=data["node"],
            image=str(data.get("image") or ""),
            writable=writable if isinstance(writable, bool) else None,
            partition=str(data.get("partition") or ""),
            fresh_copy=data.get("fresh_copy") is True,
            created=str(data.get("created") or ""),
            last_use=str(data.get("last_use") or ""),
        )


def newest_first(places: list[ContainerPlace]) -> list[ContainerPlace]:
    """Copies with what the user installed before fresh copies, each the most recently used first."""
    return sorted(places, key=lambda place: (not place.fresh_copy, place.last_use, place.node), reverse=True)


def grouped(places: list[ContainerPlace]) -> list[dict[str, Any]]:
    """One entry per container name, its nodes newest first: what the side panel and the CLI list."""
    names: dict[str, list[ContainerPlace]] = {}
    for place in newest_first(places):
        names.setdefault(place.name, []).append(place)
    return [
        {
            "name": name,
            "nodes": [place.node for place in found],
            "image": found[0].image,
            "writable": found[0].writable,
            "last_use": found[0].last_use,
            "places": [place.to_json() for place in found],
        }
        for name, found in sorted(names.items())
    ]


class ContainerPlaces:
    """The user's record of their containers' nodes. Blocking (file I/O): the server calls it in a thread."""

    def __init__(self, root: Callable[[], Path] = places_root) -> None:
        self._root = root

    def places(self, name: str | None = None) -> list[ContainerPlace]:
        """The containers recorded (of that name), the most recently used first."""
        with self._locked() as path:
            found = self._read(path)
        return newest_first([place for place in found if name is None or place.name == name])

    def seen(self, place: ContainerPlace, created: bool) -> ContainerPlace | None:
        """A kernel started in container place.name on place.node (created: Pyxis made its filesystem in that
        start, and place says whether as a fresh copy), now. Returns the record this replaces where the container
        was recorded there but had been made anew: the one recorded was removed behind the server's back."""
        with self._locked() as path:
            places = self._read(path)
            old = next((known for known in places if (known.name, known.node) == (place.name, place.node)), None)
            stamp = now()
            if old is not None and not created:
                place = replace(place, created=old.created, fresh_copy=old.fresh_copy, last_use=stamp)
            else:
                place = replace(place, created=stamp if created else "", last_use=stamp)
            self._write(path, [other for other in places if other is not old] + [place])
        return old if old is not None and created else None

    def forget(self, name: str, node: str | None = None) -> list[ContainerPlace]:
        """The records of name (on node, or on every node) removed; returns them."""
        with self._locked() as path:
            places = self._read(path)
            gone = [place for place in places if place.name == name and node in (None, place.node)]
            if gone:
                self._write(path, [place for place in places if place not in gone])
        return gone

    @contextmanager
    def _locked(self) -> Iterator[Path]:
        """The file's path, under the lock every process of the user takes around a read and a change."""
        root = private_root(self._root(), HOLDS)
        fd = os.open(root / (PLACES_FILE + ".lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield root / PLACES_FILE
        finally:
            os.close(fd)

    @staticmethod
    def _read(path: Path) -> list[ContainerPlace]:
        data = read_json(path)
        rows = data.get("containers") if isinstance(data, dict) else None
        parsed = (ContainerPlace.parse(row) for row in rows) if isinstance(rows, list) else iter(())
        return [place for place in parsed if place is not None]

    @staticmethod
    def _write(path: Path, places: list[ContainerPlace]) -> None:
        ordered = sorted(places, key=lambda place: (place.name, place.node))
        write_private(path, {"version": 1, "containers": [place.to_json() for place in ordered]})
