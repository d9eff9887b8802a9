"""Where a detachable kernel is written down, so that the next Jupyter server of its user can take it over.

Each detachable kernel has a directory of its own, ``<jupyter data dir>/asgard/detachable/<kernel id>/``, in
the user's home, which the login nodes and the compute nodes share (a site that offers detachable kernels
must have one). Its parent is ``0700`` and everything in it ``0600``: it holds the kernel's session key and
Curve keys. The server writes ``kernel.json`` (what a new server needs to reconnect: address, keys, job,
session, launch settings) and ``held``; the keeper, the kernel's batch script on the node (keeper.py), writes
the rest. The file protocol between the two is described there.

Under JupyterHub, ``kernel.json`` also names the user's server the kernel belongs to (``hub_server``: one user may
run several named servers, each with kernels of its own); a server takes over at its start only its own.

Who holds a kernel is ``held``: the holding server's id, refreshed (its mtime) every HOLD_REFRESH seconds.
A server that stops on purpose writes it with no holder. A kernel is free to adopt when nobody holds it, its
holder is a process of this host that is gone, or its holder has not refreshed it for HOLD_STALE seconds (a
login node that died). Two servers that find it free at once race for it through ``mkdir`` of a claim named
after the ``held`` they both saw, which only one of them can win, on a shared filesystem too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from jupyter_core.paths import jupyter_data_dir

from ..errors import AsgardError
from ..slurm.slurm_commands import pid_alive

HOLD_REFRESH = 5.0  # seconds between a holding server's refreshes of held
HOLD_STALE = 20.0  # seconds without a refresh after which a holder on another host counts as gone
RECORD = "kernel.json"


def records_root() -> Path:
    return Path(jupyter_data_dir()) / "asgard" / "detachable"


def private_root(root: Path | None = None, holds: str = "the keys of your detachable kernels") -> Path:
    """The records' directory (or another of the user's private state), made 0700 if new; refused where
    another user could reach into it."""
    root = root or records_root()
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = root.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise AsgardError(
            f"{root} must be a directory of yours that nobody else can read or write (mode 0700): it holds {holds}",
            hint=f"chmod 700 {root} (or remove it; it is made again)",
        )
    return root


def hub_server() -> str | None:
    """This server's name among its user's JupyterHub servers ("" for the default one, as the hub's spawner says
    in JUPYTERHUB_SERVER_NAME); None for a server no JupyterHub started. A detachable kernel's record keeps the
    name of the server it belongs to: that server, when it starts again, takes it over, not another of the user's
    named servers."""
    return os.environ.get("JUPYTERHUB_SERVER_NAME", "") if "JUPYTERHUB_USER" in os.environ else None


def hub_server_label(name: str) -> str:
    """How a user knows one of their JupyterHub servers."""
    return f"your server '{name}'" if name else "your default server"


def server_id() -> str:
    """This server's identity in held: host, pid and a nonce (a pid is reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


THIS_SERVER = server_id()
_UPDATES = threading.Lock()


def write_private(path: Path, data: Any) -> None:
    """A JSON file only the user can read, replaced whole (readers never see half of it)."""
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    os.replace(partial, path)


