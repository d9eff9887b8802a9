"""The kernel's srun step: launch, handshake, readiness, signals, output.

srun's stdout carries the bootstrap's one-line handshake (address and ports
chosen on the node) and then the kernel's own output, which goes to the
server log.  A start counts only when the kernel answers on its heartbeat
port from here: srun's exit status alone is not a reliable verdict on every
Slurm version, and an answer also proves the node is reachable.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import zmq
import zmq.asyncio

from ..containers.container_phases import phase_of, setting_up
from ..containers.step_failures import summarize
from ..errors import KernelStartError, SlurmError
from ..node.bootstrap import HANDSHAKE, HANDSHAKE_NONCE, KILL_AFTER, KILL_NOW
from ..slurm.slurm_client import SlurmClient
from .handshake import new_nonce, parse_handshake

READ_CHUNK = 64 * 1024
MAX_LINE = 16 * 1024  # what the server log and a start error keep of one line of srun's output
PORT_TAKEN = "Address already in use"  # zmq's words (EADDRINUSE), as the kernel prints them
# Starts srun: here, as an asyncio subprocess, or on the node through a detachable kernel's keeper (KeptProcess).
Spawn = Callable[[list[str], dict[str, str]], Awaitable[Any]]
TERM_PATIENCE = KILL_AFTER + 1.5  # the bootstrap kills a kernel that ignores TERM after KILL_AFTER
KILL_NOW_PATIENCE = 1.5  # the bootstrap kills the kernel at once on KILL_NOW, then removes its file and ends


class KernelStep:
    """One run of the kernel: an srun process inside the allocation."""

    def __init__(
        self, client: SlurmClient, log: logging.Logger, kernel_id: str, job_id: str, spawn: Spawn | None = None
    ) -> None:
        self.client = client
        self.spawn = spawn or client.spawn
        self.log = log
        self.kernel_id = kernel_id
        self.job_id = job_id
        self.process: Any = None  # an asyncio subprocess, or a KeptProcess
        self.handshake: dict[str, Any] = {}
        self.output: deque[str] = deque(maxlen=200)
        self.phase = ""  # the container's setup, as Pyxis reports it (container_phases.py); "" before any
        self.phase_since = 0.0  # loop time the phase began
        self.phases: list[str] = []  # every phase of this start, in order (did Pyxis create the container?)
        self._handshake: asyncio.Future[dict[str, Any]] | None = None
        self._nonce = ""  # this start's secret, which only the bootstrap's own handshake carries (handshake.py)
        self._readers: list[asyncio.Task[None]] = []

    @property
    def step_id(self) -> str:
        return str(self.handshake.get("step", ""))

    async def start(self, argv: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
        """Run srun and wait for the bootstrap's handshake; raise KernelStartError with srun's words otherwise."""
        self._handshake = asyncio.get_running_loop().create_future()
        self._nonce = new_nonce()
        self.process = await self.spawn(argv, {**env, HANDSHAKE_NONCE: self._nonce})
        self._follow()
        exited = asyncio.ensure_future(self._wait_output_done())
        either: set[asyncio.Future[Any]] = {self._handshake, exited}
        done, _ = await asyncio.wait(either, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        exited.cancel()
        if self._handshake.done():
            self.handshake = self._handshake.result()
            return self.handshake
        raise self._failure(
            "the kernel's container did not start"
            if done
            else f"the kernel's container did not start within {timeout:.0f}s"
        )

    def adopt(self, process: Any, handshake: dict[str, Any]) -> None:
        """Take over a step another server started (a detached kernel's): its output from now on."""
        self.process, self.handshake = process, handshake
        self._follow()

    def _follow(self) -> None:
        self._readers = [
            asyncio.ensure_future(self._read(self.process.stdout, handshake=True)),
            asyncio.ensure_future(self._read(self.process.stderr, handshake=False)),
        ]

    async def wait_ready(self, timeout: float, curve: tuple[bytes, bytes] | None = None) -> None:
        """Until the kernel echoes on its heartbeat port, or the step ends. curve: the kernel's key pair
        (public, secret), with which jupyter_client's clients connect to an encrypted kernel too."""
        context = zmq.asyncio.Context.instance()
        socket = context.socket(zmq.REQ)
        socket.linger = 0
        if curve:
            socket.curve_serverkey, socket.curve_publickey, socket.curve_secretkey = curve[0], curve[0], curve[1]
        socket.setsockopt(zmq.RECONNECT_IVL, 10)  # the kernel binds moments from now: retry fast
        socket.connect(f"tcp://{self.handshake['ip']}:{self.handshake['hb_port']}")
        try:
            await socket.send(b"ping")
            deadline = asyncio.get_running_loop().time() + timeout
            while asyncio.get_running_loop().time() < deadline:
                if await socket.poll(200):
                    await socket.recv()
                    return
                if self.poll() is not None:
                    await self._drain()
                    raise self._failure("the kernel exited while starting")
        finally:
            socket.close()
        raise self._failure(
            f"the kernel on {self.handshake.get('node')} did not answer at {self.handshake['ip']} within "
            f"{timeout:.0f}s (is the node's address reachable from this host?)"
        )

    def lost_a_port(self) -> bool:
        """Whether the kernel ended because one of its ports was taken before it could bind it."""
        return self.poll() is not None and any(PORT_TAKEN in line for line in self.output)

    def poll(self) -> int | None:
        """None while srun runs, else its exit status."""
        return None if self.process is None else self.process.returncode

    async def wait(self) -> int | None:
        if self.process is None:
            return None
        status: int = await self.process.wait()
        await self._drain()
        return status

    async def signal(self, name: str) -> None:
        """Deliver a signal to the kernel through Slurm; srun's own interrupt handling would kill the step."""
        if self.poll() is None and self.step_id:
            await self.client.scancel(self.job_id, self.step_id, name)

    async def stop(self, grace: float = 10.0) -> None:
        """End the step politely: TERM first, so the kernel may end by itself and the bootstrap removes the
        connection file holding the session key, then KILL; kill srun itself only if Slurm cannot be reached."""
        await self._end(("TERM", TERM_PATIENCE), ("KILL", grace))

    async def kill(self, grace: float = 10.0) -> None:
        """End the kernel at once (jupyter_client's kill): the bootstrap kills it with no grace, removes the
        connection file and ends; Slurm's KILL follows only if the step lingers."""
        await self._end((KILL_NOW.name.removeprefix("SIG"), KILL_NOW_PATIENCE), ("KILL", grace))

    async def _end(self, *signals: tuple[str, float]) -> None:
        """Each signal in turn, through Slurm, until the step has ended within its patience."""
        if self.process is None:
            return
        for name, patience in signals:
            if self.poll() is not None:
                break
            await self._deliver(name)
            if await self._ended_within(patience):
                break
        else:
            self.process.kill()
        await self.wait()

    async def _deliver(self, name: str) -> None:
        """A signal for the step through Slurm; before the step is known, srun ends it on TERM itself."""
        assert self.process is not None
        try:
            if self.step_id:
                await self.signal(name)
            else:
                self.process.terminate()
        except (SlurmError, ProcessLookupError) as error:
            self.log.warning("Kernel %s: %s", self.kernel_id, error)

    async def _ended_within(self, seconds: float) -> bool:
        assert self.process is not None
        try:
            await asyncio.wait_for(asyncio.shield(self.process.wait()), seconds)
        except asyncio.TimeoutError:
            return False
        return True

    async def _read(self, stream: asyncio.StreamReader | None, handshake: bool) -> None:
        """srun's output, line by line, to its end: a reader that stopped would leave srun blocked on a full
        pipe, and the kernel's shutdown hanging. Lines longer than MAX_LINE are cut (a cell may print
        megabytes without a newline; asyncio's line reader gives up on 64 KiB)."""
        assert stream is not None
        buffered, cutting = b"", False
        while chunk := await stream.read(READ_CHUNK):
            *lines, buffered = (buffered + chunk).split(b"\n")
            for raw in lines:
                if not cutting:
                    self._take(raw.decode(errors="replace"), handshake)
                cutting = False
            if len(buffered) > MAX_LINE:
                if not cutting:
                    self._take(buffered[:MAX_LINE].decode(errors="replace") + " [line cut]", handshake)
                buffered, cutting = b"", True
        if buffered and not cutting:
            self._take(buffered.decode(errors="replace"), handshake)

    def _take(self, line: str, handshake: bool) -> None:
        """One line of srun's output: the handshake where it is the bootstrap's genuine one, else the kernel's
        output (also a line that only looks like a handshake: whatever the kernel prints must not count)."""
        found = parse_handshake(line, self._nonce) if handshake and HANDSHAKE in line else None
        if found and self._handshake and not self._handshake.done():
            line, handshake_info = found
            self._handshake.set_result(handshake_info)
            if not line:
                return
        self.output.append(line)
        phase = "" if handshake else phase_of(line)
        if phase:
            self.phase, self.phase_since = phase, asyncio.get_running_loop().time()
            self.phases.append(phase)
            self.log.debug("[kernel %s] container: %s", self.kernel_id, phase)
            return
        self.log.info("[kernel %s] %s", self.kernel_id, line)

    async def _wait_output_done(self) -> None:
        await self._drain()
        assert self.process is not None
        await self.process.wait()

    async def _drain(self) -> None:
        """Until srun's output is read to the end (asyncio.wait: cancelling the waiter spares the readers)."""
        if self._readers:
            await asyncio.wait(self._readers)

    def _failure(self, what: str) -> KernelStartError:
        text, hint = summarize(list(self.output))
        if setting_up(self.phase):
            what += f" (the container's last step: {self.phase})"
        return KernelStartError(what, hint, text)
