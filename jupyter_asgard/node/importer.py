"""Runs ``enroot import`` (or ``enroot digest``) on the compute node and reports what it does, a line per event.

The server runs it as a Slurm step, outside any container, with the node's own python3 (3.8+), as
``python3 -I -S -c SOURCE import OUT URI`` (``enroot import -o OUT URI``) or ``... digest URI`` (``enroot
digest URI``, the manifest digest a tag names now). Login nodes may have no enroot; the compute nodes have it.

enroot shows its progress only when its stderr is a terminal (``[ -t 2 ]``): then GNU parallel draws a bar
(``--bar``) while layers download, extract and convert, mksquashfs draws its own, and log lines may carry
colours. So enroot's stderr is a pseudo-terminal this process reads (not enroot's controlling terminal: curl
would ask it for a password, and wait forever, for a user named in the URI with no password in
``.credentials``). What it reads becomes lines on stdout, each flushed at once (the server reads them live
through srun), each ``PREFIX KIND ...``:

- ``asgard-import job JOBID NODE``: first, where it runs (the Slurm job and node);
- ``asgard-import phase NAME``: NAME one of PHASES, in that order (a digest: ``authenticating`` only);
- ``asgard-import layers DONE TOTAL``: while layers download, how many of the missing ones are done;
- ``asgard-import percent N``: how far mksquashfs is (phase ``squashfs``);
- ``asgard-import digest sha256:HEX``: what ``enroot digest`` printed (an import looks it up first, and
  imports the image pinned to it);
- ``asgard-import log TEXT``: each line enroot printed (also those that start a phase), without colours;
  the bars' redraws are not repeated;
- ``asgard-import path NAME DIRECTORY``: after enroot failed, the directories its settings name on this node
  (``config``: where ``.credentials`` is read, ``cache``: downloaded layers, ``temp``: the unpacked ones), as
  ``enroot info`` tells them, so that a failure can say where.

It exits with enroot's status (128+N when a signal N ended enroot). SIGTERM, SIGINT or SIGHUP (scancel, a
cancelled import) end enroot and everything it started: enroot runs in a session of its own, which gets
SIGTERM (so that enroot removes its temporary directory) and, after GRACE seconds, SIGKILL; GNU parallel puts
each of its jobs (curl, tar) in a process group of its own, so the whole session is ended, not one group.
The server parses these lines with the definitions here (PREFIX, the kinds, parse_event); this file imports
nothing of the package (see node/__init__.py).
"""

from __future__ import annotations

import errno
import os
import re
import select
import signal
import subprocess
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

PREFIX = "asgard-import"
JOB = "job"
PHASE = "phase"
LAYERS = "layers"
PERCENT = "percent"
DIGEST = "digest"
LOG = "log"
PATH = "path"
PHASES = ("authenticating", "manifest", "downloading", "extracting", "converting", "squashfs")
# The directories a PATH event names, by the enroot setting they come from.
PATHS = {"config": "ENROOT_CONFIG_PATH", "cache": "ENROOT_CACHE_PATH", "temp": "ENROOT_TEMP_PATH"}
# What this process itself says (as a LOG event) when the node has no enroot to run; exit status 127.
NO_ENROOT = "enroot is not installed on this node"
GRACE = 10.0  # seconds enroot has to clean up after SIGTERM (its temporary directory may hold gigabytes)
DRAIN = 2.0  # seconds to read on after enroot ended, while something it started still holds its terminal
MAX_TEXT = 4000  # characters of one log line

# enroot's log lines that start a phase ("[INFO] ..." in common::log; a colour may surround "[INFO]").
PHASE_LINES = (
    (re.compile(r"\[INFO\] (?:Querying registry for permission grant|Authenticating with user)"), "authenticating"),
    (re.compile(r"\[INFO\] Fetching image manifest"), "manifest"),
    (re.compile(r"\[INFO\] (?:Downloading \d+ missing layers|Found all layers in cache)"), "downloading"),
    (re.compile(r"\[INFO\] Extracting image layers"), "extracting"),
    (re.compile(r"\[INFO\] Converting whiteouts"), "converting"),
    (re.compile(r"\[INFO\] Creating squashfs filesystem"), "squashfs"),
)
MISSING_LAYERS = re.compile(r"\[INFO\] Downloading (\d+) missing layers")
# Terminal control sequences: CSI (colours, "\x1b[7m"), OSC, character sets ("\x1b(B", tput sgr0's), others.
ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[()*+][0-9A-Za-z]|[@-Z\\-_])")
# GNU parallel's --bar draws "\r" + "#   ETA sec ARG" + "\r" + PCT + "\r" + "PCT% DONE:LEFT=ETA ARG", the last
# padded or cut to the terminal's width (80: parallel finds no terminal to ask, so its default).
BAR = re.compile(r"(\d+)% (\d+):(\d+)=\w+ ")
BAR_WIDTH = 80
BAR_HEADER = re.compile(r"#\s+[\d.]+ sec\b|[\d.]+\Z")
# mksquashfs's progress: "[=====/     ]  136/4908   2%".
SQUASHFS_BAR = re.compile(r"\[[-=\\|/ ]*\]\s+\d+/\d+\s+(\d+)%")
# parallel asks `tput cols </dev/tty` every second; with no controlling terminal the shell says it cannot.
NO_TTY = re.compile(r"cannot open /dev/tty|/dev/tty: No such device or address")
DIGEST_LINE = re.compile(r"sha256:[0-9a-f]{64}")
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def event(kind: str, *fields: str) -> str:
    """One line of the importer's output (without its newline)."""
    return " ".join((PREFIX, kind, *fields))


