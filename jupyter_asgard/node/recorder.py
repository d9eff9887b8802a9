"""Runs inside a detachable kernel's container beside the bootstrap, with the kernel's own python3 and pyzmq.

While no Jupyter server holds a detachable kernel, whatever its running cell prints goes out on IOPub to
nobody. This process subscribes to the kernel's IOPub from its start and prints each output (stream text,
errors, results as text/plain) and each change of its execution state as one line on the step's stdout,
``ASGARD-IOPUB {json}``, with when it came; the keeper on the node (keeper.py) keeps the last of them for the
next server, which shows those that came after the last server let go.

Each output names the execute request it answers (``cell``: the request's msg_id), a request's start is an
``input`` entry (while it is kept, so is everything the request printed), and a request that ends
(the kernel idle after it) is printed as ``done`` with its execution count, whether it raised and when it was
sent: the reply to a request sent through a server that has gone reaches nobody, so the browser tab that sent
it would wait for it forever; with these, it shows the cell finished.

Started by the bootstrap as ``PYTHON -c <this source> CONFIG_JSON`` (the IOPub address), with the Curve keys
in its environment where the kernel encrypts (never on a command line). It ends with the step.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

RECORD = "ASGARD-IOPUB "
DELIMITER = b"<IDS|MSG>"
IGNORED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")  # the kernel's signals: the bootstrap ends this one


def entry(header: dict[str, Any], parent: dict[str, Any], content: dict[str, Any]) -> dict[str, Any] | None:
    """What one IOPub message says to a person, or None for one that says nothing to them."""
    found = _entry(header.get("msg_type"), parent, content)
    if found is not None and parent.get("msg_type") == "execute_request" and parent.get("msg_id"):
        found["cell"] = str(parent["msg_id"])
    return found


def _entry(kind: Any, parent: dict[str, Any], content: dict[str, Any]) -> dict[str, Any] | None:
    if kind == "execute_input":  # where a cell's outputs start: kept, the record holds all of them
        return dict(kind="input", text="")
    if kind == "stream":
        return dict(kind="stream", name=content.get("name", "stdout"), text=str(content.get("text", "")))
    if kind == "error":
        return dict(kind="error", text="{}: {}".format(content.get("ename", ""), content.get("evalue", "")))
    if kind in ("execute_result", "display_data"):
        text = (content.get("data") or {}).get("text/plain")
        return dict(kind="result", text=str(text)) if text else None
    if kind == "status" and parent.get("msg_type") == "execute_request":
        return dict(kind="status", text=str(content.get("execution_state", "")))
    return None


class Requests:
    """What each execute request came to, until the kernel is idle after it: its execution count (from
    execute_input) and whether it raised."""

    def __init__(self) -> None:
        self.counts: dict[str, Any] = {}
        self.failed: set[str] = set()

    def done(self, header: dict[str, Any], parent: dict[str, Any], content: dict[str, Any]) -> dict[str, Any] | None:
        """The ``done`` entry of the request this message ends, else None."""
        cell = str(parent.get("msg_id") or "") if parent.get("msg_type") == "execute_request" else ""
        kind = header.get("msg_type")
        if not cell:
            return None
        if kind == "execute_input":
            self.counts[cell] = content.get("execution_count")
        elif kind == "error":
            self.failed.add(cell)
        elif kind == "status" and content.get("execution_state") == "idle":
            status = "error" if cell in self.failed else "ok"
            self.failed.discard(cell)
            count, sent = self.counts.pop(cell, None), str(parent.get("date") or "")
            return dict(kind="done", cell=cell, count=count, status=status, sent=sent)
        return None


def main() -> None:
    for name in IGNORED:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    import zmq

    config = json.loads(sys.argv[1])
    socket: Any = zmq.Context.instance().socket(zmq.SUB)
    public, secret = os.environ.get("ASGARD_CURVE_PUBLICKEY"), os.environ.get("ASGARD_CURVE_SECRETKEY")
    if config.get("curve") and public and secret:
        socket.curve_serverkey, socket.curve_publickey, socket.curve_secretkey = (
            public.encode(),
            public.encode(),
            secret.encode(),
        )
    socket.setsockopt(zmq.SUBSCRIBE, b"")
    socket.connect(config["url"])
    requests = Requests()
    while True:
        frames = socket.recv_multipart()
        if DELIMITER not in frames:
            continue
        parts = frames[frames.index(DELIMITER) + 2 :]  # after the signature: header, parent, metadata, content
        try:
            header, parent, _metadata, content = (json.loads(part) for part in parts[:4])
        except ValueError:
            continue
        for found in (entry(header, parent, content), requests.done(header, parent, content)):
            if found is not None:
                found["time"] = time.time()
                print(RECORD + json.dumps(found), flush=True)


if __name__ == "__main__":
    main()
