"""The jupyter_asgard server extension: the REST API under /asgard/api/ (handlers.py) over the site
(site.py) and the one Slurm monitor of the server process (monitor.py)."""

from __future__ import annotations

from typing import Any

from jupyter_server.extension.application import ExtensionApp

from .monitor import SlurmMonitor
from .provisioner import live_provisioner
from .site import AsgardSite


class AsgardExtension(ExtensionApp):
    """Serves /asgard/api/ and keeps one Slurm monitor for all of the server's kernels."""

    name = "jupyter_asgard"

    def initialize_settings(self) -> None:
        self.monitor = SlurmMonitor.instance(parent=self.serverapp)
        self.site = AsgardSite(parent=self.serverapp, client=self.monitor.client)
        self.serverapp.kernel_manager.shutdown_kernel = self._shutdown_queued_first(
            self.serverapp.kernel_manager.shutdown_kernel)

    def initialize_handlers(self) -> None:
        from .handlers import handlers

        self.handlers.extend(handlers())

    # --- shutdown of a kernel that waits in the queue ----------------------------------------

    def _shutdown_queued_first(self, shutdown_kernel):
        """jupyter_server waits for a starting kernel before it shuts it down: for a kernel waiting
        in the Slurm queue that can be an hour. Withdraw its allocation first; the start then fails
        at once and the shutdown completes."""

        async def shutdown(kernel_id: str, *args: Any, **kwargs: Any) -> Any:
            await self.withdraw_queued(kernel_id)
            return await shutdown_kernel(kernel_id, *args, **kwargs)

        return shutdown

    async def withdraw_queued(self, kernel_id: str) -> None:
        provisioner = live_provisioner(kernel_id)
        if provisioner is not None and not provisioner.has_process and provisioner.allocation:
            await provisioner.cleanup(restart=False)
