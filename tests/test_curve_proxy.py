"""The encrypting proxy and the bootstrap's choice of path, on this machine with its own ipykernel.

The cluster tests (test_encryption.py) run both paths in real containers; these drive the proxy's routing
closely: several clients at once, input() answered on stdin by the client that ran the cell, IOPub
subscriptions, the heartbeat, and what the bootstrap does where an image cannot encrypt.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.session import new_id_bytes

from jupyter_asgard.launch.encryption import declares_curve, encryption_problem, stricter, wants_curve
from jupyter_asgard.node import bootstrap, curve_proxy
from tests.outsiders import outsiders
from tests.waiting import wait_for

PROXY_SOURCE = Path(curve_proxy.__file__).read_text()


def free_ports() -> dict[str, int]:
    return bootstrap.reserve_ports("127.0.0.1")


@pytest.fixture
def keys() -> tuple[bytes, bytes]:
    return zmq.curve_keypair()


@pytest.fixture
def private_dir() -> Iterator[str]:
    """A directory as the bootstrap makes one (short enough for ipc socket paths), removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="asgard-kernel-") as directory:
        yield directory


@pytest.fixture
def proxied_kernel(keys: tuple[bytes, bytes], private_dir: str) -> Iterator[dict[str, Any]]:
    """This machine's ipykernel on ipc in a private directory, behind the proxy on 127.0.0.1: the
    connection info a client gets, as the provisioner builds it from the bootstrap's handshake."""
    ipc = os.path.join(private_dir, "kernel")
    ports = free_ports()
    key = new_id_bytes()
    env = {**os.environ, "ASGARD_CURVE_PUBLICKEY": keys[0].decode(), "ASGARD_CURVE_SECRETKEY": keys[1].decode()}
    config = {"ip": "127.0.0.1", "ports": ports, "ipc": ipc}
    proxy = subprocess.Popen(
        [sys.executable, "-c", PROXY_SOURCE, json.dumps(config)], stdout=subprocess.PIPE, text=True, env=env
    )
    assert proxy.stdout is not None and proxy.stdout.readline().strip() == "proxy"
    assert proxy.stdout.readline().strip() == "ready"
    path = bootstrap.write_connection_file(
        private_dir,
        {**bootstrap.connection_info("curve-proxy", "127.0.0.1", ports, ipc), "key": key.decode()},
    )
    kernel = subprocess.Popen([sys.executable, "-m", "ipykernel_launcher", "-f", path])
    try:
        yield {
            **ports,
            "ip": "127.0.0.1",
            "transport": "tcp",
            "key": key,
            "signature_scheme": "hmac-sha256",
            "curve_publickey": keys[0].decode(),
            "curve_secretkey": keys[1].decode(),
        }
    finally:
        for process in (kernel, proxy):
            process.kill()
            process.wait()


def connect(info: dict[str, Any]) -> BlockingKernelClient:
    client = BlockingKernelClient()
    client.load_connection_info(info)
    client.hb_channel.time_to_dead = 10.0  # a busy test machine can miss jupyter_client's 1 s beat
    client.start_channels()
    client.wait_for_ready(timeout=30)
    return client


def stream_text(client: BlockingKernelClient, msg_id: str) -> str:
    """The stdout of the request msg_id, until the kernel is idle again."""
    text = ""
    while True:
        message = client.get_iopub_msg(timeout=10)
        if message["parent_header"].get("msg_id") != msg_id:
            continue
        if message["msg_type"] == "stream":
            text += message["content"]["text"]
        if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
            return text


def shell_replies_to(client: Any, seconds: float) -> list[str]:
    """The requests (msg ids) whose replies reach client's shell channel within seconds."""
    replies = []
    with contextlib.suppress(queue.Empty):
        while True:
            replies.append(client.get_shell_msg(timeout=seconds)["parent_header"].get("msg_id"))
    return replies


def test_two_clients_through_the_proxy_each_get_their_own_replies_and_input_requests(
    proxied_kernel: dict[str, Any],
) -> None:
    first, second = connect(proxied_kernel), connect(proxied_kernel)
    try:
        msg_id = first.execute("answer = input('name? '); print('hello', answer)", allow_stdin=True)
        request = first.get_stdin_msg(timeout=10)
        assert request["content"]["prompt"] == "name? "
        with pytest.raises(queue.Empty):
            second.get_stdin_msg(timeout=0.5)  # the request goes to the client whose cell asked
        first.input("asgard")
        assert first.get_shell_msg(timeout=10)["content"]["status"] == "ok"
        assert "hello asgard" in stream_text(first, msg_id)
        # Each client's reply reaches that client alone; both see every output on IOPub.
        reply = second.execute_interactive("print(answer * 2)", timeout=10)
        assert reply["content"]["status"] == "ok"
        assert "asgardasgard" in stream_text(first, reply["parent_header"]["msg_id"])
        # The second's reply is not on the first's shell (a late kernel_info reply may be: jupyter_client's
        # wait_for_ready asks again when the kernel is slow to answer on a busy machine).
        assert reply["parent_header"]["msg_id"] not in shell_replies_to(first, 0.5)
        assert first.is_alive() and second.is_alive()
    finally:
        first.stop_channels()
        second.stop_channels()


