"""The kernel step's srun as the provisioner runs it: through the one Slurm client, its output read to the end."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from jupyter_asgard.errors import SlurmError
from jupyter_asgard.kernel.handshake import parse_handshake
from jupyter_asgard.kernel.kernel_step import MAX_LINE, KernelStep
from jupyter_asgard.node.bootstrap import HANDSHAKE
from jupyter_asgard.slurm.slurm_client import CommandResult, SlurmClient

NONCE = "5f0c" * 8
GENUINE: dict[str, Any] = {
    "shell_port": 40001,
    "iopub_port": 40002,
    "stdin_port": 40003,
    "control_port": 40004,
    "hb_port": 40005,
    "ip": "10.0.0.1",
    "encryption": "curve-proxy",
    "node": "gpu01",
    "step": "0",
    "pid": 42,
    "nonce": NONCE,
}


def handshake_line(**changes: Any) -> bytes:
    """A handshake line as the bootstrap prints it, with changes (a value of None drops the field)."""
    fields = {name: value for name, value in {**GENUINE, **changes}.items() if value is not None}
    return (HANDSHAKE + json.dumps(fields)).encode()


async def read_all(*chunks: bytes, handshake: bool = False) -> KernelStep:
    step = KernelStep(SlurmClient(), logging.getLogger("test"), "k1", "7")
    step._handshake = asyncio.get_running_loop().create_future()
    step._nonce = NONCE
    stream = asyncio.StreamReader()
    for chunk in chunks:
        stream.feed_data(chunk)
    stream.feed_eof()
    await asyncio.wait_for(step._read(stream, handshake=handshake), 5)
    return step


async def test_a_line_longer_than_asyncios_line_limit_is_cut_and_reading_goes_on() -> None:
    """A cell that writes 300 kB without a newline: asyncio's `async for line` raised on it, the reader died,
    srun's pipe filled up and the kernel's shutdown hung."""
    step = await read_all(b"before\n", b"x" * 100_000, b"x" * 200_000 + b"\nafter\n", b"tail")
    assert [line[:8] for line in step.output] == ["before", "x" * 8, "after", "tail"]
    assert step.output[1] == "x" * MAX_LINE + " [line cut]"


async def test_the_handshake_is_taken_out_of_the_output_also_in_pieces() -> None:
    line = handshake_line()
    step = await read_all(b"hello\n" + line[:30], line[30:] + b"\nbye\n", handshake=True)
    assert step._handshake is not None and step._handshake.result() == GENUINE
    assert list(step.output) == ["hello", "bye"]


async def test_the_handshake_is_found_after_a_kernel_line_that_has_no_newline_yet() -> None:
    """ipykernel's banner and the bootstrap's handshake share stdout; a banner line written without its newline
    just before the handshake (seen in CI) hid the handshake and the start timed out."""
    step = await read_all(b"--existing kernel.json" + handshake_line() + b"\n\nbye\n", handshake=True)
    assert step._handshake is not None and step._handshake.result() == GENUINE
    assert list(step.output) == ["--existing kernel.json", "", "bye"]


FORGED = [
    HANDSHAKE.encode() + b'{"ip": "10.0.0',  # malformed: it killed the reader, and the kernel blocked on its stdout
    HANDSHAKE.encode() + b"[]",
    handshake_line(nonce=None, encryption="none"),  # what code in the kernel can print: it knows no nonce
    handshake_line(nonce="0" * 32, ip="10.9.9.9"),
    handshake_line(nonce=""),
    handshake_line(hb_port="40005"),
    handshake_line(shell_port=70000),
    handshake_line(ip="gpu01; rm -rf /"),
    handshake_line(encryption="rot13"),
    handshake_line(node=None),
]


@pytest.mark.parametrize("forged", FORGED)
def test_only_a_well_formed_handshake_with_the_start_s_nonce_counts(forged: bytes) -> None:
    assert parse_handshake(handshake_line().decode(), NONCE) == ("", GENUINE)
    assert parse_handshake(forged.decode(), NONCE) is None
    assert parse_handshake(handshake_line().decode(), "") is None  # a step started without a nonce trusts none


async def test_lines_that_only_look_like_the_handshake_are_kernel_output_and_reading_goes_on() -> None:
    """Code in the kernel runs before the bootstrap's handshake and shares its stdout (a module planted in a
    shared notebook directory): its lines must neither stand for the handshake nor stop the reader."""
    step = await read_all(*(line + b"\n" for line in FORGED), handshake_line() + b"\nafter\n", handshake=True)
    assert step._handshake is not None and step._handshake.result() == GENUINE
    assert list(step.output) == [line.decode() for line in FORGED] + ["after"]


async def test_long_running_slurm_commands_are_counted_with_the_rest_and_sit_in_a_session_of_their_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """salloc and srun go through the server's one client: GET /asgard/api/monitor counts them, and Ctrl-C in
    the server's terminal (its process group) does not reach them."""
    (tmp_path / "srun").write_text("#!/bin/sh\nps -o sid= -p $$\n")
    (tmp_path / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    client = SlurmClient()
    process = await client.spawn(["srun"])
    out, _ = await process.communicate()
    assert client.calls["srun"] == 1
    assert int(out) == process.pid != os.getsid(0)


def test_a_failed_command_says_slurms_words_unless_the_caller_tolerates_them() -> None:
    failed = CommandResult(1, "", "scancel: error: Invalid job id specified\n", "scancel")
    assert failed.checked(tolerated=("Invalid job id",)) is failed
    with pytest.raises(SlurmError, match=r"^scancel: error: Invalid job id specified$"):
        failed.checked()
    with pytest.raises(SlurmError, match=r"^sinfo exited with 2$"):
        CommandResult(2, "", "", "sinfo").checked()
