"""From a launch configuration to the exact salloc and srun command lines: one derivation, two users.

The provisioner runs these commands; the container panel shows them before
anything runs.  Both call the functions here, so the preview is the command.
"""

from __future__ import annotations

import getpass
import hashlib
import re
import shlex

from ..launch.launch_config import LaunchConfig
from ..launch.mounts import Mount, describe_characters, unmountable_characters
from ..slurm.slurm_commands import HOLDER_MARK, job_name, salloc_argv, srun_argv
from .container_phases import PROGRESS_OPTION
from .container_steps import container_options

OWN_CONTAINER_FLAG = "no_exec"
BOOTSTRAP_PLACEHOLDER = "<jupyter-asgard bootstrap>"


def step_mounts(config: LaunchConfig, workdir: str, mount_workdir: bool) -> list[Mount]:
    """The configured mounts, plus the workdir at its own path when nothing covers it (as the site's
    srun example mounts "$(pwd)")."""
    mounts = config.parsed_mounts()
    if _mounts_workdir(config, mounts, workdir, mount_workdir):
        mounts.append(Mount(workdir, workdir))
    return mounts


def workdir_problems(config: LaunchConfig, workdir: str, mount_workdir: bool) -> list[str]:
    """A notebook directory that Pyxis cannot mount: refused before anything is submitted, since in
    --container-mounts a ',' or ':' in it would mount other directories and a '"', '$' or '`' would
    break the script Pyxis writes for enroot."""
    unsafe = unmountable_characters(workdir)
    if not unsafe or not _mounts_workdir(config, config.parsed_mounts(), workdir, mount_workdir):
        return []
    return [
        f"the notebook's directory {workdir!r} cannot be mounted into the container: it contains "
        f"{describe_characters(unsafe)}, which Pyxis cannot carry in --container-mounts; rename the directory "
        "(or one above it), or give the kernel a mount that covers it"
    ]


def _mounts_workdir(config: LaunchConfig, mounts: list[Mount], workdir: str, mount_workdir: bool) -> bool:
    return mount_workdir and not config.workdir and not any(mount.covers(workdir) for mount in mounts)


def container_name(config: LaunchConfig, template: str, kernel_name: str, job_id: str) -> str:
    """The named container: the configured one, else one per kernelspec and image, reused across
    restarts and later kernels so installed packages persist and nodes do not fill up with copies.

    Without a flag Pyxis *attaches* to a container of that name already running on the node (another
    notebook's kernel of the same kernelspec), ignoring this kernel's mounts and workdir; ``no_exec``
    starts a container of its own from the same filesystem instead.
    """
    name = config.container_name or re.sub(
        r"[^A-Za-z0-9_.-]",
        "-",
        template.format(
            kernel_name=kernel_name,
            user=getpass.getuser(),
            job_id=job_id,
            image_hash=hashlib.sha256(config.image.encode()).hexdigest()[:8],
        ),
    )
    return name if ":" in name else f"{name}:{OWN_CONTAINER_FLAG}"


def container_base_name(name: str) -> str:
    """The container's name without Pyxis's flag: what identifies its filesystem on a node."""
    return name.partition(":")[0]


def lasting_container_name(config: LaunchConfig, template: str, kernel_name: str) -> str:
    """The container's name (without flag) where it outlives the job, so that a later kernel meets it again on
    its node; "" where the name holds the job's id (a container per job)."""
    names = {container_base_name(container_name(config, template, kernel_name, job)) for job in ("1", "2")}
    return names.pop() if len(names) == 1 else ""


def container_env_names(config: LaunchConfig, kernelspec_env: list[str]) -> list[str]:
    """Names whose value must win over the image's: container_env and the kernelspec's env."""
    return list(dict.fromkeys([*config.container_env, *kernelspec_env]))


def kernel_step_argv(
    config: LaunchConfig,
    *,
    job_id: str,
    workdir: str,
    mount_workdir: bool,
    name_template: str,
    kernel_name: str,
    kernelspec_env: list[str],
    command: list[str],
    srun: str = "srun",
    containers: bool = True,
    progress: bool = True,
) -> list[str]:
    """containers=False: a cluster without Pyxis; the step runs on the node as it is, in the workdir.
    progress: Pyxis's setup progress on the step's stderr (container_phases.py)."""
    if not containers:
        return srun_argv(config, job_id, [f"--chdir={config.workdir or workdir}"], command, srun=srun)
    options = container_options(
        config,
        step_mounts(config, workdir, mount_workdir),
        config.workdir or workdir,
        container_name(config, name_template, kernel_name, job_id),
        container_env_names(config, kernelspec_env),
    )
    return srun_argv(config, job_id, [*options, *([PROGRESS_OPTION] if progress else [])], command, srun=srun)


def preview(
    config: LaunchConfig,
    *,
    kernel_name: str,
    workdir: str,
    mount_workdir: bool,
    name_template: str,
    kernel_argv: list[str],
    bootstrap_python: str = "python3",
    progress: bool = True,
) -> str:
    """The two commands a kernel start runs, as a shell would show them (ids not known yet in <>)."""
    salloc = salloc_argv(config, job_name("<kernel id>"), f"{HOLDER_MARK}:<server>")
    srun = kernel_step_argv(
        config,
        job_id="<job id>",
        workdir=workdir,
        mount_workdir=mount_workdir,
        name_template=name_template,
        kernel_name=kernel_name,
        kernelspec_env=[],
        command=[bootstrap_python, "-I", "-S", "-c", BOOTSTRAP_PLACEHOLDER, *kernel_argv],
        progress=progress,
    )
    return f"{_shell(salloc)}\n{_shell(srun)}"


def _shell(argv: list[str]) -> str:
    """One option per line, then the command on one line, as people write long srun calls."""
    first_command = next((i for i, arg in enumerate(argv[1:], 1) if not arg.startswith("-")), len(argv))
    lines = [shlex.quote(argv[0]), *map(shlex.quote, argv[1:first_command])]
    if first_command < len(argv):
        lines.append(shlex.join(argv[first_command:]))
    return " \\\n    ".join(lines)
