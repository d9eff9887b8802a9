"""Pyxis's side of the steps: the options that put the kernel in its container, the steps that join a
running kernel's container (a shell for its user, and a save of its filesystem), and the steps that run enroot
on a node outside any container (an image's import, its digest, a container's removal).

The first two attach to the kernel's named container on its node with Pyxis's ``NAME:exec``: the new step enters
the running container (its mounts, its files, what was installed in it), as a step of the kernel's own
allocation that overlaps the kernel's (``--overlap``), so it takes nothing from the kernel and ends with the
allocation. Pyxis ignores mounts and image when it attaches, so none are given.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import Any

from ..launch.launch_config import CONTAINER_BASE_NAME, LaunchConfig
from ..launch.mounts import Mount, render_mounts
from ..node import importer
from ..slurm.slurm_commands import ONE_TASK, own_job_argv
from .images import MANIFEST_SUFFIX, SQUASHFS_SUFFIX

SAVE_STEP_NAME = "jupyter-save-image"
IMPORT_STEP_NAME = "jupyter-asgard-import"  # an image's import, or its digest's lookup (node/importer.py)
IMPORTER_SOURCE = Path(importer.__file__).read_text()
IMAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
CONTAINER_NAME = re.compile(rf"{CONTAINER_BASE_NAME}\Z")
# What a save step runs in the container while Pyxis exports it: the installed distributions, as
# `pip freeze` lists them, without needing pip (the image's python3 runs the kernel, so it is there).
PACKAGES = (
    "import importlib.metadata as m\n"
    "seen = {}\n"
    "for d in m.distributions():\n"
    "    name = d.metadata['Name']\n"
    "    if name and name.lower() not in seen:\n"
    "        seen[name.lower()] = '%s==%s' % (name, d.version)\n"
    "print('\\n'.join(sorted(seen.values(), key=str.lower)))\n"
)


def container_options(
    config: LaunchConfig, mounts: list[Mount], workdir: str, container_name: str, env_names: list[str]
) -> list[str]:
    """Pyxis's srun options for the kernel's container."""
    options = [f"--container-image={config.image}"]
    if mounts:
        options.append(f"--container-mounts={render_mounts(mounts)}")
    options.append(f"--container-workdir={workdir}")
    if container_name:
        options.append(f"--container-name={container_name}")
    flags = {
        "writable": (config.container_writable, "--container-writable", "--container-readonly"),
        "remap_root": (config.container_remap_root, "--container-remap-root", "--no-container-remap-root"),
        "mount_home": (config.container_mount_home, "--container-mount-home", "--no-container-mount-home"),
    }
    options += [on if value else off for value, on, off in flags.values() if value is not None]
    if env_names:
        options.append(f"--container-env={','.join(env_names)}")
    return options


def container_problem(provisioner: Any, what: str) -> str:
    """Why the kernel has no running container that a step can join to be `what` ("" when it has one)."""
    if not provisioner.node or provisioner.step is None:
        return f"the kernel is not running yet: its container can be {what} once it has started"
    if not provisioner.container:
        return (
            f"this kernel runs without a named container, so it cannot be {what}: this Jupyter server starts "
            "kernels on the node without Pyxis (c.PyxisProvisioner.containers = False)"
        )
    return ""


# How Pyxis names a named container's filesystem in enroot, with container_scope=global (Asgard's: a job-scoped
# container goes with its job).
ENROOT_NAME_PREFIX = "pyxis_"


NOTHING_MADE = "No such file or directory"  # enroot remove's words for a container it has no files of


def remove_container_argv(job_id: str, node: str, container: str, srun: str = "srun") -> list[str]:
    """A step in the kernel's allocation, on its node, outside any container, that removes the named
    container's filesystem as the user (enroot remove): what a start stopped while enroot unpacked it left."""
    return [
        srun,
        "--job-name=jupyter-asgard-cleanup",
        *node_options(job_id, node),
        *remove_container_command(container),
    ]


CONTAINER_JOB_WAIT = 60  # seconds a container's own job may wait for room on its node (srun --immediate)


def container_job_argv(
    name: str, comment: str, node: str, partition: str, minutes: int, command: list[str], srun: str = "srun"
) -> list[str]:
    """A job of its own on node, outside any kernel's allocation, that fails rather than queue when the node has
    no room: a container's save (to bring it to another node) or its removal."""
    options = {
        "--nodelist": node,
        "--partition": partition,
        "--time": str(max(minutes, 1)),
        "--immediate": str(CONTAINER_JOB_WAIT),
    }
    return own_job_argv(name, comment, options, command, srun=srun)


