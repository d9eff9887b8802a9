"""An image import on a compute node, as its importer (node/importer.py) reports it: where it stands, and why it
failed, in the user's words.

The importer runs ``enroot import`` (or ``enroot digest``) as a Slurm step and prints a line per event; the
definitions of those lines are the importer's own (imported here). ImportProgress follows them for a status
bar; import_failure turns enroot's words (captured from enroot 4.1.2 against a registry with token
authentication, see tests/test_image_import_progress.py) into a message and a hint. valid_uri_problem is what
the server refuses before it asks Slurm for anything, and cache_file_name names a digest's imported image.
"""

from __future__ import annotations

import posixpath
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..node.importer import (
    DIGEST,
    JOB,
    LAYERS,
    LOG,
    NO_ENROOT,
    PATH,
    PATHS,
    PERCENT,
    PHASE,
    PHASES,
    event,
    parse_event,
)
from .images import DIGEST_MARK, SQUASHFS_SUFFIX, parse_image_uri

MAX_LOG_LINES = 200  # enroot's last lines kept (a full temporary directory makes tar say so for every file)
MAX_URI_LENGTH = 1024
DOCKER = "docker://"
DOCKER_HUB = "registry-1.docker.io"  # where enroot pulls an image that names no registry
URI_FORM = "docker://[USER@][REGISTRY#]IMAGE[:TAG] (e.g. docker://nvcr.io#nvidia/pytorch:24.05-py3)"
DIGEST_TEXT = re.compile(r"sha256:[0-9a-f]{64}\Z")
# The parts of a reference: the user's characters that enroot 4.1.2 takes (docker::_parse_uri), the others as
# Docker's reference grammar has them (registries refuse other names; enroot takes some, e.g. "a//b").
ENROOT_USER = re.compile(r"[A-Za-z0-9_.!~*'()%;:&=+$,\-/<>?@]+\Z")
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
REPOSITORY = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*\Z")
_HOST = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
REGISTRY = re.compile(rf"{_HOST}(?:\.{_HOST})*(?::[0-9]{{1,5}})?\Z")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
PHASE_WORDS = {
    "": "starting the import",
    "authenticating": "authenticating with the registry",
    "manifest": "fetching the image manifest",
    "downloading": "downloading layers",
    "extracting": "extracting layers",
    "converting": "converting whiteouts",
    "squashfs": "creating the squashfs image",
}


@dataclass
class ImportProgress:
    """Where an import (or a digest lookup) stands, from the importer's lines fed to it one by one."""

    phase: str = ""  # one of PHASES, "" before the first
    layers_done: int = 0  # layers downloaded, of layers_total missing from the node's cache
    layers_total: int = 0
    digest: str = ""  # what `enroot digest` printed (sha256:HEX)
    log: list[str] = field(default_factory=list)  # enroot's last MAX_LOG_LINES lines
    percent: int = -1  # mksquashfs's progress in phase "squashfs" (-1: not known)
    paths: dict[str, str] = field(default_factory=dict)  # after a failure: enroot's directories (PATHS' names)
    job_id: str = ""  # where the importer runs, once it runs
    node: str = ""

    def feed(self, line: str) -> bool:
        """Take one line of the importer's stdout. True when what describe() says changed (a new phase, layer
        count, percentage or digest); enroot's log lines are kept, and change nothing there."""
        event = parse_event(line)
        if event is None:  # not the importer's: keep it with enroot's lines
            if line.strip():
                self._keep(line.rstrip("\r\n"))
            return False
        kind, fields = event
        before = (self.phase, self.layers_done, self.layers_total, self.percent, self.digest)
        if kind == PHASE and fields and fields[0] in PHASES:
            self.phase, self.percent = fields[0], -1
        elif kind == LAYERS and len(fields) == 2 and all(number.isdigit() for number in fields):
            self.layers_done, self.layers_total = int(fields[0]), int(fields[1])
        elif kind == PERCENT and len(fields) == 1 and fields[0].isdigit():
            self.percent = min(int(fields[0]), 100)
        elif kind == DIGEST and fields and DIGEST_TEXT.match(fields[0]):
            self.digest = fields[0]
        elif kind == LOG:
            self._keep(fields[0])
        elif kind == JOB and len(fields) == 2:
            self.job_id, self.node = fields
        elif kind == PATH and fields[0] in PATHS and fields[1]:
            self.paths[fields[0]] = fields[1]
        return (self.phase, self.layers_done, self.layers_total, self.percent, self.digest) != before

    def _keep(self, text: str) -> None:
        self.log.append(text)
        del self.log[:-MAX_LOG_LINES]

    def describe(self) -> str:
        """What a status bar shows: "downloading layers 2 of 5", "creating the squashfs image (40%)"."""
        words = PHASE_WORDS.get(self.phase, self.phase)
        if self.phase == "downloading" and self.layers_total:
            return f"{words} {self.layers_done} of {self.layers_total}"
        if self.phase == "squashfs" and self.percent >= 0:
            return f"{words} ({self.percent}%)"
        return words

    def failure(self, uri: str, stderr: Iterable[str] = ()) -> tuple[str, str]:
        """import_failure from what was fed: enroot's last lines, in the phase the import ended in (where enroot
        stopped), its directories, and srun's stderr."""
        known = [event(PATH, name, directory) for name, directory in self.paths.items()]
        known += [event(PHASE, self.phase)] if self.phase else []
        return import_failure([*known, *(event(LOG, text) for text in self.log), *stderr], uri)

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "description": self.describe(),
            "layers_done": self.layers_done,
            "layers_total": self.layers_total,
            "percent": self.percent if self.percent >= 0 else None,
            "digest": self.digest,
            "log": list(self.log),
        }


