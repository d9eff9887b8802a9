"""Errors a user can cause, worded for where they see them (JupyterLab's kernel error dialog).

KernelStartError is a tornado HTTPError because jupyter_server shows an
HTTPError's message to the browser and replaces any other exception with
"Unhandled error": a subclass is the one way the reason reaches the user.
"""

from __future__ import annotations

from tornado.web import HTTPError


class KernelStartError(HTTPError):
    """The kernel could not start: what went wrong, in Slurm's or Pyxis's words, and what to do."""

    def __init__(self, message: str, hint: str = "", details: str = "") -> None:
        self.message = message
        self.hint = hint
        self.details = details
        text = f"Asgard kernel: {message}"
        if hint:
            text += f".\nHow to fix: {hint}"
        if details:
            text += f"\n{details}"
        self.text = text
        super().__init__(500, log_message=text, reason="Asgard kernel did not start")

    def __str__(self) -> str:
        return self.text


WITHDRAWN = "the kernel was shut down before it started"


class KernelWithdrawn(KernelStartError):
    """The kernel was shut down while it started, as asked: its start fails, and that is no error to log."""

    def __init__(self) -> None:
        super().__init__(WITHDRAWN)
