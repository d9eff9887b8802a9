"""The launch configuration of an Asgard kernel: one model for the provisioner, the REST API and the panel.

A kernelspec's ``metadata.kernel_provisioner.config``, a site's traitlets
configuration, a REST request and the widget panel all describe the same
thing: which image, mounts and workdir the container gets and which Slurm
resources the allocation asks for.  This module is the single place where
that description is parsed, expanded and checked, so the three can never
disagree about what is valid.  It is pure: no Slurm, no filesystem.
"""

from __future__ import annotations

import getpass
import os
import re
import unicodedata
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ..errors import LaunchConfigError, MountError
from .extra_args import extra_args_problems
from .mounts import VARIABLE, Mount, parse_mount

# \Z, not $: "$" also matches before a final newline, which would then reach Slurm. re.ASCII: without it \d
# takes any script's digits ("\u0663" is Arabic-Indic 3) and IGNORECASE folds the Kelvin sign onto k.
SLURM_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
GPU_SPEC = re.compile(r"^(?:(?P<type>[A-Za-z0-9_-]+):)?(?P<count>\d+)\Z", re.ASCII)
MEMORY = re.compile(r"^\d+[KMGT]?\Z", re.IGNORECASE | re.ASCII)
TIME = re.compile(
    r"^(?:UNLIMITED|INFINITE|\d+(?::\d{1,2}){0,2}|\d+-\d{1,2}(?::\d{1,2}){0,2})\Z", re.IGNORECASE | re.ASCII
)
# A named container's own name (what its filesystem on a node is called, pyxis_NAME), then Pyxis's optional flag.
CONTAINER_BASE_NAME = r"[A-Za-z0-9_.-]+"
CONTAINER_NAME = re.compile(rf"^{CONTAINER_BASE_NAME}(?::(?:auto|create|exec|no_exec))?\Z")
# enroot imports these, but Pyxis puts docker:// before any image that is neither a path nor docker(d)://.
ENROOT_ONLY_SCHEMES = ("podman",)
IMAGE_URI = re.compile(
    r"^(?:(?:docker|dockerd)://)?(?:[^@#\s/]+@)?(?:[^#\s/]+#)?"  # scheme, USER@, REGISTRY#
    r"(?:[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*(?::[0-9]{1,5})?/)?"  # enroot 4's REGISTRY[:PORT]/ form
    r"[a-z0-9][a-z0-9._/-]*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[0-9a-f]{64})?\Z"
)  # not re.ASCII, which would let \s pass other spaces: its digits and letters are spelled out instead
# The variables every kernel's settings may name: what a kernelspec shared by many users means by "mine".
ALWAYS_EXPANDED = frozenset({"USER", "HOME"})
MAX_VALUE_LENGTH = 4096
MAX_LIST_LENGTH = 64
MAX_COUNT = 1_000_000


def _help(text: str, **schema: Any) -> dict[str, Any]:
    return {"help": text, "schema": schema}