def valid_uri_problem(uri: str) -> str:
    """Why uri is no image the server asks a compute node to import ("" when it is): the server refuses it
    before asking Slurm for anything. What passes, enroot 4.1.2's `enroot import` takes (its
    docker::_parse_uri; tests/test_image_import_progress.py checks that against it), with Docker's stricter
    grammar for each part, as registries have it; only docker:// images: dockerd:// and podman:// need a
    daemon on the node."""
    if not uri:
        return f"name the image to import: {URI_FORM}"
    if len(uri) > MAX_URI_LENGTH:
        return f"the image reference is {len(uri)} characters long; at most {MAX_URI_LENGTH} are allowed"
    unusable = next((c for c in uri if c.isspace() or not c.isprintable() or c == ","), "")
    if unusable:
        return f"the image reference {uri!r} contains {unusable!r}: write it as {URI_FORM}"
    if not uri.startswith(DOCKER):
        scheme, separator, _ = uri.partition("://")
        if separator:
            return f"{uri!r}: only docker:// images can be imported on a compute node, not {scheme}:// images"
        if uri.startswith(("/", ".")):
            return f"{uri!r} is a path: a squashfs file is an image already, there is nothing to import"
        if not valid_uri_problem(DOCKER + uri):
            return f"{uri!r}: write it with the scheme, as enroot imports it: {DOCKER}{uri}"
        return f"{uri!r} is not an image reference: write it as {URI_FORM}"
    user, name = parse_image_uri(uri)
    named = uri[len(DOCKER) :].rpartition(DIGEST_MARK)[0] if name.digest else uri[len(DOCKER) :]
    parts = (
        ("user name", user, ENROOT_USER, "@" in named, "letters, digits and _.!~*'()%;:&=+$,-/<>?@ only"),
        ("registry", name.registry, REGISTRY, bool(name.registry), "a host name or address, with :PORT if needed"),
        ("image name", name.repository, REPOSITORY, True, "lowercase, as NAMESPACE/NAME"),
        ("tag", name.tag, TAG, named.endswith(":") or bool(name.tag), "letters, digits, '_', '.' and '-', at most 128"),
        ("digest", name.digest, DIGEST_TEXT, bool(name.digest), "sha256: and 64 lowercase hexadecimal digits"),
    )
    for what, value, grammar, given, rule in parts:
        if given and not grammar.match(value):
            return f"{uri!r} is not an image reference enroot imports: the {what} {value!r} is not {rule}"
    return ""


def cache_file_name(digest: str) -> str:
    """The file name of the image imported from manifest digest (sha256:HEX): sha256-HEX.sqsh."""
    if not DIGEST_TEXT.match(digest):
        raise ValueError(f"not a manifest digest (sha256: and 64 hexadecimal digits): {digest!r}")
    return digest.replace(":", "-") + SQUASHFS_SUFFIX


# --- why an import failed -----------------------------------------------------------------------------------

HTTP_ERROR = re.compile(r"URL (\S+) returned error code: (\d+) ?(.*)")
CURL_ERROR = re.compile(r"curl: \((\d+)\) (.*)")
CONNECT = re.compile(r"Failed to connect to (\S+) port (\d+)(?: after \d+ ms)?: (.*)")
RESOLVE = re.compile(r"Could not resolve host: (\S+)")
MANIFEST_URL = re.compile(r"/v2/(.+)/manifests/([^/]+)\Z")
FULL = {"No space left on device": "no space is left", "Disk quota exceeded": "your disk quota is exceeded"}
OUTPUT_WRITE = ("Write failed because",)  # mksquashfs's words for a failed write of the image
SQUASHFS_TARGET = re.compile(r"Creating [\d.]+ filesystem on (.+), block size \d+")
AUTHENTICATING = re.compile(r"\[INFO\] Authenticating with user: (.*)")
FROM_FILE = re.compile(r"\[INFO\] Using credentials from file: (.*)")
PASSWORD_PROMPT = re.compile(r"Enter host password for user '(.*)':")
LEVEL = re.compile(r"\[(?:ERROR|WARN|INFO)\] ")
NO_PROGRAM = re.compile(r"execve\(\): (\S+): No such file or directory")
INVALID = re.compile(r"\[ERROR\] Invalid (?:image reference|argument): (.*)")
EXISTS = re.compile(r"\[ERROR\] File already exists: (.*)")
# srun's words for any task that failed: they say nothing enroot did not.
NOISE = re.compile(r"srun: error: \S+: task \d+: Exited with exit code|srun: Job step aborted")