def save_container_command(container: str, path: str) -> list[str]:
    """Pyxis starts the user's named container on its node (without an image: it must be there) and exports its
    filesystem to path once `true` has run."""
    return [f"--container-name={container}:no_exec", f"--container-save={path}", "true"]


def remove_container_command(container: str) -> list[str]:
    """enroot, as the user, removes the named container's filesystem from the node's storage."""
    return ["enroot", "remove", "--force", ENROOT_NAME_PREFIX + container]


def node_options(job_id: str, node: str) -> list[str]:
    """A step of one task in an allocation, on its node, beside whatever else runs there (``--overlap``)."""
    return [f"--jobid={job_id}", f"--nodelist={node}", *ONE_TASK, "--overlap"]


def attach_options(job_id: str, node: str, container: str) -> list[str]:
    """A step beside the kernel's, in its allocation, on its node, inside its running container."""
    return [*node_options(job_id, node), f"--container-name={container}:exec"]


def import_step_argv(
    job_id: str, node: str, out: str, uri: str, python: str = "python3", srun: str = "srun"
) -> list[str]:
    """`enroot import -o out uri` on the node, outside any container, reported line by line (node/importer.py)."""
    return _importer_argv(job_id, node, python, srun, "import", out, uri)


def digest_step_argv(job_id: str, node: str, uri: str, python: str = "python3", srun: str = "srun") -> list[str]:
    """`enroot digest uri` on the node: the manifest digest uri names now (node/importer.py's DIGEST line)."""
    return _importer_argv(job_id, node, python, srun, "digest", uri)


def importer_command(python: str, *arguments: str) -> list[str]:
    """The importer (node/importer.py) run by the node's Python, given as a command line (the site's
    c.PyxisProvisioner.keeper_python, such as ``/usr/bin/env python3``)."""
    return [*shlex.split(python), "-I", "-S", "-c", IMPORTER_SOURCE, *arguments]


def _importer_argv(job_id: str, node: str, python: str, srun: str, *arguments: str) -> list[str]:
    return [srun, f"--job-name={IMPORT_STEP_NAME}", *node_options(job_id, node), *importer_command(python, *arguments)]


def terminal_argv(
    job_id: str, node: str, container: str, workdir: str, shell: list[str], srun: str = "srun"
) -> list[str]:
    """An interactive shell in the kernel's container, in the kernel's working directory."""
    return [
        srun,
        "--job-name=jupyter-terminal",
        *attach_options(job_id, node, container),
        f"--container-workdir={workdir}",
        "--pty",
        *shell,
    ]


def save_argv(
    job_id: str, node: str, container: str, path: str, python: str = "python3", srun: str = "srun"
) -> list[str]:
    """Pyxis exports the running container's filesystem to path (a squashfs) once the step's command, the
    package listing, has ended."""
    return [
        srun,
        f"--job-name={SAVE_STEP_NAME}",
        *attach_options(job_id, node, container),
        f"--container-save={path}",
        python,
        "-I",
        "-c",
        PACKAGES,
    ]


def image_name_problem(name: str) -> str:
    """Why name cannot be a saved image's name ("" when it can)."""
    if IMAGE_NAME.match(name):
        return ""
    return (
        f"the image name {name!r} is not allowed: use 1 to 64 letters, digits, '.', '_' or '-', starting with a "
        "letter or digit (it becomes the file name NAME.sqsh)"
    )


def container_name_problem(name: str) -> str:
    """Why name cannot be a named container's, without Pyxis's flag ("" when it can): the kernelspec's rule for
    container_name, so that every container a kernel can make is one that can be named to remove it, and
    nothing else reaches enroot (no path, no option)."""
    if CONTAINER_NAME.match(name):
        return ""
    return (
        f"{name!r} is not a container's name: it has letters, digits, '.', '_' and '-' only (the kernelspec's "
        "container_name without its :flag)"
    )


def saved_image_path(directory: str, name: str) -> str:
    return os.path.join(directory, name + SQUASHFS_SUFFIX)


def manifest_path(image_path: str) -> str:
    return image_path + MANIFEST_SUFFIX


def packages_of(stdout: str) -> list[str]:
    """The save step's package listing: NAME==VERSION lines."""
    return [line.strip() for line in stdout.splitlines() if "==" in line]
