"""Every client of a kernel that came back at a new address reaches it again, not only the one that restarted it.

An Asgard kernel restarts on new ports (another user of its node could have taken the old ones), in another
allocation after its node died, and on its node in the user's container after Bring it here. jupyter_server
connects a kernel websocket's ZMQ channels once, when the websocket opens: a websocket open across such a restart
stays connected to the old address, and its client waits for replies that never come. JupyterLab reconnects after
a restart it asked for and after one the restarter announces; a second tab, a console next to the notebook or VS
Code attached to the same kernel does not when another client restarts it, nor does any client after a restart
the server made itself (a move). So after each restart, the kernel's websockets whose channels point at an old
address are closed, with 1012 ("service restart"): every client reconnects on a close (JupyterLab's and VS Code's
kernel connections do so at once), and its new websocket has channels to where the kernel is now.
"""

from __future__ import annotations

import logging
from typing import Any

import zmq
from jupyter_events import EventLogger
from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection

KERNEL_ACTIONS = "https://events.jupyter.org/jupyter_server/kernel_actions/v1"
SERVICE_RESTART = 1012  # the websocket close code of a server that restarted what the client talked to


def stale_connections(kernel_id: str, kernel: Any) -> list[Any]:
    """The kernel's open websocket connections whose shell channel is connected elsewhere than the kernel is."""
    here = kernel._make_url("shell")  # the address jupyter_client connects a new channel to
    stale = []
    for connection in list(ZMQChannelsWebsocketConnection._open_sockets):
        shell = connection.channels.get("shell") if connection.kernel_id == kernel_id else None
        if shell is not None and not shell.closed() and shell.socket.get(zmq.LAST_ENDPOINT).decode() != here:
            stale.append(connection)
    return stale


class KernelWebsockets:
    """Closes the websockets a restart left on an old address (stale_connections), after each restart."""

    def __init__(self, event_logger: EventLogger, kernel_manager: Any, log: logging.Logger) -> None:
        self.kernel_manager, self.log = kernel_manager, log
        event_logger.add_listener(schema_id=KERNEL_ACTIONS, listener=self.on_kernel_action)

    async def on_kernel_action(self, logger: EventLogger, schema_id: str, data: dict[str, Any]) -> None:
        kernel_id = data.get("kernel_id")
        if data.get("action") != "restart" or data.get("status") != "success" or not kernel_id:
            return
        try:
            kernel = self.kernel_manager.get_kernel(kernel_id)
        except KeyError:  # shut down meanwhile
            return
        stale = stale_connections(kernel_id, kernel)
        for connection in stale:
            connection.websocket_handler.close(SERVICE_RESTART, "the kernel restarted at a new address: reconnect")
        if stale:
            self.log.info("Kernel %s: %d client(s) told to reconnect to its new address", kernel_id, len(stale))