@dataclass(frozen=True)
class LaunchConfig:
    """Where and how an Asgard kernel runs. Field names are the kernelspec config keys."""

    image: str = field(
        default="",
        metadata=_help(
            "Container image: a squashfs file (/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh) or an enroot URI "
            "(docker://nvcr.io#nvidia/pytorch:24.05-py3).",
            type="string",
            minLength=1,
        ),
    )
    mounts: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "Bind mounts SRC:DST[:FLAGS], flags joined by '+' (ro, rprivate, ...).",
            type="array",
            items={"type": "string"},
        ),
    )
    workdir: str = field(
        default="",
        metadata=_help(
            "Working directory inside the container; default: the directory Jupyter starts the kernel in.",
            type="string",
        ),
    )
    container_name: str = field(
        default="",
        metadata=_help(
            "Named container NAME[:auto|create|exec|no_exec]: what you install there survives restarts; "
            "default: a name derived from the kernelspec and image.",
            type="string",
        ),
    )
    container_writable: bool | None = field(
        default=None,
        metadata=_help(
            "Make the container filesystem writable (needed for pip install into the image).", type=["boolean", "null"]
        ),
    )
    container_remap_root: bool | None = field(
        default=None,
        metadata=_help("Appear as root inside the container (no real privileges).", type=["boolean", "null"]),
    )
    container_mount_home: bool | None = field(
        default=None,
        metadata=_help("Bind-mount your home directory (the site may already do so).", type=["boolean", "null"]),
    )
    container_env: tuple[str, ...] = field(
        default=(),
        metadata=_help(
            "Variables whose value from the kernelspec or host wins over the image's.",
            type="array",
            items={"type": "string"},
        ),
    )
    partition: str = field(default="", metadata=_help("Slurm partition.", type="string"))
    gpus: str = field(
        default="", metadata=_help("GPUs: a count (1) or TYPE:COUNT (h100:2).", type=["string", "integer"])
    )
    cpus_per_task: int = field(
        default=0, metadata=_help("CPU cores for the kernel (0: Slurm's default).", type="integer", minimum=0)
    )
    mem: str = field(default="", metadata=_help("Memory, e.g. 32G (empty: Slurm's default).", type="string"))
    time: str = field(
        default="", metadata=_help("Time limit of the allocation, e.g. 8:00:00 or 1-00:00:00.", type="string")
    )
    account: str = field(default="", metadata=_help("Slurm account.", type="string"))
    qos: str = field(default="", metadata=_help("Slurm QOS.", type="string"))
    reservation: str = field(default="", metadata=_help("Slurm reservation.", type="string"))
    constraint: str = field(default="", metadata=_help("Node features (--constraint).", type="string"))
    detachable: bool | None = field(
        default=None,
        metadata=_help(
            "Keep the kernel running when the Jupyter server stops (closed SSH session, culled or restarted "
            "server): your next server takes it over, with its variables (the site must allow it).",
            type=["boolean", "null"],
        ),
    )
    detach_grace: int = field(
        default=0,
        metadata=_help(
            "Seconds a detached kernel waits for a server of yours before it ends and its GPUs are released "
            "(0: the site's maximum). A site's c.PyxisProvisioner.detach_grace is that maximum (default 900).",
            type="integer",
            minimum=0,
        ),
    )
    srun_args: tuple[str, ...] = field(
        default=(), metadata=_help("Extra srun options for the kernel step.", type="array", items={"type": "string"})
    )
    salloc_args: tuple[str, ...] = field(
        default=(), metadata=_help("Extra salloc options for the allocation.", type="array", items={"type": "string"})
    )

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    def parsed_mounts(self) -> list[Mount]:
        return [parse_mount(entry) for entry in self.mounts]

    def gpu_request(self) -> tuple[str, int]:
        """(type or "", count) of the GPU request."""
        match = GPU_SPEC.match(self.gpus) if self.gpus else None
        return (match["type"] or "", int(match["count"])) if match else ("", 0)

    def image_is_file(self) -> bool:
        """Pyxis's rule: a value starting with '/' or '.' is a squashfs path, anything else a registry image."""
        return self.image.startswith(("/", "."))

    def to_json(self) -> dict[str, Any]:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def parse(
        cls, values: Mapping[str, Any], environ: Mapping[str, str] | None = None, variables: Container[str] = ()
    ) -> LaunchConfig:
        """Coerce, expand ($USER, $HOME, ${VAR}, ~) and check values; raise LaunchConfigError listing every problem."""
        config, problems = cls.check(values, environ, variables)
        if problems:
            raise LaunchConfigError(problems)
        return config

    @classmethod
    def check(
        cls, values: Mapping[str, Any], environ: Mapping[str, str] | None = None, variables: Container[str] = ()
    ) -> tuple[LaunchConfig, list[str]]:
        """Like parse, but returns the problems beside a config of the usable values, so that callers
        can go on checking (paths, partitions) and report everything at once.

        image, workdir and mounts may name $USER, $HOME and the variables (names) the site lists, with
        their values in environ (default: the server's): no other of the server's variables, which a shared
        kernelspec could otherwise send to a registry of its choosing or put on srun's command line."""
        environ = default_environ() if environ is None else environ
        problems = [
            f"unknown setting {key!r} (known: {', '.join(cls.keys())})" for key in values if key not in cls.keys()
        ]
        coerced: dict[str, Any] = {}
        for spec in fields(cls):
            if spec.name in values and values[spec.name] is not None:
                try:
                    coerced[spec.name] = _coerce(spec.name, values[spec.name], spec.default)
                except ValueError as error:
                    problems.append(str(error))
        allowed = _Allowed(variables)
        for key in ("image", "workdir"):
            if key in coerced:
                coerced[key] = expand_variables(key, coerced[key], environ, problems, allowed)
        if "mounts" in coerced:
            coerced["mounts"] = _expanded_mounts(coerced["mounts"], environ, problems, allowed)
        config = cls(**coerced)
        return config, problems + config.problems()

    def problems(self) -> list[str]:
        """What Slurm or Pyxis would refuse, found before anything is submitted."""
        found = _image_problems(self.image)
        for entry in self.mounts:
            try:
                parse_mount(entry)
            except MountError as error:
                found.append(str(error))
        if self.workdir and not self.workdir.startswith("/"):
            found.append(f"workdir {self.workdir!r} must be an absolute path inside the container")
        if self.container_name and not CONTAINER_NAME.match(self.container_name):
            found.append(
                f"container_name {self.container_name!r}: use letters, digits, '.', '_', '-' and "
                "optionally :auto, :create, :exec or :no_exec"
            )
        found += [
            f"container_env: {name!r} is not a variable name" for name in self.container_env if not ENV_NAME.match(name)
        ]
        for key in ("partition", "account", "qos", "reservation"):
            value = getattr(self, key)
            if value and not SLURM_NAME.match(value):
                found.append(f"{key} {value!r} is not a valid Slurm name (letters, digits, '_', '.', '-')")
        if self.constraint and (self.constraint.startswith("-") or any(c.isspace() for c in self.constraint)):
            found.append(f"constraint {self.constraint!r} must be a feature expression without spaces")
        if self.gpus and not GPU_SPEC.match(self.gpus):
            found.append(f"gpus {self.gpus!r}: write a count (2) or TYPE:COUNT (h100:2)")
        if self.mem and not MEMORY.match(self.mem):
            found.append(f"mem {self.mem!r}: write a size such as 16G or 32000M")
        if self.time and not TIME.match(self.time):
            found.append(f"time {self.time!r}: write minutes, HH:MM:SS or D-HH:MM:SS")
        found += extra_args_problems("srun_args", self.srun_args) + extra_args_problems("salloc_args", self.salloc_args)
        return found


