"""Packet captures on a test cluster's node: what really crosses the node's network interface.

    with capture_on_node(cluster, "gpu01") as capture:
        ...  # traffic to or from gpu01
    assert secret not in capture.data()  # the pcap file's bytes, headers and payloads

tcpdump runs in the node's network namespace and is capturing when the block starts; when it ends (however
it ends) tcpdump is stopped, and gone, before the block's exception or result goes on.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cluster import LocalCluster

LISTENING = "listening on "  # what tcpdump says on stderr once it captures
SETTLE_SECONDS = 0.2  # no new packet written for this long: tcpdump has caught up with the interface
SETTLE_LIMIT = 3.0  # ... or stop it anyway after this long (a busy interface never settles)
STOP_TIMEOUT = 5.0  # after SIGINT, before SIGKILL


class CaptureError(RuntimeError):
    """tcpdump could not capture; the message has what it said."""


class Capture:
    """One capture; data() once its block has ended."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.pid: int | None = None
        self.returncode: int | None = None
        self._stderr: list[str] = []
        self._data: bytes | None = None

    @property
    def log(self) -> str:
        """What tcpdump wrote to stderr: its "listening on" line, and after it stopped its packet counts."""
        return "".join(self._stderr)

    def data(self) -> bytes:
        """The pcap file's bytes (its header, then each packet's record with the whole packet in it)."""
        if self._data is None:
            raise RuntimeError("the capture is still running: read its data after the with block")
        return self._data


@contextmanager
def capture_on_node(
    cluster: LocalCluster,
    node: str,
    *,
    interface: str = "eth0",
    pcap_filter: str = "",
    timeout: float = 10.0,
) -> Iterator[Capture]:
    """Capture every packet on the node's interface (with pcap_filter: those it matches) while the block runs.

    Needs a root cluster (the node's own network namespace) and tcpdump; timeout: for tcpdump to start."""
    if shutil.which("tcpdump") is None:
        raise CaptureError("no tcpdump: run ./dev/install (apt-get install tcpdump)")
    namespace = cluster.node_namespace(node)
    work = Path(tempfile.mkdtemp(prefix="asgard-capture-"))
    pcap = work / "capture.pcap"
    # `ip netns exec` execs tcpdump: its pid is tcpdump's.  -Z root: Debian's tcpdump would write as user
    # tcpdump; -U and --immediate-mode: each packet reaches the file as it comes, none waits in a buffer.
    argv = ["ip", "netns", "exec", namespace]
    argv += ["tcpdump", "-i", interface, "-n", "-s", "0", "-U", "--immediate-mode", "-Z", "root", "-w", str(pcap)]
    argv += [pcap_filter] if pcap_filter else []
    capture = Capture(argv)
    listening = threading.Event()
    process: subprocess.Popen[str] | None = None
    reader: threading.Thread | None = None
    try:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        capture.pid = process.pid
        reader = threading.Thread(target=_read_stderr, args=(process, capture, listening), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while not listening.wait(0.05):
            if process.poll() is not None:
                reader.join(timeout=1)
                raise CaptureError(f"tcpdump on {node} exited with {process.returncode}: {capture.log.strip()}")
            if time.monotonic() > deadline:
                raise CaptureError(f"tcpdump on {node} did not start capturing within {timeout:.0f}s: {capture.log}")
        yield capture
    finally:
        try:
            if process is not None:
                try:
                    if process.poll() is None:
                        _settle(pcap)
                finally:
                    capture.returncode = _stop(process)
            if reader is not None:
                reader.join(timeout=STOP_TIMEOUT)
            capture._data = pcap.read_bytes() if pcap.exists() else b""
        finally:
            shutil.rmtree(work, ignore_errors=True)


def _read_stderr(process: subprocess.Popen[str], capture: Capture, listening: threading.Event) -> None:
    """Until tcpdump exits: its lines, so the pipe never fills and stops it."""
    assert process.stderr is not None
    for line in process.stderr:
        capture._stderr.append(line)
        if line.startswith(("tcpdump: " + LISTENING, LISTENING)):
            listening.set()
    process.stderr.close()


def _settle(pcap: Path) -> None:
    """Wait until the file stops growing: packets already on the interface are in it."""
    deadline = time.monotonic() + SETTLE_LIMIT
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now_size = pcap.stat().st_size if pcap.exists() else 0
        if now_size != size:
            size, since = now_size, time.monotonic()
        elif time.monotonic() - since >= SETTLE_SECONDS:
            return
        time.sleep(0.02)


def _stop(process: subprocess.Popen[str]) -> int:
    """SIGINT (tcpdump writes what it has and exits), SIGKILL if it does not, or if the wait is interrupted;
    reaped either way."""
    try:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return process.wait()
