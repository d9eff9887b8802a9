"""Which line on the step's stdout is the bootstrap's handshake, and which is only the kernel's output.

The kernel shares that stdout with the bootstrap, and code runs in the kernel before the handshake is
printed (a module planted in a shared notebook directory, which is the kernel's sys.path[0]). Such code
could print a line that looks like the handshake, naming another address or `"encryption": "none"`.
The bootstrap's own line carries a nonce that is new for every start and reaches the node only in the
step's environment (which the bootstrap keeps out of the kernel's), and a line counts only if it carries
that nonce and every field is well formed. Anything else is kernel output.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from typing import Any

from ..launch.encryption import MODES
from ..node.bootstrap import HANDSHAKE, PORT_NAMES


def new_nonce() -> str:
    """A secret for one start of the step."""
    return secrets.token_hex(16)


def parse_handshake(line: str, nonce: str) -> tuple[str, dict[str, Any]] | None:
    """(the kernel's output before the handshake, the handshake), or None where the line holds no genuine one.

    The kernel's banner may end without a newline just before the handshake (the bootstrap writes it in
    one piece, so it is never split and always ends the line): the last marker is the one that counts."""
    before, marker, text = line.rpartition(HANDSHAKE)
    if not marker:
        return None
    try:
        handshake = json.loads(text)
    except ValueError:
        return None
    return (before, handshake) if well_formed(handshake, nonce) else None


def well_formed(handshake: Any, nonce: str) -> bool:
    """Whether handshake is a JSON object with this start's nonce and usable values in every field."""
    if not isinstance(handshake, dict) or not nonce:
        return False
    if not hmac.compare_digest(str(handshake.get("nonce", "")).encode(), nonce.encode()):
        return False
    ports = [handshake.get(name) for name in PORT_NAMES]
    if not all(type(port) is int and 0 < port < 65536 for port in ports):
        return False
    if not all(isinstance(handshake.get(name), str) for name in ("ip", "node", "step")):
        return False
    return valid_ip(handshake["ip"]) and handshake.get("encryption") in MODES


def valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
