"""The test registry's token server: Docker's token authentication, as nvcr.io and Docker Hub use it.

A client asks the registry for a manifest and gets ``401`` with ``WWW-Authenticate: Bearer realm=...,
service=..., scope=repository:REPO:pull``; it then asks this server (the realm) for a token, with its user
name and password (HTTP Basic, which enroot takes from the user's ``.credentials``), and retries with
``Authorization: Bearer TOKEN``.  The token is a JWT signed ES256 with the cluster's key; its ``x5c`` header
carries the certificate the registry trusts (its ``rootcertbundle``), and its ``access`` claim grants the
requested actions the account may do (pull for the tests' user, pull and push for the cluster's own push).
A wrong password gets ``401``, as from NGC, so enroot says ``401 Unauthorized``.

Run as ``python3 token_server.py CONFIG.json`` (standard library only, and ``openssl`` to sign): the
cluster starts it as one of its daemons, beside ``docker-registry``, and it logs each request to stderr.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

TOKEN_PATH = "/token"
LIFETIME = 300  # seconds; the registry allows 60 s of clock skew either way


@dataclass(frozen=True)
class Settings:
    """What the cluster writes into CONFIG.json (tests/cluster/registry.py)."""

    host: str
    port: int
    service: str  # the registry's auth.token.service: a token for another service is refused
    issuer: str  # the registry's auth.token.issuer
    key: str  # PEM EC P-256 private key that signs the tokens
    certificate: str  # PEM certificate of that key, the registry's rootcertbundle
    passwords: dict[str, str]  # user -> password
    actions: dict[str, list[str]]  # user -> what the user may do: "pull", "push"

    @classmethod
    def load(cls, path: Path) -> Settings:
        return cls(**json.loads(path.read_text()))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws_signature(der: bytes) -> bytes:
    """openssl's ECDSA signature (DER: SEQUENCE {INTEGER r, INTEGER s}) as JWS ES256 wants it: r and s as 32
    big-endian bytes each (RFC 7518, 3.4).  A P-256 signature is at most 72 bytes: every length is one byte."""
    if der[0] != 0x30:
        raise ValueError("not a DER ECDSA signature")
    values, index = [], 2
    for _ in range(2):
        if der[index] != 0x02:
            raise ValueError("not a DER ECDSA signature")
        length = der[index + 1]
        values.append(int.from_bytes(der[index + 2 : index + 2 + length], "big"))
        index += 2 + length
    return b"".join(value.to_bytes(32, "big") for value in values)


def sign(settings: Settings, header: dict[str, object], claims: dict[str, object]) -> str:
    """A compact JWS of claims, signed ES256 with the cluster's key by openssl (the standard library has no
    elliptic curves; a token is asked for once per pull, so a process per token costs nothing that shows)."""
    signed = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    der = subprocess.run(
        ["openssl", "dgst", "-sha256", "-sign", settings.key],
        input=signed.encode(),
        capture_output=True,
        check=True,
    ).stdout
    return f"{signed}.{b64url(jws_signature(der))}"


def granted(scopes: list[str], allowed: list[str]) -> list[dict[str, object]]:
    """The access claim: of each requested `repository:NAME:ACTIONS` scope, the actions the account may do
    (a name may hold `:` before a port, so the actions are after the last one).  Other resource types (the
    catalog) are granted nothing, as to an ordinary NGC user."""
    access = []
    for scope in scopes:
        kind, _, rest = scope.partition(":")
        name, _, actions = rest.rpartition(":")
        if kind != "repository" or not name:
            continue
        permitted = [action for action in actions.split(",") if action in allowed]
        access.append({"type": kind, "name": name, "actions": permitted})
    return access


class TokenHandler(BaseHTTPRequestHandler):
    settings: Settings  # set on the class by serve()
    certificate_der: str

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != TOKEN_PATH:
            self._answer(404, {"errors": [{"code": "NOT_FOUND", "message": f"no {url.path} here"}]})
            return
        query = parse_qs(url.query)
        service = query.get("service", [""])[0]
        if service != self.settings.service:
            self._answer(400, {"errors": [{"code": "UNSUPPORTED", "message": f"unknown service {service!r}"}]})
            return
        user = self._authenticated()
        if user is None:
            self._answer(
                401,
                {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]},
                {"WWW-Authenticate": f'Basic realm="{self.settings.issuer}"'},
            )
            return
        now = int(time.time())
        claims = {
            "iss": self.settings.issuer,
            "sub": user,
            "aud": service,
            "exp": now + LIFETIME,
            "nbf": now - 1,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": granted(query.get("scope", []), self.settings.actions[user]),
        }
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self.certificate_der]}
        token = sign(self.settings, header, claims)
        issued = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now))
        self.log_message("token for %s: %s", user, json.dumps(claims["access"]))
        self._answer(200, {"token": token, "access_token": token, "expires_in": LIFETIME, "issued_at": issued})

    def _authenticated(self) -> str | None:
        """The account whose user name and password came with the request (HTTP Basic); None otherwise."""
        kind, _, value = self.headers.get("Authorization", "").partition(" ")
        if kind.lower() != "basic":
            self.log_message("no credentials")
            return None
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            self.log_message("malformed credentials")
            return None
        expected = self.settings.passwords.get(user)
        if expected is None or not hmac.compare_digest(expected.encode(), password.encode()):
            self.log_message("wrong user name or password for %r", user)
            return None
        return user

    def _answer(self, status: int, body: dict[str, object], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def serve(settings: Settings) -> None:
    TokenHandler.settings = settings
    TokenHandler.certificate_der = base64.b64encode(
        ssl.PEM_cert_to_DER_cert(Path(settings.certificate).read_text())
    ).decode()
    with ThreadingHTTPServer((settings.host, settings.port), TokenHandler) as server:
        server.serve_forever()


if __name__ == "__main__":
    serve(Settings.load(Path(sys.argv[1])))
