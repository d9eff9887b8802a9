"""Requests from the `jupyter asgard` commands to this user's running Jupyter servers' REST API.

Blocking (the commands are scripts), standard library only, authenticated with each server's own token as
jupyter_server's runtime files list it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from ..errors import ServerRefused


def call(server: dict[str, Any], method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    """The JSON answer; ServerRefused for an HTTP error, OSError when the server does not answer."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(server.get("url", "").rstrip("/") + path, data=data, method=method)
    if server.get("token"):
        request.add_header("Authorization", f"token {server['token']}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            raw = answer.read()
    except urllib.error.HTTPError as error:
        message, hint = _refusal(error.read())
        raise ServerRefused(error.code, message or f"HTTP {error.code} ({error.reason})", hint) from None
    return json.loads(raw) if raw else None


def _refusal(raw: bytes) -> tuple[str, str]:
    """The message and hint of the server's refusal (handlers.py's JSON), "" where it has none."""
    try:
        answer = json.loads(raw)
    except ValueError:
        return "", ""
    if not isinstance(answer, dict):
        return "", ""
    return str(answer.get("message", "")), str(answer.get("hint", ""))


def running_servers() -> list[dict[str, Any]]:
    """This user's Jupyter servers (JUPYTER_RUNTIME_DIR is honoured)."""
    # Imported here: it takes seconds to import, which commands that need no server would pay.
    from jupyter_server.serverapp import list_running_servers

    return list(list_running_servers())


def server_of_kernel(kernel_id: str, timeout: float = 5.0) -> tuple[dict[str, Any], str]:
    """The server running the Asgard kernel whose id is or starts with kernel_id, and its full id; LookupError
    saying what was found instead."""
    matches = []
    for server in running_servers():
        try:
            rows = call(server, "GET", "/asgard/api/kernels", timeout=timeout)["kernels"]
        except (ServerRefused, OSError, ValueError, KeyError, TypeError):
            continue  # no Asgard extension, or not answering: it runs none of this user's kernels here
        matches += [(server, row["kernel_id"]) for row in rows if row["kernel_id"].startswith(kernel_id)]
    if not matches:
        raise LookupError(f"no running Jupyter server has an Asgard kernel {kernel_id!r}: see `jupyter asgard status`")
    full_id = unique_match(kernel_id, [match[1] for match in matches])
    return next(match for match in matches if match[1] == full_id)


def unique_match(kernel_id: str, known: list[str]) -> str | None:
    """The one known id that is or starts with kernel_id (status shows ids cut short), None where none is;
    LookupError where it starts several."""
    matches = sorted({known_id for known_id in known if known_id.startswith(kernel_id)})
    if len(matches) > 1:
        raise LookupError(f"{kernel_id!r} names {len(matches)} kernels: give more of the kernel id")
    return matches[0] if matches else None