def default_environ() -> dict[str, str]:
    """The server's environment, with USER and HOME filled in where a service manager left them out."""
    return {"USER": getpass.getuser(), "HOME": os.path.expanduser("~"), **os.environ}


def json_schema() -> dict[str, Any]:
    """JSON schema of the launch configuration, for the REST API and the panel."""
    properties = {}
    for spec in fields(LaunchConfig):
        properties[spec.name] = {**spec.metadata["schema"], "description": spec.metadata["help"]}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Asgard kernel launch configuration",
        "type": "object",
        "properties": properties,
        "required": ["image"],
        "additionalProperties": False,
    }


def _coerce(key: str, value: Any, default: Any) -> Any:
    if isinstance(default, tuple):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ValueError(f"{key} must be a list of strings")
        if len(value) > MAX_LIST_LENGTH:
            raise ValueError(f"{key} has {len(value)} entries; at most {MAX_LIST_LENGTH} are allowed")
        return tuple(_text(key, item) for item in value)
    if isinstance(default, int) and not isinstance(default, bool):
        return _count(key, value)
    if default is None:
        if not isinstance(value, bool):
            raise ValueError(f"{key} must be true or false, not {value!r}")
        return value
    if key == "gpus" and not isinstance(value, str):
        try:
            return str(_count(key, value))
        except ValueError:
            raise ValueError(f"gpus must be a count (2) or TYPE:COUNT (h100:2), not {value!r}") from None
    return _text(key, value)


