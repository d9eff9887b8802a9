"""``jupyter asgard containers``: the user's named containers, the nodes each is on and the kernels running in
it; ``jupyter asgard containers remove NAME [--node NODE]`` removes one from its nodes.

Every running Jupyter server of the user is asked (GET /asgard/api/containers): each knows its own kernels, and
a container is in use if a kernel of any of them runs in it. A removal goes through one of them, so that its
kernels' next starts on that node know the container is gone (container_starts.py), after the kernels of all
of them were checked; with no server running, this command reads the user's record (container_places.py) and
runs the removal's Slurm jobs itself (kernel/container_removal.py), as a server would.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from ..errors import AsgardError, ServerRefused
from ..kernel.container_places import ContainerPlaces
from ..kernel.container_removal import (
    REMOVAL_TIMEOUT,
    ContainerKernel,
    ContainerRemoval,
    in_use,
    kernels_in,
    listing,
    removal_json,
)
from ..slurm.slurm_client import SlurmClient
from .image_import import fail
from .server_requests import call, running_servers
from .status import fixed_width

API = "/asgard/api/containers"
TIMEOUT = 5.0
COLUMNS = ("NAME", "NODES", "IMAGE", "WRITABLE", "LAST USE", "KERNELS")
NO_SERVER = "no Jupyter server of yours runs: kernels in your containers are not shown"
REMOVE_HINT = "Remove one (and what was installed in it) with: jupyter asgard containers remove NAME [--node NODE]"


@dataclass
class Containers:
    """The containers as the servers (or the record) list them, the servers that answered, and notes."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    servers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"containers": self.entries}

    def kernels(self) -> list[ContainerKernel]:
        return [
            ContainerKernel(kernel["kernel_id"], entry["name"], kernel["node"])
            for entry in self.entries
            for kernel in entry["kernels"]
        ]


def merged(listings: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One entry per container from several servers' listings: the first server's, with every server's kernels."""
    entries: dict[str, dict[str, Any]] = {}
    for found in listings:
        for entry in found:
            known = entries.setdefault(entry["name"], {**entry, "kernels": []})
            known["kernels"] += [kernel for kernel in entry.get("kernels", []) if kernel not in known["kernels"]]
    return [entries[name] for name in sorted(entries)]


def collect(timeout: float = TIMEOUT) -> Containers:
    """From every running server that answers; from the user's record where none does."""
    listings, servers, notes = [], [], []
    for server in running_servers():
        try:
            listings.append(call(server, "GET", API, timeout=timeout)["containers"])
            servers.append(server)
        except ServerRefused as error:
            if error.status != 404:  # 404: a server without the extension (or an older one) knows no containers
                notes.append(f"Jupyter server {server.get('url', '')} answered HTTP {error.status} ({error})")
        except (OSError, ValueError, KeyError, TypeError) as error:
            notes.append(f"Jupyter server {server.get('url', '')} did not answer ({error})")
    if servers:
        return Containers(merged(listings), servers, notes)
    return Containers(listing(ContainerPlaces().places(), []), [], [*notes, NO_SERVER])


def remove(name: str, node: str | None, timeout: float = TIMEOUT) -> dict[str, Any]:
    """The container removed through a running server (refused first where a kernel of any server runs in it on
    a node it goes from), else by this process; removal_json's answer. AsgardError where it is refused."""
    found = collect(timeout)
    entry = next((entry for entry in found.entries if entry["name"] == name), None)
    if entry is not None:
        nodes = {node} if node else set(entry["nodes"])
        if busy := kernels_in(name, nodes, found.kernels()):
            raise in_use(name, busy)
    if found.servers:
        query = "?" + urllib.parse.urlencode({"node": node}) if node else ""
        path = f"{API}/{urllib.parse.quote(name, safe='')}{query}"
        answer: dict[str, Any] = call(found.servers[0], "DELETE", path, timeout=REMOVAL_TIMEOUT + 30)
        return answer
    removals = asyncio.run(ContainerRemoval(SlurmClient()).remove(name, node, lambda: []))
    return removal_json(name, removals)


# --- the table -------------------------------------------------------------------------------------


def writable_text(writable: bool | None) -> str:
    """--container-writable (yes), --container-readonly (no), neither (the site's Pyxis decides)."""
    if writable is None:
        return "Pyxis default"
    return "yes" if writable else "no"


def when_text(stamp: str) -> str:
    """2026-12-07T12:26:55+00:00 as 2026-12-07 12:26:55 UTC."""
    return stamp.replace("T", " ").replace("+00:00", " UTC") if stamp else "-"


def kernels_text(kernels: list[dict[str, Any]]) -> str:
    return ", ".join(f"{kernel['kernel_id'][:8]} on {kernel['node']}" for kernel in kernels) or "-"


def table_row(entry: dict[str, Any]) -> tuple[str, ...]:
    return (
        entry["name"],
        ", ".join(entry["nodes"]),
        entry.get("image") or "-",
        writable_text(entry.get("writable")),
        when_text(entry.get("last_use") or ""),
        kernels_text(entry.get("kernels") or []),
    )


def render(entries: list[dict[str, Any]]) -> str:
    """The containers, newest node first in each row, and how to remove one."""
    if not entries:
        return "No named containers of yours are recorded (one is, once a kernel of yours has run in it)."
    return "\n".join([*fixed_width([COLUMNS, *(table_row(entry) for entry in entries)]), REMOVE_HINT])


# --- the commands ----------------------------------------------------------------------------------


def run_list(as_json: bool) -> int:
    """Notes go to stderr, so that --json output stays parseable."""
    found = collect()
    for note in found.notes:
        print(f"note: {note}", file=sys.stderr)
    print(json.dumps(found.to_json(), indent=1) if as_json else render(found.entries))
    return 0


def run_remove(name: str, node: str | None, as_json: bool, command: str) -> int:
    try:
        answer = remove(name, node)
    except AsgardError as error:
        return fail(command, error.message, error.hint)
    print(json.dumps(answer, indent=1) if as_json else answer["message"])
    return 0
