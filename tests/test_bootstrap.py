"""The bootstrap's port checks on this machine: a kernel is announced only once it listens on its ports itself.

And dev/check-bootstrap, which keeps the bootstrap runnable by an image's python3 (3.8+, standard library only)."""

from __future__ import annotations

import os
import runpy
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jupyter_asgard.node import bootstrap

CHECK_BOOTSTRAP = Path(__file__).resolve().parent.parent / "dev" / "check-bootstrap"

LISTEN = """
import socket, sys, time
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
print("listening", flush=True)
time.sleep(60)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def listener() -> Iterator[tuple[subprocess.Popen, int]]:
    """A process listening on a port, as a kernel listens on its heartbeat port."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", LISTEN, str(port)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline() == "listening\n"
    yield process, port
    process.kill()
    process.wait()


def test_a_kernel_listening_on_its_ports_is_ready(listener: tuple[subprocess.Popen, int]) -> None:
    process, port = listener
    assert bootstrap.port_state(process.pid, {"hb_port": port}) == (set(), set())
    assert bootstrap.await_ports(process, {"hb_port": port}) == "ready"


CHURN = """
import os, socket, sys, threading
sock = socket.socket()
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()

def churn():
    while True:
        os.close(os.open(os.devnull, os.O_RDONLY))

threading.Thread(target=churn, daemon=True).start()
print("listening", flush=True)
threading.Event().wait(60)
"""


def test_a_kernel_opening_and_closing_files_still_owns_its_ports() -> None:
    """A kernel imports modules while it starts: a descriptor that closes while the bootstrap looks at the
    kernel's must not hide the kernel's sockets (its ports would count as another process's)."""
    port = free_port()
    with subprocess.Popen([sys.executable, "-c", CHURN, str(port)], stdout=subprocess.PIPE, text=True) as kernel:
        try:
            assert kernel.stdout is not None and kernel.stdout.readline() == "listening\n"
            assert all(bootstrap.port_state(kernel.pid, {"hb_port": port}) == (set(), set()) for _ in range(150))
        finally:
            kernel.kill()


def test_a_port_another_process_listens_on_is_taken(listener: tuple[subprocess.Popen, int]) -> None:
    """ipykernel lives on when its heartbeat thread cannot bind: the bootstrap must not wait for it."""
    _, port = listener
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as kernel:
        try:
            assert bootstrap.port_state(kernel.pid, {"hb_port": port}) == (set(), {port})
            verdict = bootstrap.await_ports(kernel, {"hb_port": port})
            assert verdict == (
                f"another process took port {port} before the kernel could listen on it: Address already in use"
            )
        finally:
            kernel.kill()


def test_a_port_nobody_listens_on_yet_is_missing(listener: tuple[subprocess.Popen, int]) -> None:
    process, port = listener
    other = free_port()
    assert bootstrap.port_state(process.pid, {"hb_port": port, "shell_port": other}) == ({other}, set())


def test_a_kernel_that_ends_before_listening_is_not_announced() -> None:
    """As a kernel does whose port a neighbour took: zmq's "Address already in use", and it exits."""
    with subprocess.Popen([sys.executable, "-c", "raise SystemExit(1)"]) as kernel:
        assert bootstrap.await_ports(kernel, {"hb_port": free_port()}) == "ended"