@dataclass
class _Output:
    """The importer's output read back: enroot's lines (and srun's), with the phase each came in."""

    lines: list[tuple[str, str]]  # (phase, text)
    paths: dict[str, str]

    @classmethod
    def read(cls, lines: list[str]) -> _Output:
        output, phase = cls([], {}), ""
        for line in lines:
            event = parse_event(line)
            kind, fields = event if event else (LOG, [line])
            if kind == PHASE and fields:
                phase = fields[0]
            elif kind == PATH:
                output.paths[fields[0]] = fields[1]
            elif kind == LOG and fields[0].strip() and not NOISE.search(fields[0]):
                output.lines.append((phase, fields[0].strip()))
        return output

    def find(self, pattern: re.Pattern[str]) -> tuple[str, re.Match[str]] | None:
        """The phase and match of pattern's first line."""
        for phase, text in self.lines:
            match = pattern.search(text)
            if match:
                return phase, match
        return None

    def any(self, *words: str) -> bool:
        return any(word in text for _, text in self.lines for word in words)


def import_failure(lines: list[str], uri: str) -> tuple[str, str]:
    """Why an import (or digest lookup) of uri failed, and what to do about it, from what its step printed:
    the importer's lines on stdout in their order (all of them, or enroot's last ones: ImportProgress.failure)
    and srun's stderr, before or after them."""
    output = _Output.read(lines)
    registry = parse_image_uri(uri)[1].registry or DOCKER_HUB
    for explain in (_not_run, _refused_input, _disk_full, _http_error, _unreachable):
        found = explain(output, registry)
        if found:
            return found
    return _unexplained(output)


def _not_run(output: _Output, registry: str) -> tuple[str, str] | None:
    if output.any(NO_ENROOT):
        return (
            "enroot is not installed on the compute node, so it cannot import images",
            "ask the site's administrators: imports run `enroot import` on a compute node",
        )
    missing = output.find(NO_PROGRAM)
    if missing:
        program = missing[1].group(1)
        return (
            f"the compute node has no {program} to run the import with",
            "ask the site's administrators: an import runs a small Python 3.8+ program on the node, outside "
            "any container",
        )
    return None


def _refused_input(output: _Output, registry: str) -> tuple[str, str] | None:
    invalid = output.find(INVALID)
    if invalid:
        return (
            f"enroot does not accept the image reference {invalid[1].group(1)}",
            f"write it as {URI_FORM}, the image's name in lowercase",
        )
    exists = output.find(EXISTS)
    if exists:
        return (
            f"{exists[1].group(1)} exists already, and enroot never replaces a file",
            "choose another name for the image, or remove that file first",
        )
    return None


def _disk_full(output: _Output, registry: str) -> tuple[str, str] | None:
    """No space (or quota) left where enroot writes: the image's directory (mksquashfs), its cache of the
    downloaded layers, or its temporary directory, where it unpacks them."""
    full = [(phase, text) for phase, text in output.lines if any(error in text for error in FULL)]
    what = next((words for error, words in FULL.items() if full and error in full[0][1]), "")
    if full and any(marker in full[0][1] for marker in OUTPUT_WRITE):
        target = output.find(SQUASHFS_TARGET)
        directory = posixpath.dirname(target[1].group(1)) if target else "the image's directory"
        return (
            f"{what} in {directory}, where the image is written: the squashfs image did not fit",
            "make room there (or ask for more quota), or import into another directory, then import again",
        )
    if full:  # while layers download, zstd writes them into the cache (without phases: zstd's words alone)
        phase, text = full[0]
        in_cache = phase == "downloading" or (not phase and text.startswith("zstd:"))
    else:  # curl could not hand a layer on to the cache, nobody said why
        in_cache = output.any("curl: (23)")
    if in_cache:
        cache = output.paths.get("cache", "ENROOT_CACHE_PATH")
        return (
            f"{what or 'writing failed'} in enroot's cache on the compute node ({cache}), where it keeps the "
            "downloaded layers: they did not fit",
            "remove layers you no longer need from that directory, or set ENROOT_CACHE_PATH to a directory "
            "with more room; ask the site's administrators if it is theirs",
        )
    if full:
        temp = output.paths.get("temp", "ENROOT_TEMP_PATH")
        return (
            f"{what} in enroot's temporary directory on the compute node ({temp}), where it unpacks the layers: "
            "the unpacked image did not fit",
            "an import needs room for the whole unpacked image there: set ENROOT_TEMP_PATH (or TMPDIR) to a "
            "directory with more room, or ask the site's administrators",
        )
    return None