def parse_event(line: str) -> tuple[str, list[str]] | None:
    """The kind and fields of one line of the importer's output, None for a line that is not one. A LOG event
    has its text as one field; a PATH event its name and directory."""
    head, space, rest = line.rstrip("\r\n").partition(" ")
    if head != PREFIX or not space:
        return None
    kind, _, rest = rest.partition(" ")
    if kind == LOG:
        return kind, [rest]
    if kind == PATH:
        name, _, directory = rest.partition(" ")
        return kind, [name, directory]
    return kind, rest.split()


class Output:
    """Events on stdout, each written at once (no buffer: a line is on its way to srun when emit returns). A
    write that fails means that nobody reads any more (srun is gone): the import then ends as if cancelled."""

    def __init__(self) -> None:
        self.broken = False
        self.digest = ""  # the last DIGEST said

    def emit(self, kind: str, *fields: str) -> None:
        if kind == DIGEST:
            self.digest = fields[0]
        data = (event(kind, *fields) + "\n").encode("utf-8", "replace")
        while data and not self.broken:
            try:
                data = data[os.write(1, data) :]
            except OSError:
                self.broken = True


class Reader:
    """Turns what enroot writes into events: its terminal (stderr: the log, the bars) and its stdout."""

    def __init__(self, emit: Callable[..., None]) -> None:
        self.emit = emit
        self.pending = b""  # the terminal's last, unfinished segment
        self.phase = ""
        self.total = 0  # layers to download
        self.layers = (-1, -1)
        self.percent = -1
        self.stdout = b""

    def terminal(self, data: bytes) -> None:
        segments = re.split(rb"\r|\n", self.pending + data)
        self.pending = segments.pop()
        for segment in segments:
            self.segment(segment)
        if self.pending:  # a bar is drawn without an end; the next one's "\r" ends it
            self.bar(self.text(self.pending))

    def standard_output(self, data: bytes) -> None:
        lines = (self.stdout + data).split(b"\n")
        self.stdout = lines.pop()
        for line in lines:
            text = self.text(line).strip()
            if DIGEST_LINE.fullmatch(text):
                self.emit(DIGEST, text)
            elif text:
                self.emit(LOG, text)

    def finish(self) -> None:
        """What is left unfinished when the streams end."""
        if self.pending:
            self.segment(self.pending)
            self.pending = b""
        if self.stdout:
            self.standard_output(b"\n")

    @staticmethod
    def text(segment: bytes) -> str:
        return ANSI.sub("", segment.decode("utf-8", "replace"))

    def segment(self, segment: bytes) -> None:
        text = self.text(segment).rstrip()
        if not text.strip() or BAR_HEADER.match(text.strip()) or NO_TTY.search(text):
            return
        bar = self.bar(text)
        if bar is not None:
            # Another process's line may follow the bar without a break ("...  tar: Cannot write: ...").
            rest = text[bar:]
            padding = re.search(r" {2,}", rest)
            glued = rest[padding.end() :] if padding else text[BAR_WIDTH:]
            if glued.strip():
                self.line(glued.strip())
            return
        squashfs = SQUASHFS_BAR.match(text)
        if squashfs:
            self.progress(int(squashfs.group(1)))
            return
        self.line(text)

    def bar(self, text: str) -> int | None:
        """Where a parallel bar at the start of text ends (None: none there); layers while they download."""
        match = BAR.match(text)
        if not match:
            return None
        done, left = int(match.group(2)), int(match.group(3))
        if self.phase == "downloading":
            self.count(done, self.total or done + left)
        return match.end()

    def line(self, text: str) -> None:
        for pattern, phase in PHASE_LINES:
            if pattern.search(text):
                if phase != self.phase:
                    self.phase = phase
                    self.emit(PHASE, phase)
                missing = MISSING_LAYERS.search(text)
                if missing:
                    self.total = int(missing.group(1))
                    self.count(0, self.total)
        self.emit(LOG, CONTROL.sub("?", text)[:MAX_TEXT])

    def count(self, done: int, total: int) -> None:
        if (done, total) != self.layers:
            self.layers = (done, total)
            self.emit(LAYERS, str(done), str(total))

    def progress(self, percent: int) -> None:
        if self.phase == "squashfs" and percent != self.percent:
            self.percent = percent
            self.emit(PERCENT, str(percent))


