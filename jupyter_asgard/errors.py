"""Every error a user can cause, in one hierarchy: what was wrong (one problem per line where there are
several), how to fix it, and the HTTP status the REST API answers it with. The handlers turn any of them into
the same JSON in one place (handlers.AsgardHandler.write_error); the panel, the CLI and JupyterLab's kernel
error dialog show their words as they are.

KernelStartError is also a tornado HTTPError because jupyter_server shows an HTTPError's message to the
browser and replaces any other exception with "Unhandled error": a subclass is the one way the reason
reaches the user.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from tornado.web import HTTPError


class AsgardError(Exception):
    """Base of the errors a user can cause; status is what the REST API answers (400 unless a subclass says)."""

    status = 400

    def __init__(self, message: str, *, problems: Sequence[str] = (), hint: str = "", status: int | None = None):
        super().__init__(message)
        self.message = message
        self.problems = list(problems) or [message]
        self.hint = hint
        if status is not None:
            self.status = status

    def to_json(self) -> dict[str, Any]:
        """The one JSON shape of a refusal: "message", "problems" (one per line) and, where known, "hint"."""
        return {"message": self.message, "problems": self.problems, **({"hint": self.hint} if self.hint else {})}


class BadRequest(AsgardError):
    """A REST request that is not what its endpoint reads (no JSON, not an object, a field of the wrong type)."""


class NotFound(AsgardError):
    status = 404


class Conflict(AsgardError):
    """Asked at the wrong moment (a kernel still in the queue has no container to open a terminal in)."""

    status = 409


class TooLarge(AsgardError):
    status = 413


class TooBusy(AsgardError):
    """A request over one of the site's limits on load (estimates at once, terminals per kernel): the message
    names the limit, its setting, and what to do meanwhile."""

    status = 429


class UsageError(AsgardError):
    """A `jupyter asgard` command line it cannot run, said in one line instead of argparse's usage dump."""


class LaunchConfigError(AsgardError, ValueError):
    """Everything wrong with a launch configuration, one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems), problems=problems)


class MountError(AsgardError, ValueError):
    """A mount entry Pyxis would refuse; the message says why and how to write it."""


class KernelspecError(AsgardError, ValueError):
    """A kernelspec that cannot be installed as asked; the message names the setting at fault."""


class KernelspecStoreError(AsgardError, ValueError):
    """A request about the Asgard kernelspecs the store refuses (unknown, not ours, a bad name)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message, status=status)


class ImageRefused(AsgardError):
    """A save of a kernel's container, or an import of an image, that cannot start: what the user must change."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, status=status)


class ServerRefused(AsgardError):
    """A Jupyter server refused a `jupyter asgard` command's request: its own message, hint and status."""

    def __init__(self, status: int, message: str, hint: str = "") -> None:
        super().__init__(message, status=status, hint=hint)


class SlurmError(AsgardError, RuntimeError):
    """A Slurm command failed; the message carries Slurm's own words."""

    status = 503


class SlurmNotFound(SlurmError):
    """Slurm's client commands are not on this host's PATH."""


class KernelStartError(AsgardError, HTTPError):
    """The kernel could not start: what went wrong, in Slurm's or Pyxis's words, and what to do."""

    status = 500

    def __init__(self, message: str, hint: str = "", details: str = "") -> None:
        AsgardError.__init__(self, message, hint=hint)
        self.details = details
        text = f"Asgard kernel: {message}"
        if hint:
            text += f".\nHow to fix: {hint}"
        if details:
            text += f"\n{details}"
        self.text = text
        HTTPError.__init__(self, 500, log_message=text, reason="Asgard kernel did not start")

    def __str__(self) -> str:
        return self.text


WITHDRAWN = "the kernel was shut down before it started"


class QueueWaitExceeded(KernelStartError):
    """A kernel's job waited longer than it was given, and was cancelled (placement then asks elsewhere)."""


class KernelWithdrawn(KernelStartError):
    """The kernel was shut down while it started, as asked: its start fails, and that is no error to log."""

    def __init__(self) -> None:
        super().__init__(WITHDRAWN)
