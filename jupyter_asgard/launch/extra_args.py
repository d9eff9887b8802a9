"""srun_args and salloc_args: extra Slurm options from a kernelspec, from a list of those that only shape the
kernel's own share (binding, hints, signals, mail, where it runs): an option not on it could take more than the
settings and the site's limits allow (--exclusive takes every GPU of a node, --tres-per-task any GPUs at all,
--clusters another cluster), and Slurm grows new ones with every release.

The provisioner's own options (the job's name and comment, the allocation a step runs in, one task on one
node, Pyxis's container options) are how it finds, holds and shapes a kernel's job; Slurm takes the last of
two, so the same option in srun_args or salloc_args would quietly win.  srun and salloc read their options
with getopt_long, where an option has more spellings than its full name: any unambiguous abbreviation of a
long option counts (``--job-na=x`` is ``--job-name=x``), and short options cluster (``-vJx`` is
``-v -J x``).  Each argument is read here as getopt_long reads it.  Pure: no Slurm.
"""

from __future__ import annotations

from collections.abc import Sequence


def _use(setting: str) -> str:
    return f"use the setting {setting!r} instead"


ONE_TASK = "leave it out: a kernel is one task on one node"
# Long options jupyter-asgard sets (without the leading "--"), each with what to do instead.
RESERVED_LONG: dict[str, str] = {
    "jobid": "leave it out: each kernel runs in an allocation of its own",
    "job-name": "leave it out: jupyter-asgard finds its kernels' jobs by their names",
    "comment": "leave it out: it records which Jupyter server holds the allocation",
    "no-shell": "leave it out: salloc holds the allocation for as long as the Jupyter server runs",
    "pty": "leave it out: the kernel talks to Jupyter through its ports, not a terminal",
    "export": "leave it out: set variables in the kernelspec's env (container_env lets them win over the image's)",
    "chdir": _use("workdir"),
    "nodes": ONE_TASK,
    "ntasks": ONE_TASK,
    "container-image": _use("image"),
    "container-mounts": _use("mounts"),
    "container-workdir": _use("workdir"),
    "container-name": _use("container_name"),
    "container-writable": _use("container_writable"),
    "container-readonly": _use("container_writable"),
    "container-remap-root": _use("container_remap_root"),
    "no-container-remap-root": _use("container_remap_root"),
    "container-mount-home": _use("container_mount_home"),
    "no-container-mount-home": _use("container_mount_home"),
    "container-env": _use("container_env"),
    # What the launch settings set: given again here it would also slip past the site's limits (a partition
    # outside allowed_partitions, more GPUs than max_gpus).
    "partition": _use("partition"),
    "gpus": _use("gpus"),
    "gres": _use("gpus") + " (GPUs are the resource Asgard kernels ask Slurm for)",
    "gpus-per-node": _use("gpus"),
    "gpus-per-task": _use("gpus"),
    "gpus-per-socket": _use("gpus"),
    "cpus-per-task": _use("cpus_per_task"),
    "mem": _use("mem"),
    "time": _use("time"),
    "account": _use("account"),
    "qos": _use("qos"),
    "reservation": _use("reservation"),
    "constraint": _use("constraint"),
    "exclude": "leave it out: jupyter-asgard excludes the nodes a kernel was lost on",
}
RESERVED_SHORT = {
    "J": "job-name",
    "D": "chdir",
    "N": "nodes",
    "n": "ntasks",
    "p": "partition",
    "G": "gpus",
    "c": "cpus-per-task",
    "t": "time",
    "A": "account",
    "q": "qos",
    "C": "constraint",
    "x": "exclude",
}
# Every Pyxis option (--container-save, --container-entrypoint, those of later Pyxis versions) shapes the
# container, which is the provisioner's: refused whether or not it is listed above.
PYXIS_PREFIXES = ("contain", "no-contain")
PYXIS_ADVICE = (
    "leave it out: jupyter-asgard sets Pyxis's options from the settings image, mounts, workdir and container_*"
)
# Short options of Slurm 22.05's srun and salloc that take a value (their --help, "-p, --partition=..."): in
# a cluster, what follows one of them is its value, not more options (-vpgpu is -v -p gpu).  A letter missing
# here is read as a flag, which can only refuse more, never let a reserved option through.
SHORT_WITH_VALUE = {
    "srun_args": frozenset("ABCDGJLMNSTWbcdeimnopqrtwx"),
    "salloc_args": frozenset("ABCDFGJLMNSbcdmnpqtwx"),
}


