"""The batch script of a detachable kernel: it holds the allocation on the node and runs the kernel's steps there.

A step that srun starts on the login node dies with that srun, and srun with the Jupyter server; a kernel that
is to outlive the server must be started from the node. So a detachable kernel's job is a batch job whose
script is this file (run by the node's own python3, outside any container), and the server asks it for each
start of the kernel through the kernel's private directory in the user's home, which both see:

- ``start-N.json`` (0600, written whole by the server): argv and environment of start N (the session key, the
  Curve keys and the handshake's nonce are in that environment: never in a command line or this script). The
  keeper deletes it as soon as it has read it, then runs srun with it;
- ``step-N.out`` and ``step-N.err``: srun's output, each cut at MAX_OUTPUT bytes; ``step-N.exit``: its status;
- ``step-N.signal``: a signal the server asks to send to srun itself (only where Slurm cannot be reached);
- ``held``: whose server holds the kernel; the server touches it every few seconds. When nobody has for
  ASGARD_DETACH_GRACE seconds, the keeper ends the job (with its steps, and the GPUs are free);
- ``released``: the kernel was shut down: the keeper ends the job at once (as when the directory is gone);
- ``ended.json``: why the keeper ended the job (grace, released, or a signal from Slurm: a time limit or
  scancel), for the next server to tell;
- ``while-detached.json``: the kernel's last outputs (the bootstrap's IOPub recorder prints them on the
  step's stdout with RECORD before them), at most MAX_RECORDED characters, with when each came, and the
  kernel's last execution state: the next server shows what came after the last one held it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

RECORD = "ASGARD-IOPUB "  # the recorder's (recorder.py) prefix on the step's stdout; a test keeps them equal
MAX_OUTPUT = 1024 * 1024  # bytes of srun's stdout, and of its stderr, kept per start
MAX_RECORDED = 64 * 1024  # characters of recorded output kept
MAX_DONE = 100  # execute requests that ended, kept (the newest)
POLL = 0.1  # seconds between looks at the directory
FLUSH = 0.5  # seconds between writes of while-detached.json
SIGNALS = {"TERM": signal.SIGTERM, "KILL": signal.SIGKILL, "INT": signal.SIGINT}


def write_whole(directory: str, name: str, data: Any) -> None:
    """Write a JSON file so that readers see all of it or nothing (rename), private to the user."""
    path = os.path.join(directory, name)
    partial = path + ".partial"
    with open(partial, "w") as handle:
        json.dump(data, handle)
    os.replace(partial, path)


class Recorded:
    """The kernel's recorded outputs, newest last, within MAX_RECORDED characters, its execution state, and the
    execute requests that ended (the last MAX_DONE)."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self.done: list[dict[str, Any]] = []
        self.state = ""
        self.state_since = 0.0
        self.dirty = False
        self.lock = threading.Lock()

    def take(self, line: str) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            return
        if not isinstance(entry, dict):
            return
        with self.lock:
            if entry.get("kind") == "status":
                self.state, self.state_since = str(entry.get("text", "")), float(entry.get("time", 0))
            elif entry.get("kind") == "done":
                self.done = [*self.done, entry][-MAX_DONE:]
            else:
                self.entries.append(entry)
                while sum(len(str(item.get("text", ""))) for item in self.entries) > MAX_RECORDED:
                    self.entries.pop(0)
            self.dirty = True

    def flush(self, directory: str) -> None:
        with self.lock:
            if not self.dirty:
                return
            data = dict(
                entries=list(self.entries),
                done=list(self.done),
                execution_state=self.state,
                state_since=self.state_since,
            )
            self.dirty = False
        write_whole(directory, "while-detached.json", data)


def copy_output(stream: IO[bytes], path: str, recorded: Recorded | None) -> None:
    """srun's output into path, cut at MAX_OUTPUT; the recorder's lines into recorded instead."""
    written = 0
    with open(path, "ab") as handle:
        for raw in iter(stream.readline, b""):
            if recorded is not None and raw.startswith(RECORD.encode()):
                recorded.take(raw[len(RECORD) :].decode(errors="replace"))
                continue
            if written < MAX_OUTPUT:
                chunk = raw[: MAX_OUTPUT - written]
                if len(chunk) < len(raw):
                    chunk += b"\n[jupyter-asgard: the rest of this output is not kept]\n"
                handle.write(chunk)
                handle.flush()
            written += len(raw)