def test_the_heartbeat_and_control_pass_through(proxied_kernel: dict[str, Any]) -> None:
    client = connect(proxied_kernel)
    try:
        context = zmq.Context.instance()
        with context.socket(zmq.REQ) as heartbeat:
            heartbeat.curve_serverkey = proxied_kernel["curve_publickey"].encode()
            heartbeat.curve_publickey, heartbeat.curve_secretkey = zmq.curve_keypair()
            heartbeat.connect(f"tcp://127.0.0.1:{proxied_kernel['hb_port']}")
            heartbeat.send(b"ping")
            assert heartbeat.poll(10_000) and heartbeat.recv() == b"ping"
        msg_id = client.execute("import time; time.sleep(30)")
        wait_for(
            lambda: (
                (m := client.get_iopub_msg(timeout=10))["parent_header"].get("msg_id") == msg_id
                and m["msg_type"] == "execute_input"
            ),
            15,
            "the cell running",
        )
        client.control_channel.send(client.session.msg("interrupt_request", {}))
        reply = client.get_control_msg(timeout=10)
        assert reply["msg_type"] == "interrupt_reply"
        wait_for(
            lambda: (
                (m := client.get_shell_msg(timeout=10))["parent_header"]["msg_id"] == msg_id
                and m["content"]["status"] == "error"
            ),
            15,
            "the interrupted cell's reply",
        )
    finally:
        client.stop_channels()


def test_a_client_without_the_kernel_s_key_pair_reaches_nothing(proxied_kernel: dict[str, Any]) -> None:
    """Even one that knows the kernel's public key: the proxy admits the kernel's own client key alone."""
    client = connect(proxied_kernel)
    try:
        with outsiders(proxied_kernel) as heard:
            reply = client.execute_interactive("print('seen by subscribers only')", timeout=10)
            assert reply["content"]["status"] == "ok"
            assert heard() == []
        assert client.execute_interactive("1", timeout=10)["content"]["status"] == "ok"
    finally:
        client.stop_channels()


# The proxy's source as an image whose pyzmq was built without CurveZMQ would run it.
WITHOUT_CURVE = PROXY_SOURCE.replace(
    "\nimport json\n", "\nimport json\nimport zmq\nzmq.has = lambda feature: feature != 'curve'\n", 1
)


@pytest.mark.parametrize(
    ("source", "policy", "outcome"),
    [
        (WITHOUT_CURVE, "auto", "relays in the clear"),
        (WITHOUT_CURVE, "required", "requires encrypted kernels"),
        ("raise SystemExit(3)", "auto", "none"),
        ("raise SystemExit(3)", "required", "requires encrypted kernels"),
        ("raise SystemExit('no proxy for a kernel that encrypts itself')", "required", "curve"),
        (f"print('proxy'); print({bootstrap.FAILURE!r} + 'cannot listen: Address already in use')", "auto", "in use"),
    ],
    ids=[
        "no Curve in pyzmq, auto",
        "no Curve in pyzmq, required",
        "no proxy, auto",
        "no proxy, required",
        "ipykernel 7.4",
        "a port taken",
    ],
)
def test_the_bootstrap_follows_what_the_proxy_says(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    private_dir: str,
    source: str,
    policy: str,
    outcome: str,
) -> None:
    """Where an image cannot encrypt, 'auto' starts the kernel in the clear (and says so) and 'required'
    fails the start, naming what is missing and how to fix it."""
    keys = zmq.curve_keypair()
    monkeypatch.setenv("ASGARD_CURVE_PUBLICKEY", keys[0].decode())
    monkeypatch.setenv("ASGARD_CURVE_SECRETKEY", keys[1].decode())
    monkeypatch.setenv("ASGARD_ENCRYPTION", policy)
    monkeypatch.setenv("ASGARD_CURVE_PROXY", source)
    # This machine's ipykernel is 7.4: a kernel of another name takes the proxy's path
    argv = [sys.executable, "-m", "ipykernel_launcher" if outcome == "curve" else "another_kernel", "-f", "x"]
    ipc = os.path.join(private_dir, "kernel")
    try:
        mode, proxy = bootstrap.start_encryption(argv, "127.0.0.1", free_ports(), ipc)
    except SystemExit:
        printed = capsys.readouterr().out
        assert printed.startswith(bootstrap.FAILURE) and outcome in printed and "no-proxy" not in printed
        return
    if proxy is None:
        assert mode == outcome
        assert mode == "curve" or "not encrypted" in capsys.readouterr().err
        return
    handshake = {"encryption": mode}
    monkeypatch.setattr(bootstrap, "PROXY_FAILURE_PATIENCE", 0.5)
    kernel = subprocess.Popen(["sleep", "60"])  # a kernel still starting when its proxy fails
    try:
        verdict = bootstrap.proxy_ready(proxy, kernel, handshake)
    finally:
        for process in (proxy, kernel):
            process.kill()
            process.wait()
    if outcome == "relays in the clear":
        assert (verdict, handshake["encryption"]) == ("", "none")
        assert "built without CurveZMQ" in capsys.readouterr().err
    else:
        assert outcome in verdict
        if "requires" in outcome:
            assert "built without CurveZMQ" in verdict and "pip's pyzmq wheels" in verdict


