"""The packet-capture helper (tests/capture.py) on the real test cluster: it sees what crosses a node's interface."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.capture import Capture, CaptureError, capture_on_node
from tests.cluster import LocalCluster

NODE = "gpu02"
PCAP_MAGIC = (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4")  # a pcap file's first bytes, either byte order
# Accepts one connection on the node's address, reads to its end, answers with the byte count.
SERVER = """
import socket, sys
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
server.settimeout(30)
connection, _ = server.accept()
received = b""
while chunk := connection.recv(65536):
    received += chunk
connection.sendall(str(len(received)).encode())
connection.close()
"""


@pytest.fixture
def cluster(slurm_cluster: LocalCluster) -> LocalCluster:
    if slurm_cluster.loopback:
        pytest.skip("a loopback cluster's nodes have no network namespace to capture in")
    return slurm_cluster


@pytest.fixture
def listener(cluster: LocalCluster) -> Iterator[tuple[str, int]]:
    """The address and port of SERVER, started in the node's network namespace."""
    address = cluster.node_addr(NODE)
    server = subprocess.Popen(
        ["ip", "netns", "exec", cluster.node_namespace(NODE), sys.executable, "-c", SERVER, address],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        port = server.stdout.readline().strip()
        assert port.isdigit(), server.communicate(timeout=10)
        yield address, int(port)
    finally:
        server.kill()
        server.communicate()


def send(address: str, port: int, payload: bytes) -> int:
    """payload over TCP from the host; the byte count the node's server answers."""
    with socket.create_connection((address, port), timeout=10) as connection:
        connection.sendall(payload)
        connection.shutdown(socket.SHUT_WR)
        return int(connection.recv(100))


def tcpdump_runs(cluster: LocalCluster, capture: Capture) -> bool:
    pids = subprocess.run(["ip", "netns", "pids", cluster.node_namespace(NODE)], capture_output=True, text=True)
    return capture.pid is not None and (Path(f"/proc/{capture.pid}").exists() or str(capture.pid) in pids.stdout)


def test_capture_holds_what_was_sent_to_the_node(cluster: LocalCluster, listener: tuple[str, int]) -> None:
    payload = os.urandom(32).hex().encode()
    with capture_on_node(cluster, NODE) as capture:
        assert tcpdump_runs(cluster, capture)
        with pytest.raises(RuntimeError, match="still running"):
            capture.data()
        assert send(*listener, payload) == len(payload)
    assert not tcpdump_runs(cluster, capture)
    assert capture.returncode == 0, capture.log
    data = capture.data()
    assert data[:4] in PCAP_MAGIC
    assert payload in data
    assert "listening on eth0" in capture.log


def test_capture_of_nothing_sent_holds_no_payload(cluster: LocalCluster) -> None:
    payload = os.urandom(32).hex().encode()
    with capture_on_node(cluster, NODE) as capture:
        pass
    data = capture.data()
    assert data[:4] in PCAP_MAGIC
    assert payload not in data
    assert not tcpdump_runs(cluster, capture)


def test_capture_stops_tcpdump_when_its_block_fails(cluster: LocalCluster, listener: tuple[str, int]) -> None:
    payload = os.urandom(32).hex().encode()
    with pytest.raises(ZeroDivisionError), capture_on_node(cluster, NODE) as capture:
        send(*listener, payload)
        _ = 1 / 0
    assert not tcpdump_runs(cluster, capture)
    assert payload in capture.data()


def test_capture_filter_leaves_other_traffic_out(cluster: LocalCluster, listener: tuple[str, int]) -> None:
    payload = os.urandom(32).hex().encode()
    with capture_on_node(cluster, NODE, pcap_filter=f"tcp port {listener[1] + 1}") as capture:
        send(*listener, payload)
    assert payload not in capture.data()


def test_capture_reports_tcpdump_that_cannot_start(cluster: LocalCluster) -> None:
    with (
        pytest.raises(CaptureError, match="no-such-interface"),
        capture_on_node(cluster, NODE, interface="no-such-interface"),
    ):
        pytest.fail("the block must not run")