def _count(key: str, value: Any) -> int:
    """A whole number from JSON (4, 4.0) or text ("4"), in a sane range."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,7}\s*", value, re.ASCII):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_COUNT:
        shown = repr(value) if not isinstance(value, int) or abs(value) < MAX_COUNT * 10 else "a huge number"
        raise ValueError(f"{key} must be a whole number from 0 to {MAX_COUNT}, not {shown}")
    return value


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{key} must be text, not {value!r}")
    if len(value) > MAX_VALUE_LENGTH:
        raise ValueError(f"{key} is {len(value)} characters long; at most {MAX_VALUE_LENGTH} are allowed")
    if _has_control_character(value):
        raise ValueError(f"{key} contains a control character (newline, tab, ...)")
    return value.strip()


def _has_control_character(value: str) -> bool:
    return any(unicodedata.category(char) == "Cc" for char in value)


def _unusable_value(value: str) -> bool:
    """A value no path may take in: a '$' in it would look like a variable still to expand (or reach bash,
    through Pyxis's mounts), a control character or its length would not survive Slurm's argv."""
    return "$" in value or _has_control_character(value) or len(value) > MAX_VALUE_LENGTH


class _Allowed:
    """The names a kernel's settings may expand: $USER, $HOME and those the site lists."""

    def __init__(self, listed: Container[str]) -> None:
        self.listed = listed

    def __contains__(self, name: object) -> bool:
        return name in ALWAYS_EXPANDED or name in self.listed


def _expanded_mounts(
    entries: tuple[str, ...], environ: Mapping[str, str], problems: list[str], allowed: Container[str]
) -> tuple[str, ...]:
    """The entries expanded; one whose variables could not be is left out (its problem reported), so that
    none keeps a '$' of a variable name."""
    expanded = []
    for entry in entries:
        found: list[str] = []
        value = expand_variables("mounts", entry, environ, found, allowed)
        problems += found
        expanded += [] if found else [value]
    return tuple(expanded)


def expand_variables(
    key: str, value: str, environ: Mapping[str, str], problems: list[str], allowed: Container[str] | None = None
) -> str:
    """Expand ~, $NAME and ${NAME}; an unknown variable is a problem, not silently kept.

    allowed: the names value may use (None: any of environ, for the site's own settings); the problem of
    another names it without its value, which must reach neither a registry nor an answer of the REST API.
    """

    def replace(match: re.Match[str]) -> str:
        name = match["braced"] or match["plain"]
        if allowed is not None and name not in allowed:
            problems.append(
                f"{key}: ${name} is not a variable kernel settings may use: only $USER, $HOME and the variables "
                f"the site lists are expanded; write the value itself, or have the site add {name!r} to "
                "c.PyxisProvisioner.expandable_variables"
            )
            return match[0]
        if name not in environ:
            problems.append(f"{key}: ${name} is not set on the Jupyter server")
            return match[0]
        if _unusable_value(environ[name]):
            problems.append(
                f"{key}: ${name} has a value that cannot be used in a path (a '$', a control character, or "
                f"over {MAX_VALUE_LENGTH} characters)"
            )
            return match[0]
        return environ[name]

    if (value == "~" or value.startswith("~/")) and "HOME" in environ:
        value = environ["HOME"] + value[1:]
    return VARIABLE.sub(replace, value)


def _image_problems(image: str) -> list[str]:
    if not image:
        return [
            "image is required: a squashfs file such as /enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh "
            "or an enroot URI such as docker://nvcr.io#nvidia/pytorch:24.05-py3"
        ]
    if image.startswith(("/", ".")):
        return []
    if image.endswith(".sqsh"):
        return [
            f"image {image!r} looks like a squashfs file but Pyxis would pull it from a registry: "
            "give its absolute path (starting with '/')"
        ]
    scheme = image.partition("://")[0]
    if scheme in ENROOT_ONLY_SCHEMES:
        return [
            f"image {image!r}: Pyxis does not take {scheme}:// images (it would pull docker://{image}); "
            f"use docker://, dockerd:// or a squashfs file (enroot import {scheme}://... makes one)"
        ]
    if not IMAGE_URI.match(image):
        return [f"image {image!r} is neither a path nor an enroot URI like docker://nvcr.io#nvidia/pytorch:24.05-py3"]
    return []


def policy_problems(config: LaunchConfig, max_gpus: int, allowed_partitions: Sequence[str] = ()) -> list[str]:
    """The site's limits, checked before anything is submitted."""
    problems = []
    _gpu_type, count = config.gpu_request()
    if count > max_gpus:
        problems.append(
            f"gpus: {count} GPUs requested but this site allows at most {max_gpus} per kernel; "
            f"ask for {max_gpus} or fewer"
        )
    if allowed_partitions and config.partition not in allowed_partitions:
        which = (
            f"partition {config.partition!r} is not offered for kernels"
            if config.partition
            else "partition: none is chosen, so Slurm would use its default one, which may not be offered for kernels"
        )
        problems.append(f"{which}; choose one of {', '.join(allowed_partitions)}")
    return problems


DETACH_MODES = ("off", "allowed")


def detach_problems(config: LaunchConfig, site_detach: str, site_grace: int) -> list[str]:
    """A detachable kernel where the site allows none, or a grace longer than the site's."""
    if not config.detachable:
        return []
    if site_detach != "allowed":
        return [
            "detachable: this site does not allow kernels to outlive the Jupyter server (its "
            "c.PyxisProvisioner.detach is 'off'); leave detachable off, or ask your cluster admins"
        ]
    if config.detach_grace > site_grace:
        return [f"detach_grace: {config.detach_grace} s is over this site's maximum of {site_grace} s; ask for less"]
    return []


def with_site_partition(config: LaunchConfig, site_partition: str, allowed_partitions: Sequence[str]) -> LaunchConfig:
    """Where the site limits partitions, a kernel that names none would run in Slurm's default partition,
    which the limit may exclude: it gets the site's default partition instead, where that one is allowed
    (policy_problems refuses it otherwise)."""
    if allowed_partitions and not config.partition and site_partition in allowed_partitions:
        return replace(config, partition=site_partition)
    return config


def path_problems(config: LaunchConfig, exists: Callable[[str], bool]) -> list[str]:
    """Paths that do not exist where the server can see them (Asgard's /enroot and /netscratch are shared).

    Found here, a typo costs seconds; found by Pyxis on the node, it costs a wait in the queue.
    """
    problems = []
    if config.image_is_file() and not exists(config.image):
        problems.append(
            f"image {config.image} does not exist on the Jupyter server's host: check "
            "the path (images are .sqsh files, e.g. in /enroot)"
        )
    for mount in _valid_mounts(config.mounts):
        if mount.source.startswith("/") and not exists(mount.source):
            problems.append(f"mount source {mount.source} does not exist: create it or fix the mount {mount.render()}")
    return problems


def _valid_mounts(entries: tuple[str, ...]) -> list[Mount]:
    mounts = []
    for entry in entries:
        try:
            mounts.append(parse_mount(entry))
        except MountError:
            continue  # reported by LaunchConfig.problems()
    return mounts