def session_members(session: int) -> list[int]:
    """The live processes of a session (zombies left out: they are dead, their parent has yet to reap them)."""
    members = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/{}/stat".format(name), "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue  # ended meanwhile
        # After "PID (COMM)": state, ppid, pgrp, session, ...
        if len(fields) > 3 and fields[0] not in (b"Z", b"X") and int(fields[3]) == session:
            members.append(int(name))
    return members


def end_session(child: subprocess.Popen[bytes], grace: float) -> None:
    """End every process of child's session: SIGTERM, then SIGKILL for what remains after grace seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        members = session_members(child.pid)
        for pid in members:
            try:
                os.kill(pid, sig)
            except OSError:
                pass  # ended meanwhile
        deadline = time.monotonic() + wait
        while members and time.monotonic() < deadline:
            time.sleep(0.05)
            child.poll()  # reaps enroot itself once it is gone
            members = session_members(child.pid)
        if not members:
            return


def report_paths(emit: Callable[..., None]) -> None:
    """The directories enroot's settings name on this node, as `enroot info` prints them."""
    try:
        info = subprocess.run(
            ["enroot", "info"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10
        ).stdout.decode("utf-8", "replace")
    except (OSError, subprocess.SubprocessError):
        return
    settings = {}
    for line in info.splitlines():
        setting, equals, value = line.strip().partition("=")
        if equals and value:
            settings[setting] = value
    for name, setting in PATHS.items():
        if setting in settings:
            emit(PATH, name, settings[setting])


def terminal() -> tuple[int, int]:
    """A pseudo-terminal (master, slave) 80 columns wide, passing bytes through as they are written."""
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, BAR_WIDTH, 0, 0))
    attributes = termios.tcgetattr(slave)
    attributes[1] &= ~termios.OPOST  # no "\n" made "\r\n"
    termios.tcsetattr(slave, termios.TCSANOW, attributes)
    return master, slave


def run(command: list[str], output: Output) -> int:
    """Run command (enroot), report what it writes, and return its exit status."""
    caught: list[int] = []
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    for name in ("SIGTERM", "SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), lambda number, frame: caught.append(number))
    master, slave = terminal()
    try:
        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, start_new_session=True
        )
    except OSError as error:
        output.emit(LOG, "{} ({}: {})".format(NO_ENROOT, command[0], error.strerror))
        return 127
    finally:
        os.close(slave)
    reader = Reader(output.emit)
    assert child.stdout is not None
    streams: dict[int, Callable[[bytes], None]] = {
        master: reader.terminal,
        child.stdout.fileno(): reader.standard_output,
    }
    ended = 0.0
    while streams and not caught and not output.broken:
        if not ended and child.poll() is not None:
            ended = time.monotonic()
        if ended and time.monotonic() - ended > DRAIN:
            break  # something enroot started still holds its terminal: it is ended below
        for fd in select.select([*streams, wake_read], [], [], 0.2)[0]:
            if fd == wake_read:
                os.read(wake_read, 64)
                continue
            try:
                data = os.read(fd, 65536)
            except OSError as error:  # EIO: the terminal's other side is closed
                if error.errno != errno.EIO:
                    raise
                data = b""
            if data:
                streams[fd](data)
            else:
                del streams[fd]
    while not caught and not output.broken:
        try:
            child.wait(0.2)
            break
        except subprocess.TimeoutExpired:
            continue
    if caught or output.broken:
        end_session(child, GRACE)
        return 128 + (caught[0] if caught else signal.SIGPIPE)
    reader.finish()
    end_session(child, 0.0)  # nothing enroot started outlives it
    status = child.returncode
    if status != 0:
        report_paths(output.emit)
    return 128 - status if status < 0 else status


def pinned(uri: str, digest: str) -> str:
    """The URI naming exactly that manifest (enroot then ignores a tag); one that names a digest stays."""
    return uri if "@sha256:" in uri else "{}@{}".format(uri, digest)


def main(argv: list[str]) -> int:
    """``import OUT URI``: the digest the URI names now, then the import of exactly that image (what was
    imported is known, whatever the tag names by then); ``digest URI``: the digest alone."""
    if not (len(argv) == 3 and argv[0] == "import") and not (len(argv) == 2 and argv[0] == "digest"):
        print("usage: importer.py import OUT URI | importer.py digest URI", file=sys.stderr)
        return 2
    output = Output()
    output.emit(JOB, os.environ.get("SLURM_JOB_ID", "-"), os.environ.get("SLURMD_NODENAME", "-"))
    status = run(["enroot", "digest", "--", argv[-1]], output)
    if argv[0] == "digest" or status != 0 or not output.digest:
        return status or (0 if output.digest else 1)
    return run(["enroot", "import", "-o", argv[1], "--", pinned(argv[2], output.digest)], output)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
