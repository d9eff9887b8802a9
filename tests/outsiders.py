"""Another user of the cluster at an encrypted kernel's ports: what they can hear and make it do."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import zmq
from jupyter_client.session import Session

PLAIN_SUBSCRIBER = "a plain IOPub subscriber"
GUESSING_SUBSCRIBER = "a Curve subscriber with keys of its own"
KNOWING_SUBSCRIBER = "a Curve subscriber with keys of its own that knows the kernel's public key"
PLAIN_SHELL = "a plain shell client (a reply)"


def _curve_subscriber(context: zmq.Context[Any], server_key: bytes) -> zmq.Socket[Any]:
    socket = context.socket(zmq.SUB)
    socket.curve_serverkey = server_key
    socket.curve_publickey, socket.curve_secretkey = zmq.curve_keypair()
    return socket


@contextmanager
def outsiders(info: Mapping[str, Any]) -> Iterator[Callable[[], list[str]]]:
    """Outsiders at the kernel of connection info info: on IOPub a plain SUB, and Curve clients with key
    pairs of their own, one that must guess the kernel's public key and one that knows it; on the shell port
    a plain DEALER sending a kernel_info_request signed with the real session key. Keys as jupyter_client
    gives them (str in get_connection_info). Yields a function that
    says which of them received anything, to call in the block once it ran a cell that printed."""
    context: zmq.Context[Any] = zmq.Context.instance()
    address = f"tcp://{info['ip']}:"
    subscribers = {
        PLAIN_SUBSCRIBER: context.socket(zmq.SUB),
        GUESSING_SUBSCRIBER: _curve_subscriber(context, zmq.curve_keypair()[0]),
        KNOWING_SUBSCRIBER: _curve_subscriber(context, str(info["curve_publickey"]).encode()),
    }
    shell = context.socket(zmq.DEALER)
    try:
        for socket in subscribers.values():
            socket.setsockopt(zmq.SUBSCRIBE, b"")
            socket.connect(address + str(info["iopub_port"]))
        shell.connect(address + str(info["shell_port"]))
        session = Session(key=info["key"], signature_scheme=info.get("signature_scheme", "hmac-sha256"))
        try:  # the handshake fails, so there may be no connection to queue the request on
            shell.send_multipart(session.serialize(session.msg("kernel_info_request", {})), zmq.NOBLOCK)
        except zmq.Again:
            pass

        def heard() -> list[str]:
            found = [name for name, socket in subscribers.items() if socket.poll(1000)]
            return found + ([PLAIN_SHELL] if shell.poll(200) else [])

        yield heard
    finally:
        for socket in (*subscribers.values(), shell):
            socket.close(linger=0)
