"""The environment srun passes into the kernel's container.

srun exports its whole environment to the task, so whatever the Jupyter
server runs with would reach the kernel: its virtualenv on PATH, its
PYTHONPATH, its Jupyter settings, a Slurm job of its own.  None of that
belongs in a container with its own Python.  What the kernelspec asks for
does, and must win over the image's values (Pyxis lets the image win unless
a name is listed in ``--container-env``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping

DROPPED = frozenset(
    {
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "PYTHONEXECUTABLE",
        "PYTHONUSERBASE",
        "VIRTUAL_ENV",
        "VIRTUAL_ENV_PROMPT",
        "IPYTHONDIR",
        "MPLBACKEND",
        "LD_PRELOAD",
    }
)
# PYXIS_CONTAINER_* act as Pyxis's options and ENROOT_* as enroot's settings (Pyxis hands the step's
# environment to enroot): the server's own must not change how every kernel's container runs.
DROPPED_PREFIXES = (
    "JUPYTER",
    "JPY_",
    "CONDA_",
    "PYXIS_CONTAINER_",
    "ENROOT_",
    "SLURM_",
    "SRUN_",
    "SALLOC_",
    "SBATCH_",
    "ASGARD_",
    "PIXI_",
    "UV_",
)
KEPT = frozenset({"SLURM_CONF"})  # srun itself needs it to find the cluster
# Names through which a kernelspec's env would steer Slurm (SLURM_STEP_GRES hands out GPUs, SLURM_CONF another
# cluster), Pyxis's options or enroot's settings, or the dynamic loader of srun itself, which runs on the
# Jupyter server's host as the user who starts the kernel (LD_PRELOAD, LD_LIBRARY_PATH, LD_AUDIT load a library
# of the kernelspec's choosing into it): the kernelspec may not set them.
STEERING_PREFIXES = ("SLURM_", "SALLOC_", "SRUN_", "SBATCH_", "PYXIS_", "ENROOT_", "LD_")


def steering_names(names: Iterable[str]) -> list[str]:
    """The names among a kernelspec's env that would steer Slurm, Pyxis, enroot or srun's dynamic loader."""
    return sorted(name for name in names if name.startswith(STEERING_PREFIXES))


def server_prefixes(environ: Mapping[str, str]) -> list[str]:
    """The server's private Python environments (virtualenv, conda): their PATH entries must not leak.

    A system Python (sys.prefix == sys.base_prefix, e.g. /usr) is no private
    environment: stripping it would take /usr/bin off PATH.
    """
    prefixes = {sys.prefix} if sys.prefix != sys.base_prefix else set()
    prefixes.update(environ[name] for name in ("VIRTUAL_ENV", "CONDA_PREFIX") if environ.get(name))
    return sorted(os.path.normpath(prefix) for prefix in prefixes)


def clean_path(path: str, prefixes: list[str]) -> str:
    def inside(entry: str) -> bool:
        entry = os.path.normpath(entry)
        return any(entry == prefix or entry.startswith(prefix + os.sep) for prefix in prefixes)

    return os.pathsep.join(entry for entry in path.split(os.pathsep) if entry and not inside(entry))


def import_environment(server_env: Mapping[str, str]) -> dict[str, str]:
    """An image import's srun: the server's environment cleaned as a kernel step's (no PYXIS_CONTAINER_* that
    would put enroot in a container, no SLURM_* of a job the server runs in), but with the user's ENROOT_*
    settings, which enroot on the node reads as when the user runs it (ENROOT_CONFIG_PATH: the registry
    credentials; the cache and temporary directories)."""
    env = step_environment(server_env, {}, {})
    env.update({name: value for name, value in server_env.items() if name.startswith("ENROOT_")})
    return env


def step_environment(
    server_env: Mapping[str, str], kernelspec_env: Mapping[str, str], asgard: Mapping[str, str]
) -> dict[str, str]:
    """srun's environment: the server's, cleaned, plus the kernelspec's and the bootstrap's ASGARD_* values."""
    env = {
        name: value
        for name, value in server_env.items()
        if name in KEPT or (name not in DROPPED and not name.startswith(DROPPED_PREFIXES))
    }
    if "PATH" in env:
        env["PATH"] = clean_path(env["PATH"], server_prefixes(server_env))
    env.update({name: value for name, value in kernelspec_env.items() if not name.startswith(STEERING_PREFIXES)})
    env.update(asgard)
    return env