def read_json(path: Path) -> Any:
    """A file's JSON, or None where it is missing or unreadable (a keeper's file being replaced)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Holder:
    """Who held a kernel at the last refresh, and when that was."""

    server: str
    refreshed: float

    @property
    def host(self) -> str:
        return self.server.split(":")[0] if self.server else ""

    def gone(self, now: float) -> bool:
        """Whether no server holds the kernel any longer."""
        if not self.server:
            return True
        host, _, rest = self.server.partition(":")
        pid = rest.partition(":")[0]
        if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
            return True
        return now - self.refreshed > HOLD_STALE


class KernelRecord:
    """One detachable kernel's directory."""

    def __init__(self, root: Path, kernel_id: str) -> None:
        self.kernel_id = kernel_id
        self.directory = root / kernel_id
        self.claimed_after = 0.0  # when the kernel was let go, as it was before this server claimed it

    def create(self) -> None:
        self.directory.mkdir(mode=0o700)

    def exists(self) -> bool:
        return self.directory.is_dir()

    def path(self, name: str) -> Path:
        return self.directory / name

    def read(self) -> dict[str, Any]:
        found = read_json(self.path(RECORD))
        return found if isinstance(found, dict) else {}

    def write(self, record: dict[str, Any]) -> None:
        write_private(self.path(RECORD), record)

    def update(self, **values: Any) -> None:
        """Read, change, write: one at a time in this process (a restart's record and a session may meet)."""
        with _UPDATES:
            self.write({**self.read(), **values})

    def hold(self, server: str) -> None:
        """Say (again) that server holds the kernel."""
        write_private(self.path("held"), {"server": server})

    def refresh(self, server: str) -> bool:
        """Say again that server holds the kernel; False where another server holds it now (this one was
        silent for longer than HOLD_STALE, and another took the kernel over meanwhile)."""
        if self.holder().server != server:
            return False
        os.utime(self.path("held"))
        return True

    def let_go(self) -> None:
        """The holding server stops on purpose: the kernel is free at once (its grace starts now). A record
        removed meanwhile (the kernel released through another server) has nobody left to tell."""
        with contextlib.suppress(FileNotFoundError):
            write_private(self.path("held"), {"server": "", "detached_at": time.time()})

    def holder(self) -> Holder:
        held = self.path("held")
        data = read_json(held)
        try:
            refreshed = held.stat().st_mtime
        except OSError:
            refreshed = 0.0
        return Holder(str((data or {}).get("server") or ""), refreshed)

    def claim(self, server: str, seen: Holder) -> bool:
        """Take a kernel found free (its holder as seen when found gone); False where another server took it
        first. Only one claim can be made on what was seen, and one made on what has changed since is void."""
        token = f"claim-{seen.refreshed:.6f}-{seen.server.replace(':', '-') or 'none'}"
        try:
            self.path(token).mkdir(mode=0o700)
        except FileExistsError:
            return False
        if self.holder() != seen:
            self.path(token).rmdir()
            return False
        self.claimed_after = self.detached_since()
        self.hold(server)
        for old in self.directory.glob("claim-*"):
            if old.name != token:
                with contextlib.suppress(OSError):
                    old.rmdir()
        return True

    def detached_since(self) -> float:
        """When the last holder let go, or refreshed last (a server that died did not say)."""
        data = read_json(self.path("held")) or {}
        return float(data.get("detached_at") or self.holder().refreshed)

    def keeper(self) -> dict[str, Any]:
        found = read_json(self.path("keeper.json"))
        return found if isinstance(found, dict) else {}

    def ended(self) -> dict[str, Any]:
        found = read_json(self.path("ended.json"))
        return found if isinstance(found, dict) else {}

    def while_detached(self, since: float) -> dict[str, Any]:
        """The kernel's recorded outputs after since, the execute requests that ended after since (``done``),
        and its execution state as last recorded."""
        found = read_json(self.path("while-detached.json"))
        if not isinstance(found, dict):
            return {"entries": [], "done": [], "execution_state": ""}

        def after(key: str) -> list[dict[str, Any]]:
            return [item for item in found.get(key) or [] if float(item.get("time", 0)) > since]

        printed = [entry for entry in after("entries") if entry.get("kind") != "input"]
        return {"entries": printed, "done": after("done"), "execution_state": str(found.get("execution_state") or "")}

    def unanswered(self, since: float, before: float) -> list[dict[str, Any]]:
        """The execute requests sent before `before` that ended after `since` (the recorder's ``done``), each with
        what it printed (``outputs``, oldest first) and whether that is all of it (``complete``: its start is
        still in the record, which drops its oldest entries first)."""
        found = read_json(self.path("while-detached.json"))
        if not isinstance(found, dict):
            return []
        entries = found.get("entries") or []
        requests = []
        for request in found.get("done") or []:
            if float(request.get("time", 0)) <= since or not sent_before(request, before):
                continue
            own = [entry for entry in entries if entry.get("cell") == request.get("cell")]
            outputs = [entry for entry in own if entry.get("kind") != "input"]
            requests.append({**request, "outputs": outputs, "complete": len(outputs) < len(own)})
        return requests

    def release(self) -> None:
        """Tell the keeper to end the job now."""
        if self.exists():
            self.path("released").touch(mode=0o600)

    def remove(self) -> None:
        """Gone at once, whole: renamed away first, so that a keeper still running, which knows the directory
        by its name, writes nothing more into it (and ends: its directory is gone)."""
        doomed = self.directory.with_name(f".removed-{self.kernel_id}-{uuid.uuid4().hex[:8]}")
        try:
            self.directory.rename(doomed)
        except FileNotFoundError:
            return
        shutil.rmtree(doomed, ignore_errors=True)


def sent_before(request: dict[str, Any], moment: float) -> bool:
    """Whether an ended execute request (the recorder's ``done``) was sent before moment (seconds since the
    epoch), by the date its header carries; one without a date was not."""
    try:
        sent = datetime.fromisoformat(str(request.get("sent") or "").replace("Z", "+00:00"))
    except ValueError:
        return False
    return (sent if sent.tzinfo else sent.replace(tzinfo=timezone.utc)).timestamp() < moment


def all_records(root: Path) -> list[KernelRecord]:
    """Every kernel record of this user, kernels ended while detached included."""
    if not root.is_dir():
        return []
    return [
        KernelRecord(root, entry.name)
        for entry in sorted(root.iterdir())
        if not entry.name.startswith(".") and (entry / RECORD).is_file()
    ]
