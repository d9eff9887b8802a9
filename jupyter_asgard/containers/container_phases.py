"""What Pyxis reports while it sets up a kernel's container, as the kernel row's phase.

Pyxis logs its progress (importing a docker image, creating the container
filesystem, starting the container, how long the setup took) with slurm_info in
slurmstepd, which on Slurm 22.05 reaches only slurmd's log, not srun's stderr,
even with ``srun -v``. ``--slurmd-debug=1`` copies slurmstepd's messages of that
level to the step's stderr: Pyxis's lines, and nothing else at that level. They
are read from there into the phase and kept out of the server log's kernel output.
"""

from __future__ import annotations

import re

PROGRESS_OPTION = "--slurmd-debug=1"  # srun's: slurmstepd's info messages (Pyxis's progress) on the step's stderr
_PROGRESS = re.compile(
    r"^slurmstepd-\S+: pyxis: (?P<phase>importing docker image|creating container filesystem"
    r"|starting container|completed container setup in \d+ ms|reusing existing container filesystem)"
)


def phase_of(line: str) -> str:
    """The container phase a line of srun's stderr reports ("creating container filesystem", ...), or ""."""
    match = _PROGRESS.match(line)
    return match["phase"] if match else ""


def setting_up(phase: str) -> bool:
    """Whether the phase is the container's setup, before the command in it runs (an error then is Pyxis's)."""
    return phase.startswith(("importing", "creating", "reusing"))


CREATING = "creating container filesystem"  # Pyxis found no container of that name on the node and makes one


def half_made(phase: str) -> bool:
    """Whether a step ended in this phase leaves its named container half unpacked: enroot was writing its
    filesystem, and Pyxis would reuse what is there at the next start, which then fails for good."""
    return phase == CREATING