def _http_error(output: _Output, registry: str) -> tuple[str, str] | None:
    error = output.find(HTTP_ERROR)
    if not error:
        return None
    url, code, status = error[1].group(1), int(error[1].group(2)), error[1].group(3).strip()
    answer = f"HTTP {code} {status}".strip()
    parsed = urllib.parse.urlsplit(url)
    manifest = MANIFEST_URL.search(parsed.path)
    if code == 404 and manifest:
        repository, reference = manifest.group(1), manifest.group(2)
        return (
            f"the registry {registry} has no image {repository}:{reference} ({answer}): the repository or the tag "
            "does not exist",
            "check the image's name and tag (names are lowercase; Docker Hub's own images are library/NAME)",
        )
    if code in (401, 403) and manifest and output.any("Authentication succeeded", "Permission granted"):
        return (
            f"the registry {registry} refused {manifest.group(1)} ({answer}): it does not exist, or your account "
            "may not pull it",
            "check the image's name, and that your account has access to it",
        )
    if code in (401, 403):
        return _credentials_refused(output, registry, parsed.hostname or "", answer)
    return (
        f"{parsed.hostname or registry} answered {answer} to {url}",
        "the registry has a problem of its own: try again later" if code >= 500 else "",
    )


def _credentials_refused(output: _Output, registry: str, realm: str, answer: str) -> tuple[str, str]:
    host = _host(registry)
    authenticating, from_file = output.find(AUTHENTICATING), output.find(FROM_FILE)
    prompted = output.find(PASSWORD_PROMPT)
    user = prompted[1].group(1) if prompted else authenticating[1].group(1) if authenticating else ""
    login = user if user and user != "<anonymous>" else "USER"
    config = output.paths.get("config")
    here = f"; for this import: {config}/.credentials" if config else ""
    rule = (
        f"enroot reads a line `machine {host} login {login} password PASSWORD` (the registry's host, without its "
        f"port) from $ENROOT_CONFIG_PATH/.credentials on the compute node (by default ~/.config/enroot/.credentials"
        f"{here})"
    )
    if realm and realm != host:
        rule += f"; {realm} hands out the registry's tokens: add the same line for that host"
    if from_file:
        message = f"the registry {registry} refused the credentials of {user} from {from_file[1].group(1)} ({answer})"
        return message, f"check the password (for NGC: your API key) in that line: {rule}"
    if prompted:
        return f"enroot has no password for {user} at the registry {registry} ({answer})", rule
    if user == "<anonymous>":
        return f"the registry {registry} asks for credentials, and enroot has none for it ({answer})", rule
    return f"the registry {registry} refused access ({answer})", rule


def _unreachable(output: _Output, registry: str) -> tuple[str, str] | None:
    error = output.find(CURL_ERROR)
    if not error:
        return None
    code, text = int(error[1].group(1)), error[1].group(2)
    resolve, connect = RESOLVE.search(text), CONNECT.search(text)
    hint = "check the registry's name, and that the compute nodes reach it (a firewall or proxy may stand between)"
    if resolve:
        return (f"the compute node cannot find the registry {resolve.group(1)}: no such host name", hint)
    if connect:
        where = f"{connect.group(1)} port {connect.group(2)}"
        if code == 28:
            return (f"the registry at {where} did not answer in time", hint + "; or it is busy: try again later")
        return (f"the compute node cannot reach the registry at {where}: {connect.group(3)}", hint + "; is it up?")
    if code == 28:
        return (f"the registry {registry} did not answer in time ({text})", "try again later")
    return None


def _unexplained(output: _Output) -> tuple[str, str]:
    errors = [text for _, text in output.lines if re.search(r"error|fail|fatal|denied|invalid", text, re.IGNORECASE)]
    last = [LEVEL.sub("", text) for text in (errors or [text for _, text in output.lines])[-3:]]
    if not last:
        return ("the import failed, and neither enroot nor Slurm said why", "")
    return ("the import failed: " + "; ".join(last), "")


def _host(registry: str) -> str:
    """A registry's host name, without its port (what a .credentials line names)."""
    host, colon, port = registry.rpartition(":")
    return host if colon and port.isdigit() else registry