def test_a_wrapper_s_child_listening_counts(listener: tuple[subprocess.Popen, int]) -> None:
    """A kernelspec may run a wrapper script that starts the kernel as its child."""
    port = free_port()
    wrapper = subprocess.Popen(
        ["sh", "-c", f"{sys.executable} -c '{LISTEN}' {port}; true"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert wrapper.stdout is not None and wrapper.stdout.readline() == "listening\n"
        assert bootstrap.port_state(wrapper.pid, {"hb_port": port}) == (set(), set())
    finally:
        subprocess.run(["pkill", "-P", str(wrapper.pid)])
        wrapper.wait()


# --- dev/check-bootstrap: the bootstrap runs with the image's python3 (3.8+), -I -S -----------------------


def check_bootstrap(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(CHECK_BOOTSTRAP), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def bootstrap_problems() -> Callable[[str], list[str]]:
    """dev/check-bootstrap's check of a source text."""
    check: Callable[[str], list[str]] = runpy.run_path(str(CHECK_BOOTSTRAP))["bootstrap_problems"]
    return check


def test_the_bootstrap_is_python_3_8_and_imports_only_the_standard_library() -> None:
    result = check_bootstrap()
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_bootstrap_fails_for_a_third_party_import_and_3_10_syntax(tmp_path: Path) -> None:
    third_party = tmp_path / "third_party.py"
    third_party.write_text("import json\nimport requests\n")
    result = check_bootstrap(str(third_party))
    assert result.returncode == 1
    assert f"{third_party}:2: imports requests, which is not in the standard library" in result.stdout
    match = tmp_path / "match.py"
    match.write_text("import sys\n\nmatch sys.argv:\n    case [_, name]:\n        print(name)\n")
    result = check_bootstrap(str(match))
    assert result.returncode == 1
    assert "not Python 3.8 syntax: Pattern matching is only supported in Python 3.10 and greater" in result.stdout


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        (
            "from jupyter_asgard.node.bootstrap import HANDSHAKE\n",
            "imports jupyter_asgard.node.bootstrap, which is not in",
        ),
        ("from . import errors\n", "a relative import"),
        ("import os.path\nimport tomllib\n", "bootstrap.py:2: imports tomllib, which is new in Python 3.11"),
        ("with (open('a') as a, open('b') as b):\n    pass\n", "Parenthesized context managers are only supported"),
        ("try:\n    pass\nexcept* OSError:\n    pass\n", "Exception groups are only supported in Python 3.11"),
        (
            "def ports() -> dict[str, int]:\n    return {}\n",
            "bootstrap.py:1: the annotation dict[...] fails on Python 3.8",
        ),
        ("PID: int | None = None\n", "bootstrap.py:1: the annotation X | Y fails on Python 3.8"),
    ],
)
def test_check_bootstrap_names_each_problem(
    bootstrap_problems: Callable[[str], list[str]], source: str, problem: str
) -> None:
    assert any(problem in found for found in bootstrap_problems(source)), bootstrap_problems(source)


def test_check_bootstrap_accepts_annotations_python_3_8_never_evaluates(
    bootstrap_problems: Callable[[str], list[str]],
) -> None:
    """Postponed (from __future__ import annotations), quoted, or of a local variable."""
    postponed = "from __future__ import annotations\n\ndef ports() -> dict[str, int]:\n    return {}\n"
    assert bootstrap_problems(postponed) == []
    assert bootstrap_problems("def ports() -> 'dict[str, int]':\n    found: dict[str, int] = {}\n") == []


STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"


def test_kill_now_ends_a_kernel_that_ignores_term_at_once_and_removes_its_connection_file(tmp_path: Path) -> None:
    """The provisioner's kill(): no grace for the kernel, and still no session key left in a file."""
    source = (Path(bootstrap.__file__)).read_text()
    env = {
        "PATH": "/usr/bin:/bin",
        "TMPDIR": str(tmp_path),
        "ASGARD_KERNEL_KEY": "k" * 32,
        "SLURM_LAUNCH_NODE_IPADDR": "127.0.0.1",
    }
    process = subprocess.Popen(
        [sys.executable, "-I", "-S", "-c", source, sys.executable, "-c", STUBBORN],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while not list(tmp_path.glob("asgard-kernel-*/kernel.json")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp_path.glob("asgard-kernel-*/kernel.json")), "the bootstrap wrote no connection file"
    process.send_signal(bootstrap.KILL_NOW)
    assert process.wait(timeout=5) == 128 + signal.SIGKILL
    assert list(tmp_path.iterdir()) == []


def test_a_kill_that_comes_before_the_kernel_runs_kills_it_as_soon_as_it_does() -> None:
    """The provisioner may kill a kernel whose connection file it saw written, before the kernel runs: the
    bootstrap must not die of the signal (the file would stay) but carry it out on the kernel."""
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, bootstrap.KILL_NOW)
    saved = {signum: signal.getsignal(signum) for signum in handled}
    try:
        signals = bootstrap.Signals()
        os.kill(os.getpid(), bootstrap.KILL_NOW)  # this process survives it: the bootstrap's handler runs
        with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as kernel:
            signals.started(kernel)
            assert kernel.wait(timeout=5) == -signal.SIGKILL
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_the_kernel_cannot_load_debugpy_and_is_told_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ipykernel offers its debugger only where debugpy imports, and debugpy's adapter would listen where every
    user of the node reaches it; the kernel's own PYTHONPATH stays behind the refusing package, its secrets out."""
    monkeypatch.setenv("PYTHONPATH", "/opt/user-modules")
    monkeypatch.setenv("ASGARD_KERNEL_KEY", "secret")
    env = bootstrap.kernel_environment(bootstrap.without_debugger(str(tmp_path)))
    assert env["PYTHONPATH"] == os.pathsep.join([str(tmp_path / "python"), "/opt/user-modules"])
    assert "ASGARD_KERNEL_KEY" not in env
    kernel = subprocess.run([sys.executable, "-c", "import debugpy"], env=env, capture_output=True, text=True)
    assert kernel.returncode == 1
    assert f"ImportError: {bootstrap.DEBUGGER_OFF}" in kernel.stderr
