"""A terminal in a running kernel's container, on its node.

It is jupyter_server's own terminal (terminado, under /api/terminals): JupyterLab shows it as any other,
and its shell is an srun step attached to the kernel's container (container_steps.terminal_argv), so it
sees the kernel's mounts, files and installed packages. The step belongs to the kernel's allocation: it ends
when the allocation does (a kernel shutdown releases it), and the terminal with it. The terminal manager
is passed in: no server import here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..containers.container_steps import terminal_argv
from ..kernel.kernel_env import step_environment


def terminal_env(environ: Mapping[str, str]) -> dict[str, str | None]:
    """terminado's changes to the server's environment (None removes a name): srun hands the terminal's
    environment to the container, so it gets what a kernel step gets, not the server's virtualenv."""
    wanted = step_environment(environ, {}, {})
    changes: dict[str, str | None] = {name: None for name in environ if name not in wanted}
    if "PATH" in wanted:
        changes["PATH"] = wanted["PATH"]
    return changes


def terminal_title(provisioner: Any) -> str:
    """The tab's title: the node, and the kernel as the launcher names it."""
    name = getattr(provisioner.kernel_spec, "display_name", "") or getattr(provisioner.parent, "kernel_name", "")
    return f"{provisioner.node}: {name} ({provisioner.kernel_id[:8]})"


def open_terminal(terminal_manager: Any, provisioner: Any, shell: list[str]) -> dict[str, Any]:
    """A new terminal running a shell in the kernel's container; its name, node and a title for the tab."""
    argv = terminal_argv(
        provisioner.job_id, provisioner.node, provisioner.container, provisioner.container_workdir(), shell
    )
    model = terminal_manager.create(
        shell_command=provisioner.client.resolved(argv), cwd=provisioner.launch_dir, extra_env=terminal_env(os.environ)
    )
    return {
        "name": model["name"],
        "node": provisioner.node,
        "kernel_id": provisioner.kernel_id,
        "title": terminal_title(provisioner),
    }
