"""Why a step failed, from what srun, Pyxis and enroot printed: the lines that explain it, and how to fix it.

Shared by the kernel's step (a start that failed) and a save of its container (an export that failed).
"""

from __future__ import annotations

import re

from ..node.bootstrap import FAILURE
from .container_phases import phase_of

OUTPUT_HINTS = {
    "No module named ipykernel": "the image has no ipykernel: choose an image with Jupyter (NGC PyTorch has it), "
    "or pip install ipykernel in a writable named container",
    "was not found in the container": "the kernelspec's argv[0] must be a program inside the image (e.g. python3)",
    "couldn't chdir": "the workdir must exist inside the container: mount it, or pick another workdir",
    "failed to import docker image": "check the image URI (docker://REGISTRY#IMAGE:TAG) and your enroot "
    "registry credentials",
    "mount": "check the mounts: every source must exist on the compute node",
    "No such file or directory": "check the image path and the mount sources: they must exist on the compute node",
    "Invalid generic resource": "check the GPU type (`sinfo --Format=PartitionName,Gres` lists them)",
}


# Lines of a failed container start that explain nothing: enroot's progress as Pyxis relays its log, and
# Slurm's generic words for any plugin failure.
NOISE = re.compile(
    r"pyxis: +(?:\[INFO\]|Parallel unsquashfs|\d+ inodes|created \d+ |\s*$)"
    r"|spank: required plugin|Failed to invoke spank plugin stack|pyxis: child \d+ failed"
)


def summarize(lines: list[str]) -> tuple[str, str]:
    """The lines that explain a failed step, and a hint for them."""
    important = [
        line for line in lines if ("pyxis" in line or FAILURE in line) and not NOISE.search(line) and not phase_of(line)
    ] or [line for line in lines if not phase_of(line)][-8:]
    text = "\n".join(line.replace(FAILURE, "") for line in important[-8:])
    hint = next((hint for needle, hint in OUTPUT_HINTS.items() if needle in "\n".join(lines)), "")
    return text, hint
