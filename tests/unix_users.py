"""Throwaway Unix users for tests: the other researcher on the cluster, or a user without root.

Root is needed to make one (tests using them are skipped without it; CI runs as root). Each user carries a
marker in its GECOS field and the test process's pid in its name, so that runs at the same time on one machine
do not meet and a run that ended without cleaning up is cleaned up by the next.

The user must reach this Python and this checkout. Where a directory on the way is closed to other users
(pyenv's Python under /root, say), the user's commands run in a private mount namespace in which that
directory is replaced by a tmpfs holding only what is needed (bind mounts of the originals): the
machine's permissions are never changed.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MARKER = "jupyter-asgard test user"
NEEDED_COMMANDS = ("useradd", "userdel", "runuser", "unshare", "nsenter")


def _closed_directories(paths: list[Path]) -> dict[Path, set[str]]:
    """Directories other users cannot enter on the way to paths, each with the entries needed below it."""
    closed: dict[Path, set[str]] = {}
    for path in paths:
        parts = path.parts
        found = [
            (Path(*parts[:i]), parts[i]) for i in range(1, len(parts)) if not os.stat(Path(*parts[:i])).st_mode & 0o001
        ]
        if not path.stat().st_mode & 0o001:
            pytest.skip(f"{path} itself is closed to other users: a non-root user cannot use it")
        if len(found) > 1:
            pytest.skip(f"more than one directory on the way to {path} is closed to other users: {found}")
        for directory, child in found:
            closed.setdefault(directory, set()).add(child)
    return closed


def _namespace_script(closed: dict[Path, set[str]]) -> str:
    """Shell commands, run as root in a new mount namespace, that open the way to the needed entries."""
    q = shlex.quote
    lines = ["set -eu", "stage=$(mktemp -d)", 'mount -t tmpfs -o mode=0700 tmpfs "$stage"']
    for index, (directory, children) in enumerate(sorted(closed.items())):
        for child in sorted(children):
            original, staged = q(str(directory / child)), f'"$stage/{index}/{child}"'
            lines.append(f"mkdir -p {staged}; mount --bind {original} {staged}")
        lines.append(f"mount -t tmpfs -o mode=0755 tmpfs {q(str(directory))}")
        for child in sorted(children):
            original, staged = q(str(directory / child)), f'"$stage/{index}/{child}"'
            lines.append(f"mkdir {original}; mount --move {staged} {original}")
    lines += ['umount "$stage"', 'rmdir "$stage"', "echo ready", "exec sleep infinity"]
    return "\n".join(lines)


def _status(pid: int, field: str) -> list[str]:
    """A field of /proc/PID/status, split (Uid: real, effective, saved, filesystem)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return line.split()[1:]
    return []


def uids(pid: int) -> set[int]:
    return {int(uid) for uid in _status(pid, "Uid")[:2]}


def _state(pid: int) -> str:
    return (_status(pid, "State") or ["?"])[0]