# Long options a kernelspec may add, written in full.
ALLOWED_LONG = {
    "srun_args": frozenset(
        {
            "cpu-bind",
            "gpu-bind",
            "mem-bind",
            "accel-bind",
            "hint",
            "distribution",
            "cpu-freq",
            "gpu-freq",
            "threads-per-core",
            "signal",
            "label",
            "unbuffered",
            "mpi",
            "propagate",
            "wckey",
            "mail-type",
            "mail-user",
        }
    ),
    "salloc_args": frozenset(
        {
            "nodelist",
            "hint",
            "gpu-bind",
            "cpu-freq",
            "gpu-freq",
            "signal",
            "mail-type",
            "mail-user",
            "begin",
            "wckey",
            "nice",
            "bell",
            "no-bell",
        }
    ),
}
# Those of them that take no value, or one only after '=' (--nice, --propagate). Every other one requires a value
# (Slurm 22.05: "option '--begin' requires an argument"), and written without '=' takes the next argument as it:
# after srun_args and salloc_args comes the command jupyter-asgard runs, so the last one would eat its first word.
STAND_ALONE = frozenset({"label", "unbuffered", "propagate", "nice", "bell", "no-bell"})
NEEDS_VALUE = (ALLOWED_LONG["srun_args"] | ALLOWED_LONG["salloc_args"]) - STAND_ALONE


def extra_args_problems(key: str, args: Sequence[str]) -> list[str]:
    """One problem per argument of srun_args or salloc_args (key) that is no option or sets a reserved one."""
    problems = []
    for index, arg in enumerate(args):
        if not _is_option(arg):
            if not (index and _value_apart(args[index - 1])):  # told with the option before it
                problems.append(f"{key}: {arg!r} is not an option; write each as --name or --name=value")
            continue
        if arg.startswith("--"):
            problem = (
                _long_problem(arg)
                or _not_allowed(_long_name(arg), ALLOWED_LONG[key])
                or _value_problem(arg, args[index + 1 : index + 2])
            )
        else:
            problem = _short_problem(arg, SHORT_WITH_VALUE[key]) or (
                f"{arg}: write options in their long form (--name=value); {_allowed(ALLOWED_LONG[key])}"
            )
        if problem:
            problems.append(f"{key}: {problem}")
    return problems


def _not_allowed(name: str, allowed: frozenset[str]) -> str | None:
    if name in allowed:
        return None
    meant = [option for option in sorted(allowed) if option.startswith(name)]
    if meant:
        return f"--{name}: write the option in full (--{meant[0]}{', ...' if len(meant) > 1 else ''})"
    return f"--{name} is not among the options a kernel may add; {_allowed(allowed)}"


def _value_apart(arg: str) -> bool:
    """An option that needs a value written without it: "--begin", not "--begin=now"."""
    return arg.startswith("--") and "=" not in arg and _long_name(arg) in NEEDS_VALUE


def _value_problem(arg: str, following: Sequence[str]) -> str | None:
    if not _value_apart(arg):
        return None
    value = following[0] if following and not _is_option(following[0]) else "VALUE"
    return (
        f"{arg} takes a value: write it in the same argument, {arg}={value} (alone, Slurm would take the "
        "argument after it as its value, even an option of jupyter-asgard's)"
    )


def _allowed(allowed: frozenset[str]) -> str:
    return "those shape only the kernel's own share of its node: " + ", ".join(f"--{name}" for name in sorted(allowed))


def _is_option(arg: str) -> bool:
    """getopt's view: "-" alone is an argument and "--" ends the options (what follows would be the command)."""
    if arg.startswith("--"):
        return bool(_long_name(arg))
    return arg.startswith("-") and arg != "-"


def _long_name(arg: str) -> str:
    return arg[2:].split("=", 1)[0]


def _long_problem(arg: str) -> str | None:
    name = _long_name(arg)
    given = f"--{name}"
    if name in RESERVED_LONG:
        return f"{given} is set by jupyter-asgard; {RESERVED_LONG[name]}"
    meant = [option for option in RESERVED_LONG if option.startswith(name)]
    if meant:
        shown = ", ".join(f"--{option}" for option in meant[:3]) + (", ..." if len(meant) > 3 else "")
        advice = RESERVED_LONG[meant[0]] if len(meant) == 1 else "write the option you mean in full"
        return (
            f"{given} abbreviates {shown}, set by jupyter-asgard (Slurm reads an abbreviation as the whole "
            f"option); {advice}"
        )
    if name.startswith(PYXIS_PREFIXES):
        return f"{given} is a Pyxis option, and those are set by jupyter-asgard; {PYXIS_ADVICE}"
    return None


def _short_problem(arg: str, with_value: frozenset[str]) -> str | None:
    """Read a cluster of short options letter by letter, up to the first that takes the rest as its value."""
    letters = arg[1:]
    for index, letter in enumerate(letters):
        if letter in RESERVED_SHORT:
            advice = RESERVED_LONG[RESERVED_SHORT[letter]]
            if index == 0:
                return f"-{letter} is set by jupyter-asgard; {advice}"
            return (
                f"{arg} is read by Slurm as {_spelled_out(letters, index)}, and -{letter} is set by "
                f"jupyter-asgard; {advice}"
            )
        if letter in with_value:
            return None
    return None


def _spelled_out(letters: str, last: int) -> str:
    """How getopt reads a cluster up to its option at index last: "vJx", 1 -> "-v -J x"."""
    value = letters[last + 1 :]
    return " ".join(f"-{letter}" for letter in letters[: last + 1]) + (f" {value}" if value else "")
