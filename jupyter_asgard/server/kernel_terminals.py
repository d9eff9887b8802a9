"""A terminal in a running kernel's container, on its node.

It is jupyter_server's own terminal (terminado, under /api/terminals): JupyterLab shows it as any other,
and its shell is an srun step attached to the kernel's container (container_steps.terminal_argv), so it
sees the kernel's mounts, files and installed packages. The step belongs to the kernel's allocation: it ends
when the allocation does (a kernel shutdown releases it), and the terminal with it. The terminal manager
is passed in: no server import here.

Each terminal is a process on the server's host and a step on the kernel's node, so a site caps how many one
kernel has open at once (KernelTerminals); one more is refused with 429 and how to close one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..containers.container_steps import terminal_argv
from ..errors import TooBusy
from ..kernel.kernel_env import step_environment

MOST_TRAIT = "c.AsgardSite.max_terminals_per_kernel"


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


class KernelTerminals:
    """The terminals opened in kernels' containers, by kernel, so that their number per kernel is capped.

    A terminal counts while terminado still has it under its name (a shell that ended, a terminal shut down
    in JupyterLab or by its kernel's end is gone from there); it is recognised by its own object, as a name
    may be reused by another terminal later."""

    def __init__(self) -> None:
        self._opened: dict[str, dict[str, Any]] = {}  # kernel id -> {terminal name: terminado's terminal}

    def open(self, terminal_manager: Any, provisioner: Any, shell: list[str], most: int) -> dict[str, Any]:
        """open_terminal, unless the kernel has `most` terminals open already: TooBusy (429) then."""
        live = terminal_manager.terminals
        self._opened = {
            kernel_id: alive
            for kernel_id, terminals in self._opened.items()
            if (alive := {name: term for name, term in terminals.items() if live.get(name) is term})
        }
        opened = self._opened.setdefault(provisioner.kernel_id, {})
        if len(opened) >= most:
            raise TooBusy(
                f"this kernel has {len(opened)} terminals open in its container, the most the site allows "
                f"({MOST_TRAIT} = {most}): close one (type exit in it, or shut it down in JupyterLab's Running "
                "Terminals and Kernels panel) and open this one again"
            )
        model = open_terminal(terminal_manager, provisioner, shell)
        opened[model["name"]] = live[model["name"]]
        return model
