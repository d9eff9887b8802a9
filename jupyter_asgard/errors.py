"""Errors a user can cause, worded for where they see them (JupyterLab's kernel error dialog)."""

from __future__ import annotations


class KernelStartError(RuntimeError):
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
        super().__init__(text)
