"""Which notebook a kernel serves, as a path under the server's root: what the kernel rows show.

JupyterLab first opens a notebook's session under a made-up path and renames it once the kernel is up, and a
kernel still in the queue has no session at all: the path it was started for (JPY_SESSION_NAME, absolute)
is the truth until the session knows better.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

PLACEHOLDER = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def is_placeholder_path(path: str) -> bool:
    """A session path JupyterLab made up (a bare UUID) before it renames the session to its notebook's."""
    return bool(PLACEHOLDER.fullmatch(path.rsplit("/", 1)[-1]))


def api_path(root_dir: str, session_name: str) -> str:
    """The kernel's own notebook path, relative to the server's root as the contents API writes paths."""
    root = os.path.abspath(root_dir)
    if not session_name.startswith(root + os.sep):
        return session_name
    return os.path.relpath(session_name, root).replace(os.sep, "/")


def session_paths(sessions: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Kernel id to notebook path, from jupyter_server's sessions, placeholders left out."""
    return {
        session["kernel"]["id"]: session.get("path", "")
        for session in sessions
        if session.get("kernel") and not is_placeholder_path(session.get("path", ""))
    }


def notebook_path(kernel_id: str, session_name: str, sessions: Mapping[str, str], root_dir: str) -> str:
    return sessions.get(kernel_id) or api_path(root_dir, session_name)
