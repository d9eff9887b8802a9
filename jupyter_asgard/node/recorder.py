"""Runs inside a detachable kernel's container beside the bootstrap, with the kernel's own python3 and pyzmq.

While no Jupyter server holds a detachable kernel, whatever its running cell prints goes out on IOPub to
nobody. This process subscribes to the kernel's IOPub from its start and prints each output (stream text,
errors, results as text/plain) and each change of its execution state as one line on the step's stdout,
``ASGARD-IOPUB {json}``, with when it came; the keeper on the node (keeper.py) keeps the last of them for the
next server, which shows those that came after the last server let go.

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
    kind = header.get("msg_type")
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
    while True:
        frames = socket.recv_multipart()
        if DELIMITER not in frames:
            continue
        parts = frames[frames.index(DELIMITER) + 2 :]  # after the signature: header, parent, metadata, content
        try:
            header, parent, _metadata, content = (json.loads(part) for part in parts[:4])
        except ValueError:
            continue
        found = entry(header, parent, content)
        if found is not None:
            found["time"] = time.time()
            print(RECORD + json.dumps(found), flush=True)


if __name__ == "__main__":
    main()
