"""What the kernel manager and jupyter_server hold on to about a kernel's address, kept in step with it.

A local kernel comes back from a restart where it was. An Asgard kernel comes back on new ports (another user
of the node, who can see the old ones, could have taken one), and one whose node died in a new allocation on
another node: new address too. jupyter_client follows (it loads the provisioner's connection info and
rewrites the connection file), but two things do not, and this module handles both:

- jupyter_server watches a kernel's IOPub for activity and execution_state through one socket it connects
  when the kernel first starts (MappingKernelManager.start_watching_activity) and reconnects only on a
  restart requested through its REST API. The restarter's automatic restart, the one after a node dies,
  would leave that socket on the dead node: execution_state would stay as it was ("starting" for a kernel
  nobody used yet) and a new websocket's nudge, which waits for it to leave "starting", would hang.
- The restarter drops the connection file of a kernel that dies soon after its start (it asks for "new
  random ports", KernelManager.cleanup_random_ports). A local provisioner writes it again before
  launching; ours learns the address only from the node, so the file would be missing for the whole
  relaunch: the last address stands in it until the new one is known.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..node.bootstrap import PORT_NAMES

if TYPE_CHECKING:
    from jupyter_client.connect import KernelConnectionInfo


def address(info: Mapping[str, Any]) -> tuple[Any, ...]:
    """Where a kernel listens: its IP and ports (empty for a kernel that has not started)."""
    return (info.get("ip"), *(info.get(name) for name in PORT_NAMES)) if info else ()


def keep_connection_file(kernel_manager: Any, info: KernelConnectionInfo) -> None:
    """Write the connection file again from info if a restart dropped it (a no-op while it is there)."""
    if kernel_manager is None or not hasattr(kernel_manager, "write_connection_file"):
        return
    kernel_manager.load_connection_info(info)
    kernel_manager.write_connection_file()


def rewatch_activity(kernel_manager: Any, kernel_id: str) -> None:
    """Point jupyter_server's activity watch at the kernel's new address (outside jupyter_server: nothing).

    execution_state starts over at "starting", as for a new kernel: the first status from the kernel that
    now runs sets it again."""
    kernels: Any = getattr(kernel_manager, "parent", None)
    if getattr(kernel_manager, "_activity_stream", None) is None or not hasattr(kernels, "start_watching_activity"):
        return
    kernels.stop_watching_activity(kernel_id)
    kernel_manager.execution_state = "starting"
    kernels.start_watching_activity(kernel_id)
