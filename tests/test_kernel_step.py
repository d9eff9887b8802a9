"""The kernel step's srun as the provisioner runs it: through the one Slurm client, its output read to the end."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from jupyter_asgard.errors import SlurmError
from jupyter_asgard.kernel.kernel_step import MAX_LINE, KernelStep
from jupyter_asgard.node.bootstrap import HANDSHAKE
from jupyter_asgard.slurm.slurm_client import CommandResult, SlurmClient


async def read_all(*chunks: bytes, handshake: bool = False) -> KernelStep:
    step = KernelStep(SlurmClient(), logging.getLogger("test"), "k1", "7")
    step._handshake = asyncio.get_running_loop().create_future()
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
    step = await read_all(b"hello\n" + HANDSHAKE.encode() + b'{"ip": "10.0', b'.0.1"}\nbye\n', handshake=True)
    assert step._handshake is not None and step._handshake.result() == {"ip": "10.0.0.1"}
    assert list(step.output) == ["hello", "bye"]


async def test_the_handshake_is_found_after_a_kernel_line_that_has_no_newline_yet() -> None:
    """ipykernel's banner and the bootstrap's handshake share stdout; a banner line written without its newline
    just before the handshake (seen in CI) hid the handshake and the start timed out."""
    step = await read_all(
        b"--existing kernel.json" + HANDSHAKE.encode() + b'{"ip": "10.0.0.1"}\n\nbye\n', handshake=True
    )
    assert step._handshake is not None and step._handshake.result() == {"ip": "10.0.0.1"}
    assert list(step.output) == ["--existing kernel.json", "", "bye"]


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
