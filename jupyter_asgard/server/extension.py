"""The jupyter_asgard server extension: the REST API under /asgard/api/ (handlers.py) over the site
(site.py) and the one Slurm monitor of the server process (monitor.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import IOLoop

from ..containers.image_imports import ImageImports
from ..containers.image_saves import ImageSaves
from ..errors import SlurmError
from ..kernel.container_moves import ContainerMoves
from ..kernel.container_removal import ContainerRemoval
from ..kernel.kernel_env import import_environment
from ..kernel.provisioner import PyxisProvisioner, live_provisioner
from ..site.site import AsgardSite
from ..slurm.monitor import SlurmMonitor
from ..slurm.slurm_commands import orphaned_jobs, orphans_argv, pid_alive
from . import pending_kernels
from .detached_kernels import DetachedKernels
from .kernel_activity import KernelActivity
from .kernel_terminals import KernelTerminals
from .kernel_websockets import KernelWebsockets


class AsgardExtension(ExtensionApp):
    """Serves /asgard/api/ and keeps one Slurm monitor for all of the server's kernels."""

    name = "jupyter_asgard"

    def initialize_settings(self) -> None:
        assert self.serverapp is not None  # the server links its extensions before it initializes them
        self.monitor = SlurmMonitor.instance(parent=self.serverapp)
        self.site = AsgardSite(parent=self.serverapp, client=self.monitor.client)
        self.saves = ImageSaves(self.monitor.client, images_changed=self.site.forget_images)
        self.imports = ImageImports(
            self.monitor.client, self.site.policy, self.site.forget_images, import_environment(os.environ)
        )
        self.terminals = KernelTerminals()
        self.moves = ContainerMoves(self.monitor.client)
        self.containers = ContainerRemoval(self.monitor.client)
        kernel_manager = self.serverapp.kernel_manager
        pending_kernels.install(kernel_manager)
        # Wraps the method of this server's kernel manager only (an instance attribute, not its class's method).
        kernel_manager.shutdown_kernel = self._shutdown_queued_first(  # type: ignore[method-assign]
            kernel_manager.shutdown_kernel
        )
        IOLoop.current().add_callback(self.cancel_orphans)
        self.detached = DetachedKernels(self.serverapp, self.monitor, self.log)
        self._take_over_detached()
        self.detached.watch_sessions()
        self.activity = KernelActivity(self.serverapp.web_app.settings, kernel_manager)
        assert self.serverapp.event_logger is not None  # made before the extensions are initialized
        self.websockets = KernelWebsockets(self.serverapp.event_logger, kernel_manager, self.log)
        self._stop_on_sigint()

    def _stop_on_sigint(self) -> None:
        """SIGINT stops the server in order, as SIGTERM does, where jupyter_server leaves it to Python (without a
        terminal, where it would ask whether to stop). A JupyterHub's spawner stops a user's server with SIGINT
        first (its culler, the user's Stop): as a KeyboardInterrupt, the server would end without its cleanup,
        its kernels not shut down (one whose shutdown was under way cut short) and its detachable kernels not
        let go."""
        if threading.current_thread() is threading.main_thread() and (
            signal.getsignal(signal.SIGINT) is signal.default_int_handler
        ):
            assert self.serverapp is not None
            signal.signal(signal.SIGINT, self.serverapp._signal_stop)

    def _take_over_detached(self) -> None:
        """Before the server answers its first request: JupyterLab marks a kernel it asks about and the server
        does not know as dead, and drops its session. The HTTP server listens only once the loop runs (it
        binds in a callback added after this), so running the take-over to its end here keeps them apart."""
        if asyncio.get_event_loop().is_running():  # an extension loaded into a running server (tests)
            IOLoop.current().add_callback(self.detached.take_over)
        else:
            IOLoop.current().run_sync(self.detached.take_over)

    async def _start_jupyter_server_extension(self, serverapp: Any) -> None:
        self.detached.start_holding()
        self.activity.start()

    async def cancel_orphans(self) -> None:
        """Allocations whose holder (a server or nbclient process of this host) died without releasing
        them, e.g. with the machine: found by the job name and the comment every allocation carries."""
        try:
            result = await self.monitor.client.run(orphans_argv())
        except SlurmError as error:
            self.log.warning("Could not look for orphaned Asgard allocations: %s", error)
            return
        for job_id in orphaned_jobs(result.stdout, socket.gethostname(), pid_alive):
            self.log.warning("Cancelling Slurm job %s: an Asgard kernel allocation whose holder is gone", job_id)
            await self.monitor.client.scancel(job_id)

    async def stop_extension(self) -> None:
        """The server stops: no squeue left half started. jupyter_server runs this before it shuts the kernels
        down (cleanup_extensions, then cleanup_kernels): their allocations are released after it, by their own
        shutdown (or, should that not happen, by their lease ending with the server's process). Detachable
        kernels leave the kernel manager first, and run on for the next server. Image imports are cancelled: nobody
        would see them end."""
        self.activity.stop()
        await self.detached.detach_all()
        await self.imports.cancel_all()
        await self.moves.cancel_all()
        await self.monitor.stop()

    def initialize_handlers(self) -> None:
        from .handlers import handlers

        self.handlers.extend(handlers())

    # --- shutdown of a kernel that waits in the queue ----------------------------------------

    def _shutdown_queued_first(
        self, shutdown_kernel: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        """jupyter_server waits for a starting kernel before it shuts it down: for a kernel waiting
        in the Slurm queue that can be an hour. Withdraw its allocation first; the start then fails
        at once and the shutdown completes."""

        async def shutdown(kernel_id: str, *args: Any, **kwargs: Any) -> Any:
            await self.withdraw_queued(kernel_id)
            return await shutdown_kernel(kernel_id, *args, **kwargs)

        return shutdown

    async def withdraw_queued(self, kernel_id: str) -> None:
        """A kernel whose start is not over, at any moment of it (also before it has asked Slurm for
        anything): withdrawn, and its start failed before jupyter_server's shutdown cancels it, so that the
        clients waiting for it are told why rather than "500"."""
        assert self.serverapp is not None
        if kernel_id not in self.serverapp.kernel_manager:
            return
        manager = self.serverapp.kernel_manager.get_kernel(kernel_id)
        if pending_kernels.has_started(manager) and (provisioner := live_provisioner(kernel_id)) is not None:
            if not provisioner.has_process and provisioner.allocation:  # between two steps of a restart
                await provisioner.cleanup(restart=False)
            return
        provisioner = await pending_kernels.provisioner_of(manager)
        if isinstance(provisioner, PyxisProvisioner):
            await provisioner.withdraw()
            await pending_kernels.start_settled(manager)