def test_a_kernel_that_ends_while_its_proxy_fails_speaks_for_itself() -> None:
    """An image without pyzmq: the proxy cannot run, and ipykernel cannot either; its own error (No module
    named ...) tells the user more than the proxy's."""
    failure = bootstrap.FAILURE + "the image's python has no pyzmq"
    proxy = subprocess.Popen(["echo", failure], stdout=subprocess.PIPE, text=True)
    kernel = subprocess.Popen([sys.executable, "-c", "raise SystemExit('No module named ipykernel_launcher')"])
    try:
        assert bootstrap.proxy_ready(proxy, kernel, {}) == "ended"
    finally:
        proxy.wait()
        kernel.wait()


def test_without_keys_there_is_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASGARD_CURVE_SECRETKEY", raising=False)
    assert bootstrap.start_encryption(["python3"], "127.0.0.1", {}, "/x") == ("none", None)


def test_connection_files_for_each_path() -> None:
    ports = {name: 40000 + number for number, name in enumerate(bootstrap.PORT_NAMES)}
    proxied = bootstrap.connection_info("curve-proxy", "10.0.0.5", ports, "/tmp/asgard-kernel-x/kernel")
    assert proxied["transport"] == "ipc" and proxied["ip"] == "/tmp/asgard-kernel-x/kernel"
    assert sorted(proxied[name] for name in bootstrap.PORT_NAMES) == [1, 2, 3, 4, 5]
    assert "curve_secretkey" not in proxied  # the kernel never sees the keys: the proxy holds them
    assert bootstrap.connection_info("none", "10.0.0.5", ports, "") == {**ports, "transport": "tcp", "ip": "10.0.0.5"}


def test_the_proxy_runs_with_the_kernel_s_python() -> None:
    assert bootstrap.kernel_python([sys.executable, "-m", "ipykernel_launcher"]) == sys.executable
    assert bootstrap.kernel_python(["/opt/wrapper.sh", "-f", "x"]) == sys.executable  # the bootstrap's own
    assert bootstrap.runs_ipykernel(["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"])
    assert not bootstrap.runs_ipykernel(["python3", "-m", "my_kernel"])


def test_ipykernel_s_version_comes_from_its_metadata(tmp_path: Path) -> None:
    (tmp_path / "ipykernel-6.17.0.dist-info").mkdir()
    assert bootstrap.ipykernel_version([str(tmp_path / "missing"), str(tmp_path)]) == (6, 17)
    (tmp_path / "ipykernel-6.17.0.dist-info").rmdir()
    (tmp_path / "ipykernel-7.4.0.dist-info").mkdir()
    assert bootstrap.ipykernel_version([str(tmp_path)]) >= bootstrap.NATIVE_IPYKERNEL
    assert bootstrap.ipykernel_version([]) == ()


def test_the_import_path_of_the_kernel_s_python(tmp_path: Path) -> None:
    """The bootstrap's own python (run with -I -S) knows its site directories without a process; another
    python (here a wrapper around this one) is asked for its sys.path."""
    here = bootstrap.import_path(sys.executable)
    assert bootstrap.ipykernel_version(here) >= bootstrap.NATIVE_IPYKERNEL  # this machine's ipykernel 7.4
    wrapper = tmp_path / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    wrapper.chmod(0o755)
    asked = bootstrap.import_path(str(wrapper))
    assert asked[0] == "" and bootstrap.ipykernel_version(asked) == bootstrap.ipykernel_version(here)
    assert bootstrap.import_path(str(tmp_path / "no-such-python")) == []


class Spec:
    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata


def test_the_stricter_policy_applies_and_only_declared_kernels_get_keys() -> None:
    assert stricter("disabled", "auto") == "auto"
    assert stricter("Required", "auto") == "required"
    assert stricter("disabled", "disabled") == "disabled"
    declared, silent = Spec({"supported_encryption": ["curve"]}), Spec({})
    assert declares_curve(declared) and declares_curve(Spec({"supported_encryption": "Curve"}))
    assert not declares_curve(silent) and not declares_curve(Spec({"supported_encryption": 3}))
    assert wants_curve("auto", declared) and not wants_curve("auto", silent)
    assert not wants_curve("disabled", declared)
    assert encryption_problem("auto", silent, "k") == ""
    problem = encryption_problem("required", silent, "old-spec")
    assert "'old-spec' does not declare CurveZMQ support" in problem and '"supported_encryption": ["curve"]' in problem


def test_the_proxy_and_the_bootstrap_speak_the_same_words() -> None:
    """Both are sent to the node as source of their own, so neither can import the other's constants."""
    assert curve_proxy.FAILURE == bootstrap.FAILURE
    assert curve_proxy.CHANNELS == bootstrap.PORT_NAMES  # the ipc sockets are numbered in this order
