"""Runs inside the kernel's container beside the bootstrap, with the kernel's own python3 and pyzmq.

An Asgard kernel listens on the compute node, where any user of the cluster can
reach its ports. Encrypted with CurveZMQ, nobody without the kernel's keys can
read or send it anything. ipykernel encrypts by itself from 7.4 on (the
bootstrap tells); older ones (NGC PyTorch 23.12 has ipykernel 6) do not, so for
those the kernel binds on
ZMQ's ``ipc`` transport in the bootstrap's private ``0700`` directory and this
process listens on the node's address in its place, as a Curve server, one
socket per channel, relaying to the kernel's sockets. The Jupyter server's side
does not change: jupyter_client connects as a Curve client either way.

Started by the bootstrap as ``PYTHON -c <this source> CONFIG_JSON`` with the
keys in its environment (``ASGARD_CURVE_*``, never on a command line), it says
``proxy`` on stdout at once, so the kernel may start (on ipc) while the proxy's
own start (importing pyzmq, binding) goes on beside it; then one more line:

- ``ready``: the proxy listens on every port and relays until the bootstrap ends it;
- ``ready-plain <why>``: this pyzmq cannot encrypt and the site's policy is
  "auto": the proxy relays in the clear (the kernel still binds on ipc);
- the bootstrap's failure prefix and why (the policy is "required" and this
  pyzmq cannot encrypt, a port another process took, ...).

Routing through the relay: a ROUTER in front (as the kernel's own sockets are)
and a DEALER behind keep each client's identity in the envelope. The kernel
addresses a cell's ``input_request`` on stdin to the identities of the shell
request that ran it, so the DEALERs behind shell and stdin present one and the
same identity to the kernel. IOPub goes through an XPUB/XSUB pair, which passes
each client's subscription on to the kernel, and the heartbeat through a
ROUTER/DEALER pair like the others.

A Curve server accepts any client that knows its public key. jupyter_client's
clients present the kernel's own key pair, so the proxy also answers ZeroMQ's
authentication requests (ZAP) and lets in that key alone: a client with a key
pair of its own is refused even if the kernel's public key got out. The
heartbeat is the exception: jupyter_client's heartbeat connects with a key pair
of its own, and what it can do there is have its own bytes echoed.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# The bootstrap's, repeated (each is sent to the node as source of its own; a test keeps them equal): its
# failure prefix, which srun relays to the provisioner, and its port names, in the order the ipc sockets
# are numbered.
FAILURE = "ASGARD-ERROR "
CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
# Signals Slurm sends every process of the step: they are the kernel's; the bootstrap ends this one.
IGNORED = ("SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2")


def no_curve() -> str:
    """Why this pyzmq cannot encrypt, or "" if it can."""
    try:
        import zmq
    except ImportError as error:
        return "its python has no pyzmq ({})".format(error)
    if zmq.has("curve"):
        return ""
    return "its pyzmq {} (libzmq {}) was built without CurveZMQ".format(zmq.__version__, zmq.zmq_version())


HEARTBEAT_DOMAIN = b"heartbeat"  # the ZAP domain where any Curve client is let in (see above)


def admit_only(context: Any, public_key: bytes) -> None:
    """Answer ZAP requests on the context: a Curve client presenting public_key is let in, any other only
    to the heartbeat."""
    import zmq
    from zmq.utils import z85

    allowed = z85.decode(public_key)
    handler = context.socket(zmq.REP)
    handler.bind("inproc://zeromq.zap.01")  # ZeroMQ asks here before it admits a client to a Curve server

    def serve() -> None:
        while True:
            version, request_id, domain, _address, _identity, mechanism, *credentials = handler.recv_multipart()
            admitted = mechanism == b"CURVE" and (domain == HEARTBEAT_DOMAIN or credentials[:1] == [allowed])
            status = [b"200", b"OK"] if admitted else [b"400", b"not the kernel's client key"]
            handler.send_multipart([version, request_id, *status, b"", b""])

    threading.Thread(target=serve, daemon=True).start()


def proxy_sockets(context: Any, config: dict[str, Any], encrypt: bool) -> list[tuple[Any, Any]]:
    """Bind the front sockets on the node's ports (as Curve servers where encrypt) and connect the back ones
    to the kernel."""
    import zmq

    kinds = {"iopub_port": (zmq.XPUB, zmq.XSUB)}
    identity = os.urandom(16)  # one identity behind shell and stdin: input requests follow the shell's route
    pairs = []
    for index, channel in enumerate(CHANNELS, start=1):
        front_kind, back_kind = kinds.get(channel, (zmq.ROUTER, zmq.DEALER))
        front = context.socket(front_kind)
        if encrypt:
            front.curve_server = True
            front.zap_domain = HEARTBEAT_DOMAIN if channel == "hb_port" else b"kernel"
            front.curve_secretkey = os.environ["ASGARD_CURVE_SECRETKEY"].encode()
            front.curve_publickey = os.environ["ASGARD_CURVE_PUBLICKEY"].encode()
        if front_kind == zmq.XPUB:
            front.setsockopt(zmq.XPUB_VERBOSE, 1)  # every client's subscription reaches the kernel
        front.linger = 1000
        front.bind("tcp://{}:{}".format(config["ip"], config["ports"][channel]))
        back = context.socket(back_kind)
        if channel in ("shell_port", "stdin_port"):
            back.identity = identity
        back.setsockopt(zmq.RECONNECT_IVL, 10)  # the kernel binds moments from now
        back.linger = 1000
        back.connect("ipc://{}-{}".format(config["ipc"], index))
        pairs.append((front, back))
    return pairs


def relay(config: dict[str, Any], why_plain: str) -> None:
    """Listen on the node's ports and relay to the kernel, encrypted unless why_plain says why not."""
    try:
        import zmq
    except ImportError as error:
        print("{}the image's python has no pyzmq for the kernel's proxy ({})".format(FAILURE, error), flush=True)
        sys.exit(1)

    # Two I/O threads: the kernel's side (ipc) and the clients' (tcp, encrypting) work at once. With one, a
    # cell printing megabytes went 12% slower through the proxy (measured with this machine's ipykernel).
    context = zmq.Context(io_threads=2)
    try:
        if not why_plain:
            admit_only(context, os.environ["ASGARD_CURVE_PUBLICKEY"].encode())
        pairs = proxy_sockets(context, config, encrypt=not why_plain)
    except zmq.ZMQError as error:
        print("{}the kernel's encrypting proxy cannot listen: {}".format(FAILURE, error), flush=True)
        sys.exit(1)
    for front, back in pairs:
        threading.Thread(target=zmq.proxy, args=(front, back), daemon=True).start()
    print("ready-plain " + why_plain if why_plain else "ready", flush=True)
    parent = os.getppid()
    while os.getppid() == parent:  # the bootstrap ends this process; were it killed, so is this one
        time.sleep(0.5)
    os._exit(0)


def main() -> None:
    for name in IGNORED:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    config = json.loads(sys.argv[1])
    print("proxy", flush=True)
    why = no_curve()
    if why and os.environ.get("ASGARD_ENCRYPTION") == "required":
        print(
            f"{FAILURE}this site requires encrypted kernels, but the image cannot encrypt: {why}. Use an image "
            "whose pyzmq has CurveZMQ (pip's pyzmq wheels do) or ipykernel >= 7.4",
            flush=True,
        )
        sys.exit(1)
    relay(config, why)


if __name__ == "__main__":
    main()