class Step:
    """One start of the kernel: srun and the threads copying its output."""

    def __init__(self, directory: str, number: int, request: dict[str, Any], recorded: Recorded) -> None:
        self.directory, self.number = directory, number
        out, err = (os.path.join(directory, "step-{}.{}".format(number, name)) for name in ("out", "err"))
        try:
            self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
                request["argv"], env=request["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/"
            )
        except OSError as error:
            with open(err, "a") as handle:
                handle.write("jupyter-asgard: the node could not run srun: {}\n".format(error))
            write_whole(directory, "step-{}.exit".format(number), 127)
            self.process = None
            return
        assert self.process.stdout is not None and self.process.stderr is not None
        self.copies = [
            threading.Thread(target=copy_output, args=(self.process.stdout, out, recorded), daemon=True),
            threading.Thread(target=copy_output, args=(self.process.stderr, err, None), daemon=True),
        ]
        for copy in self.copies:
            copy.start()
        threading.Thread(target=self.wait, daemon=True).start()

    def wait(self) -> None:
        assert self.process is not None
        status = self.process.wait()
        for copy in self.copies:
            copy.join()
        write_whole(self.directory, "step-{}.exit".format(self.number), status)

    def deliver(self) -> None:
        """A signal the server asked for with step-N.signal."""
        path = os.path.join(self.directory, "step-{}.signal".format(self.number))
        try:
            with open(path) as handle:
                name = handle.read().strip()
            os.remove(path)
        except OSError:
            return
        if self.process is not None and self.process.poll() is None and name in SIGNALS:
            self.process.send_signal(SIGNALS[name])


def take_requests(directory: str, steps: dict[int, Step], recorded: Recorded) -> None:
    for name in sorted(os.listdir(directory)):
        if not (name.startswith("start-") and name.endswith(".json")):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path) as handle:
                request = json.load(handle)
            os.remove(path)
            number = int(name[len("start-") : -len(".json")])
        except (OSError, ValueError):
            continue
        steps[number] = Step(directory, number, request, recorded)


def held_for(directory: str) -> float:
    """Seconds since a server last said it holds the kernel."""
    try:
        return time.time() - os.stat(os.path.join(directory, "held")).st_mtime
    except OSError:
        return float("inf")


def end(directory: str, reason: str, recorded: Recorded) -> None:
    recorded.flush(directory)
    write_whole(directory, "ended.json", dict(reason=reason, time=time.time()))
    sys.exit(0)


def main() -> None:
    os.umask(0o077)
    directory = os.environ["ASGARD_KEEPER_DIR"]
    grace = float(os.environ["ASGARD_DETACH_GRACE"])
    recorded = Recorded()
    # Slurm signals the batch script before it kills the job: at its time limit, on scancel, on a node's drain.
    signal.signal(signal.SIGTERM, lambda signum, frame: end(directory, "signal", recorded))
    write_whole(
        directory,
        "keeper.json",
        dict(node=os.environ.get("SLURMD_NODENAME", ""), job=os.environ.get("SLURM_JOB_ID", ""), pid=os.getpid()),
    )
    steps: dict[int, Step] = {}
    flushed = time.monotonic()
    while True:
        if not os.path.isdir(directory):  # the kernel was shut down and its record removed
            sys.exit(0)
        take_requests(directory, steps, recorded)
        for step in steps.values():
            step.deliver()
        if os.path.exists(os.path.join(directory, "released")):
            end(directory, "released", recorded)
        if held_for(directory) > grace:
            end(directory, "grace", recorded)
        if time.monotonic() - flushed > FLUSH:
            recorded.flush(directory)
            flushed = time.monotonic()
        time.sleep(POLL)


if __name__ == "__main__":
    main()
