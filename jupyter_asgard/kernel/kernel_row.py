"""The kernel row: one Asgard kernel and where its Slurm job stands, as the REST API, `jupyter asgard status`
and the JupyterLab extension (IKernelRow in labextension/src/api.ts) show it. Defined once, here, with its JSON
schema, which the tests hold the TypeScript interface to; so are the words for a job that has ended."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Union, get_args, get_origin, get_type_hints

# Slurm's final job states: a short label (status bar, side panel) and why a kernel's job ended (its error).
ENDED: dict[str, tuple[str, str]] = {
    "BOOT_FAIL": ("node boot failure", "its node failed to boot"),
    "CANCELLED": ("cancelled", "it was cancelled (scancel, by you or an admin)"),
    "COMPLETED": ("completed", "it completed"),
    "DEADLINE": ("deadline reached", "it reached its deadline"),
    "FAILED": ("failed", "it failed"),
    "NODE_FAIL": ("node failure", "its node failed"),
    "OUT_OF_MEMORY": ("out of memory", "it ran out of memory"),
    "PREEMPTED": ("preempted", "it was preempted by a job of higher priority"),
    "REVOKED": ("revoked", "Slurm revoked the allocation"),
    "SPECIAL_EXIT": ("failed", "it failed (special exit)"),
    "TIMEOUT": ("time limit", "it reached its time limit"),
}
# A queued kernel without an expected start: Slurm has none yet, or answered with its placeholder for "not
# known" (slurm_commands.UNKNOWN_START_SECONDS); the row's reason says why. UNKNOWN_START in format.ts too.
UNKNOWN_START = "start time unknown to Slurm"


def why_ended(state: str) -> str:
    """Why a kernel's job ended, in words for its error message."""
    return ENDED[state][1] if state in ENDED else state.lower().replace("_", " ")


def _no_gpus() -> dict[str, Any]:
    return {"count": 0, "type": ""}


@dataclass
class KernelRow:
    """One Asgard kernel; field by field the IKernelRow of the JupyterLab extension."""

    kernel_id: str
    kernel_name: str = ""
    display_name: str = ""
    execution_state: str | None = None  # the Jupyter server's kernel state: None until the kernel first answered
    job_id: str = ""
    state: str = ""  # Slurm's job state, or SUBMITTING before Slurm knows the job
    reason: str = ""  # Slurm's pending reason; empty unless PENDING
    queue_position: int | None = None  # jobs ahead of this one in its partition; None when not queued
    # Slurm's expected start of a PENDING job (squeue --start's StartTime, the cluster's local time), and the
    # seconds until then; "" and None where Slurm has no estimate (or the job is not pending)
    expected_start: str = ""
    expected_start_seconds: int | None = None
    node: str = ""
    gpus: dict[str, Any] = field(default_factory=_no_gpus)  # {"count": N, "type": "h100" or ""}
    partition: str = ""
    start_time: str = ""
    time_limit: str = ""
    time_left: str = ""
    time_left_seconds: int | None = None
    image: str = ""
    slurm_reachable: bool = True
    path: str = ""  # the notebook's path relative to the server root
    # The container's setup while the kernel starts, as Pyxis reports it ("creating container filesystem",
    # "starting container", ...), and the seconds in it so far; "" and None otherwise
    phase: str = ""
    phase_seconds: int | None = None
    # Seconds since the kernel's last activity (the server's), and until jupyter_server's culler shuts it down
    # and its GPUs are released (None: the server does not cull it)
    idle_seconds: int | None = None
    cull_in_seconds: int | None = None
    # How the kernel's traffic goes (encryption.MODES): "curve" (the kernel's own CurveZMQ), "curve-proxy"
    # (CurveZMQ through the proxy in its container), "none" (in the clear); "" until it has started.
    encryption: str = ""
    # The kernel outlives the Jupyter server (it runs in a batch job; the next server of its user takes it over)
    detachable: bool = False
    # When this server took the detachable kernel over (whole seconds since the epoch); None for one it started
    taken_over_at: int | None = None
    # The named container the kernel runs in (Pyxis's --container-name without its flag), "" for none
    container: str = ""
    # Where the user's container is when the kernel runs away from it (site/placement.py), "" otherwise
    container_notice: str = ""
    # The node whose copy of the container has what the user installed, while the kernel runs away from it (what
    # "Bring it here" brings it from); "" otherwise
    container_home: str = ""
    # "Bring it here" (kernel/container_moves.py): {"state": "saving" | "restarting" | "done" | "failed",
    # "message": words, "from_node": its node}; None before any
    container_move: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_JSON_TYPES = {str: "string", int: "integer", bool: "boolean", dict: "object", type(None): "null"}


def row_schema() -> dict[str, Any]:
    """The JSON schema of a row: every field required, with its JSON type(s)."""
    hints = get_type_hints(KernelRow)
    properties = {}
    for spec in fields(KernelRow):
        kinds = (
            get_args(hints[spec.name])
            if get_origin(hints[spec.name]) in (Union, type(int | None))
            else (hints[spec.name],)
        )
        names = [_JSON_TYPES[get_origin(kind) or kind] for kind in kinds]
        properties[spec.name] = {"type": names[0] if len(names) == 1 else names}
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
