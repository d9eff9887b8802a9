"""``jupyter asgard import URI [NAME]``: import a registry image into the user's image directory, from a shell.

Where a Jupyter server of the user runs, the import goes through its REST API, so that its side panel shows
it as it goes (and the server's image list knows of it at once); otherwise this command runs the import itself,
with the site's settings read from the user's Jupyter configuration as a server would. Either way it says each
new status line on stderr until the import ends, prints the image's path (or with --json the import's JSON)
and exits 0 when imported, 1 with the message and hint when it failed. Ctrl-C cancels the import, and says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..containers.image_imports import RUNNING
from ..errors import AsgardError, ServerRefused
from .server_requests import call, running_servers

SERVER_POLL_SECONDS = 1.0  # between two asks of the server while its import runs
LOCAL_UPDATE_SECONDS = 0.5  # between two looks at an import this process runs
INTERRUPTED = 130  # the shell's status of a command ended by Ctrl-C
API = "/asgard/api/images/import"


class ImportRunner(Protocol):
    """Where an import runs: a Jupyter server of the user, or this process."""

    @property
    def where(self) -> str:
        """For the first line: "through the Jupyter server http://..." or "from this shell ..."."""
        ...

    async def start(self, uri: str, name: str) -> dict[str, Any]: ...

    async def next(self, import_id: str) -> dict[str, Any]:
        """The import's JSON a moment later (at once when it has ended)."""
        ...

    async def cancel(self, import_id: str) -> dict[str, Any]: ...


@dataclass
class ServerImports:
    """Imports through a running server's REST API (blocking requests, in threads)."""

    server: dict[str, Any]

    @property
    def where(self) -> str:
        return f"through the Jupyter server {self.server.get('url', '')}"

    async def start(self, uri: str, name: str) -> dict[str, Any]:
        body = {"uri": uri, **({"name": name} if name else {})}
        return await self._call("POST", API, body, 60)

    async def next(self, import_id: str) -> dict[str, Any]:
        await asyncio.sleep(SERVER_POLL_SECONDS)
        return await self._call("GET", f"{API}/{import_id}")

    async def cancel(self, import_id: str) -> dict[str, Any]:
        return await self._call("DELETE", f"{API}/{import_id}", None, 120)

    async def _call(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> dict[str, Any]:
        answer: dict[str, Any] = await asyncio.to_thread(call, self.server, method, path, body, timeout)
        return answer


class LocalImports:
    """Imports run by this process (no server of the user runs), with the site's settings from the user's
    Jupyter configuration and Slurm's commands on this host."""

    where = "from this shell (no Jupyter server of yours runs)"

    def __init__(self) -> None:
        # Imported here: the server's configuration and the import machinery cost time the other way does not.
        from ..containers.image_imports import ImageImports
        from ..kernel.kernel_env import import_environment
        from ..site.site import server_config
        from ..site.site_policy import SitePolicy
        from ..slurm.slurm_client import SlurmClient

        self.imports = ImageImports(
            SlurmClient(), SitePolicy(config=server_config()), env=import_environment(os.environ)
        )

    async def start(self, uri: str, name: str) -> dict[str, Any]:
        found, _new = await self.imports.start(uri, name)
        return found.to_json()

    async def next(self, import_id: str) -> dict[str, Any]:
        ended = asyncio.ensure_future(self.imports.wait(import_id))
        try:
            await asyncio.wait({ended}, timeout=LOCAL_UPDATE_SECONDS)
        finally:
            ended.cancel()
        return self.imports.get(import_id).to_json()

    async def cancel(self, import_id: str) -> dict[str, Any]:
        return (await self.imports.cancel(import_id)).to_json()


def server_for_imports(timeout: float = 5.0) -> dict[str, Any] | None:
    """The first running Jupyter server of the user whose Asgard extension answers about imports, or None."""
    for server in running_servers():
        try:
            call(server, "GET", API, timeout=timeout)
        except (ServerRefused, OSError, ValueError):
            continue  # no Asgard extension (or one without imports), or not answering
        return server
    return None


async def follow(runner: ImportRunner, uri: str, name: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Start the import and say each new status line until it has ended; its last JSON. Ctrl-C cancels the
    import, whose JSON then says "cancelled" (a second Ctrl-C stops waiting for that). Refusals raise
    AsgardError."""
    latest = await runner.start(uri, name)
    say(f"importing {latest['uri']} as {latest['path']} {runner.where}")

    async def watch() -> None:
        nonlocal latest
        shown = ""
        while latest["state"] in RUNNING:
            if latest["status"] != shown:
                shown = latest["status"]
                say(shown)
            latest = await runner.next(latest["id"])

    watching = asyncio.ensure_future(watch())
    loop = asyncio.get_running_loop()
    interrupts = 0

    def interrupted() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts > 1:
            raise KeyboardInterrupt
        watching.cancel()

    # Ctrl-C ends the watch, not this coroutine: the cancel below runs as usual (on every Python since 3.10).
    loop.add_signal_handler(signal.SIGINT, interrupted)
    try:
        await watching
    except asyncio.CancelledError:
        if not interrupts:
            raise
        say("interrupted: cancelling the import ...")
        try:
            latest = await runner.cancel(latest["id"])
        except AsgardError as error:  # it ended just now: how it ended is what counts
            say(f"not cancelled: {error.message}")
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    return latest


def run_import(uri: str, name: str, as_json: bool, command: str) -> int:
    """The command: the import's outcome printed, its exit status returned."""

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        server = server_for_imports()
        runner: ImportRunner = ServerImports(server) if server is not None else LocalImports()
        found = asyncio.run(follow(runner, uri, name, say))
    except KeyboardInterrupt:  # before the import started, or a second Ctrl-C while the first one's cancel ran
        say(f"{command}: interrupted; an import that had started may still run (`squeue --me` shows its job)")
        return INTERRUPTED
    except AsgardError as error:
        return fail(command, error.message, error.hint)
    if as_json:
        print(json.dumps(found, indent=1))
    if found["state"] == "imported":
        if not as_json:
            print(found["path"])
        return 0
    if found["state"] == "cancelled":
        say(f"{command}: cancelled: nothing of {found['uri']} was kept")
        return INTERRUPTED
    return fail(command, found["message"] or found["status"], found.get("hint", ""))


def fail(command: str, message: str, hint: str) -> int:
    print(f"{command}: error: {message}", file=sys.stderr)
    if hint:
        print(f"How to fix: {hint}", file=sys.stderr)
    return 1