class UnixUser:
    """A throwaway non-root user, and a way to run commands as that user in a clean environment."""

    def __init__(self, name: str) -> None:
        self.name, self.holder = name, None
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            subprocess.run(
                ["useradd", "--create-home", "--shell", "/bin/bash", "--comment", MARKER, name],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(name)
        if entry.pw_gecos != MARKER:
            pytest.skip(f"a user {name} exists that this test did not create")
        self.uid, self.home = entry.pw_uid, Path(entry.pw_dir)
        self.python_bin = Path(sys.executable).parent
        self.env = {
            "HOME": str(self.home),
            "USER": name,
            "LOGNAME": name,
            "SHELL": "/bin/bash",
            "LANG": "C.UTF-8",
            # Like Binder's: the environment's bin first. No sbin: binder/start must add it for the daemons.
            "PATH": f"{self.python_bin}:/usr/local/bin:/usr/bin:/bin",
        }

    def open(self) -> None:
        """Give the user a way to this Python and this checkout (see the module's docstring)."""
        needed = [Path(sys.base_prefix), Path(sys.prefix), Path(sys.executable).resolve().parent, REPO]
        closed = _closed_directories(needed)
        if closed:
            self.holder = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "bash", "-c", _namespace_script(closed)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            line = self.holder.stdout.readline().strip()
            if line != "ready":
                self.holder.kill()
                raise RuntimeError(f"cannot prepare the user's mount namespace: {line} {self.holder.stderr.read()}")

    def run(
        self,
        *argv: str,
        input: str | None = None,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        netns: str | None = None,
    ) -> subprocess.CompletedProcess:
        """argv as the user, in the repository, with only the variables of self.env (and env); in network
        namespace netns (a test node's, `ip netns` name) where given, as a user logged in on that node."""
        return subprocess.run(
            self.command(*argv, env=env, netns=netns), input=input, capture_output=True, text=True, timeout=timeout
        )

    def start(self, *argv: str, env: dict[str, str] | None = None, netns: str | None = None) -> subprocess.Popen:
        """As run, without waiting: for what the user keeps running while the test goes on (stdout piped)."""
        command = self.command(*argv, env=env, netns=netns)
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def command(self, *argv: str, env: dict[str, str] | None = None, netns: str | None = None) -> list[str]:
        variables = [f"{key}={value}" for key, value in {**self.env, **(env or {})}.items()]
        return self.seeing(
            "runuser", "-u", self.name, "--", "env", "-i", "-C", str(REPO), *variables, *argv, netns=netns
        )

    def seeing(self, *argv: str, netns: str | None = None) -> list[str]:
        """argv, as whoever runs it, with the user's view of the machine (the mount namespace of the module's
        docstring): what it starts as the user (a JupyterHub run as root spawning the user's server) runs
        this Python and checkout too. In network namespace netns where given."""
        namespaces = [f"--mount=/proc/{self.holder.pid}/ns/mnt"] if self.holder is not None else []
        namespaces += [f"--net=/run/netns/{netns}"] if netns else []
        return ["nsenter", *namespaces, "--", *argv] if namespaces else list(argv)

    def processes(self) -> dict[int, str]:
        """The user's live processes (zombies waiting for their reaper do not count)."""
        found = {}
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and self.uid in uids(int(proc.name)) and _state(int(proc.name)) != "Z":
                    found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
        return found

    def wait_for_no_processes(self, timeout: float = 15) -> dict[int, str]:
        deadline = time.monotonic() + timeout
        while (left := self.processes()) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def remove(self) -> None:
        """Kill what is left of the user's processes (by pid), the namespace holder, and the user."""
        for _ in range(3):
            for pid in self.processes():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if not self.wait_for_no_processes(5):
                break
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait()
        subprocess.run(["userdel", "--remove", self.name], capture_output=True)


def _remove_stale_users(prefix: str) -> None:
    """Users this test made in runs that ended without cleaning up (their test process is gone)."""
    for entry in pwd.getpwall():
        suffix = entry.pw_name.removeprefix(prefix)
        if entry.pw_gecos == MARKER and suffix.isdigit() and not Path(f"/proc/{suffix}").exists():
            UnixUser(entry.pw_name).remove()


@contextmanager
def throwaway_user(prefix: str) -> Iterator[UnixUser]:
    """A new user named prefix + this process's pid, able to run this Python and checkout; removed after,
    with every process left of it. Skips where users cannot be made (no root, no useradd/runuser/...)."""
    if os.geteuid() != 0:
        pytest.skip("this test creates a second Unix user, which needs root")
    missing = [command for command in NEEDED_COMMANDS if shutil.which(command) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)}")
    _remove_stale_users(prefix)
    user = UnixUser(f"{prefix}{os.getpid()}")
    try:
        user.open()
        yield user
    finally:
        user.remove()
