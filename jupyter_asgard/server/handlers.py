"""REST API under /asgard/api/: authenticated and authorized like jupyter_server's own APIs.

Handlers are thin: they read the request, call the services and raise the errors of errors.py. Every
refusal becomes JSON in one place (AsgardHandler.write_error): a "message" a user can act on, "problems"
one per line where there are several, and "hint" where the error knows how to fix it, so that the panel and
the front end show it as it is.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.extension.handler import ExtensionHandlerMixin
from tornado import web

from ..containers.container_steps import container_problem
from ..errors import AsgardError, BadRequest, Conflict, NotFound, TooLarge
from ..kernel.container_removal import ContainerKernel, removal_json
from ..kernel.kernelspec_store import KernelspecStore
from ..kernel.provisioner import PyxisProvisioner, live_provisioner, live_provisioners
from ..launch.launch_config import LaunchConfig, json_schema
from ..site.site_policy import check_launch
from .extension import AsgardExtension
from .kernel_jobs import kernel_job, kernel_jobs
from .notebook_paths import notebook_path, session_paths

API = "/asgard/api"
MAX_BODY = 64 * 1024


def parse_json(body: bytes) -> Any:
    """json.loads, with each way a body can fail it answered as the client's mistake (400), never a 500."""
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        raise BadRequest(f"the request body is not JSON: {error}") from None
    except UnicodeDecodeError:
        raise BadRequest("the request body is not JSON: it is not UTF-8 text") from None
    except RecursionError:
        raise BadRequest("the request body's JSON is nested too deeply to read") from None
    except ValueError:  # the only other one: Python's limit on the digits of an integer
        raise BadRequest(
            f"the request body's JSON holds a number with more digits than {sys.get_int_max_str_digits()}"
        ) from None


def refuse_problems(what: str, problems: list[str]) -> None:
    """A request with problems is refused with all of them, one per line."""
    if problems:
        raise BadRequest(f"{what}: " + "; ".join(problems), problems=problems)


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object")
    return value


class AsgardHandler(ExtensionHandlerMixin, APIHandler):
    """Shared plumbing: the extension app, JSON bodies, JSON refusals."""

    auth_resource = "kernelspecs"

    @property
    def asgard(self) -> AsgardExtension:
        return cast(AsgardExtension, self.extensionapp)

    def json_body(self) -> dict[str, Any]:
        if len(self.request.body) > MAX_BODY:
            raise TooLarge(f"the request body is over {MAX_BODY // 1024} KiB")
        return json_object(parse_json(self.request.body or b"{}"), "the request body")

    def store(self) -> KernelspecStore:
        return KernelspecStore(self.kernel_spec_manager)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The one place where errors become answers: an AsgardError with its status and JSON; anything else
        (tornado's own HTTPError, a bug) in the same shape, so that a client reads every refusal alike."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, AsgardError):
            self.set_status(error.status)
            body = error.to_json()
        else:
            message = error.log_message if isinstance(error, web.HTTPError) and error.log_message else self._reason
            body = {"message": message, "problems": [message]}
        self.set_header("Content-Type", "application/json")
        self.finish(body)

    def log_exception(self, typ: Any, value: BaseException | None, tb: Any) -> None:
        """A user's mistake is no server error: one line, as tornado logs its HTTPErrors, not a traceback."""
        if isinstance(value, AsgardError):
            self.log.warning("%s %s: %d %s", self.request.method, self.request.path, value.status, value.message)
        else:
            super().log_exception(typ, value, tb)


class ImagesHandler(AsgardHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(await self.asgard.site.images())


class ResourcesHandler(AsgardHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(await self.asgard.site.resources())


class ConfigHandler(AsgardHandler):
    """The launch configuration's schema, the site's defaults and limits: what the panel starts from."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        site = self.asgard.site.policy
        defaults = {key: getattr(site, key) for key in json_schema()["properties"]}
        self.finish(
            {
                "schema": json_schema(),
                "defaults": defaults,
                "limits": {"max_gpus": site.max_gpus, "allowed_partitions": list(site.allowed_partitions)},
            }
        )


class ValidateHandler(AsgardHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        config, problems = await self.asgard.site.validate(self.json_body())
        refuse_problems("the launch configuration has problems", problems)
        assert config is not None  # validate gives one whenever it found no problem
        self.finish({"valid": True, "config": config.to_json(), "problems": []})


class EstimateHandler(AsgardHandler):
    """When a launch configuration would start, and what cheaper ones the site allows would (estimates.py)."""

    @web.authenticated
    @authorized
    async def post(self) -> None:
        policy = self.asgard.site.policy
        config, problems = LaunchConfig.check(self.json_body(), variables=policy.expandable_variables)
        config, refused = await check_launch(config, policy, policy.partition)
        refuse_problems("the launch configuration has problems", problems + refused)
        self.finish(await self.asgard.site.estimates.estimate(config))


class KernelRowsHandler(AsgardHandler):
    """Kernel job rows with the path of each kernel's notebook, as the server's sessions know it."""

    auth_resource = "kernels"

    async def located(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # jupyter_server's SessionManager is unannotated: what its list_sessions returns, for mypy.
        list_sessions: Callable[[], Awaitable[list[dict[str, Any]]]] = self.session_manager.list_sessions
        sessions = session_paths(await list_sessions())
        for row in rows:
            row["path"] = notebook_path(row["kernel_id"], row.pop("session_name"), sessions, self.serverapp.root_dir)
        return rows

    def _provisioner(self, kernel_id: str) -> PyxisProvisioner:
        provisioner = live_provisioner(kernel_id)
        if provisioner is None:
            raise NotFound(f"no Asgard kernel {kernel_id!r} runs on this server")
        return provisioner

    def _row(self, kernel_id: str) -> dict[str, Any]:
        return kernel_job(self._provisioner(kernel_id), self.asgard.monitor)


class KernelsHandler(KernelRowsHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        rows = await self.located(kernel_jobs(self.asgard.monitor))
        self.finish(
            {
                "kernels": rows,
                "slurm_reachable": self.asgard.monitor.reachable,
                "slurm_error": self.asgard.monitor.last_error,
            }
        )


class KernelHandler(KernelRowsHandler):
    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        """The kernel's row, and for a kernel taken over after it ran detached what it printed meanwhile and the
        requests sent through its earlier server that have ended (the tab that sent one shows it finished)."""
        rows = await self.located([self._row(kernel_id)])
        provisioner = self._provisioner(kernel_id)
        self.finish(
            {
                **rows[0],
                "while_detached": provisioner.while_detached.get("entries", []),
                "unanswered": await provisioner.unanswered(),
            }
        )

    @web.authenticated
    @authorized
    async def delete(self, kernel_id: str) -> None:
        """Shut the kernel down and release its allocation, also while it waits in the queue."""
        self._row(kernel_id)
        await self.asgard.withdraw_queued(kernel_id)
        if kernel_id in self.kernel_manager:
            # jupyter_server's kernel manager is unannotated: what its shutdown_kernel takes, for mypy.
            shutdown_kernel: Callable[[str], Awaitable[None]] = self.kernel_manager.shutdown_kernel
            await shutdown_kernel(kernel_id)
        provisioner = live_provisioner(kernel_id)
        if provisioner is not None:  # a kernel Jupyter gave up on as dead: its row goes now
            await provisioner.cleanup(restart=False)
        self.set_status(204)
        self.finish()


Method = TypeVar("Method", bound=Callable[..., Awaitable[None]])


def authorized_to(action: str | None = None, resource: str | None = None) -> Callable[[Method], Method]:
    """jupyter_server's @authorized with an action or a resource other than the method's and handler's own
    (typed for mypy: jupyter_server's decorator is not)."""
    return cast(Callable[[Method], Method], authorized(action, resource))


# Save-image and the container terminal run commands in the kernel's container: they need the right to execute
# in kernels, as a kernel's websocket does, not only to write (start, restart, shut down) them.
EXECUTE = "execute"


class KernelTerminalHandler(KernelRowsHandler):
    """POST: a JupyterLab terminal whose shell runs in the kernel's container, on its node."""

    @web.authenticated
    @authorized_to(EXECUTE)
    @authorized_to(resource="terminals")
    async def post(self, kernel_id: str) -> None:
        provisioner = self._provisioner(kernel_id)
        terminal_manager = self.settings.get("terminal_manager")
        if terminal_manager is None:
            raise Conflict("terminals are turned off on this Jupyter server (c.ServerApp.terminals_enabled)")
        if problem := container_problem(provisioner, "opened in a terminal"):
            raise Conflict(problem)
        shell = list(self.asgard.site.policy.terminal_shell)
        opened = self.asgard.terminals.open(
            terminal_manager, provisioner, shell, self.asgard.site.max_terminals_per_kernel
        )
        self.set_status(201)
        self.finish(opened)


class SaveImageHandler(KernelRowsHandler):
    """POST {"name": NAME}: save the kernel's container as NAME.sqsh; GET: how the latest save went."""

    @web.authenticated
    @authorized_to(EXECUTE)
    async def post(self, kernel_id: str) -> None:
        provisioner = self._provisioner(kernel_id)
        name = self.json_body().get("name")
        if not isinstance(name, str):
            raise BadRequest('the request body must name the image: {"name": "my-env"}')
        policy = self.asgard.site.policy
        save = await self.asgard.saves.start(provisioner, name, policy.saved_images_dir, policy.save_timeout)
        self.set_status(202)
        self.finish(save.to_json())

    @web.authenticated
    @authorized
    async def get(self, kernel_id: str) -> None:
        save = self.asgard.saves.latest.get(kernel_id)
        if save is None:
            raise NotFound(f"kernel {kernel_id!r} has not saved its container on this server")
        self.finish(save.to_json())


class BringContainerHandler(KernelRowsHandler):
    """POST: the user's container brought from the node it is on to the kernel's, the kernel restarted in it
    (kernel/container_moves.py); the row's container_move follows it."""

    @web.authenticated
    @authorized_to(EXECUTE)
    async def post(self, kernel_id: str) -> None:
        provisioner = self._provisioner(kernel_id)
        restart = cast(Callable[[str], Awaitable[Any]], self.kernel_manager.restart_kernel)
        move = await self.asgard.moves.start(provisioner, lambda: restart(kernel_id))
        self.set_status(202)
        self.finish({"container_move": move.to_json()})


class ImageImportsHandler(AsgardHandler):
    """POST {"uri": URI, "name": NAME}: import a registry image into the user's image directory (202; an import
    of that URI that runs already is answered, 200); GET: this server's imports. Importing runs a Slurm job as
    the user, as a kernel does: it needs the right to execute in kernels."""

    auth_resource = "kernels"

    @web.authenticated
    @authorized_to(EXECUTE)
    async def post(self) -> None:
        body = self.json_body()
        uri, name = body.get("uri"), body.get("name") or ""
        if not isinstance(uri, str) or not isinstance(name, str):
            raise BadRequest(
                'the request body must name the image: {"uri": "docker://nvcr.io#nvidia/pytorch:24.05-py3", '
                '"name": "pytorch-24.05"} (the name may be left out)'
            )
        found, new = await self.asgard.imports.start(uri, name)
        self.set_status(202 if new else 200)
        self.finish(found.to_json())

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish({"imports": self.asgard.imports.listing()})


class ImageImportHandler(AsgardHandler):
    """GET: one import's state; DELETE: cancel it (its job ends, its files go)."""

    auth_resource = "kernels"

    @web.authenticated
    @authorized
    async def get(self, import_id: str) -> None:
        self.finish(self.asgard.imports.get(import_id).to_json())

    @web.authenticated
    @authorized_to(EXECUTE)
    async def delete(self, import_id: str) -> None:
        self.finish((await self.asgard.imports.cancel(import_id)).to_json())


def container_kernels() -> list[ContainerKernel]:
    """This server's kernels that run in a named container, and on which node (those whose job has ended run
    in nothing)."""
    return [
        ContainerKernel(provisioner.kernel_id, provisioner.container, provisioner.node)
        for provisioner in live_provisioners()
        if provisioner.container and provisioner.node and not provisioner.end_state
    ]


class ContainersHandler(AsgardHandler):
    """GET: the user's named containers, the nodes each is on and this server's kernels in it
    (kernel/container_removal.py)."""

    auth_resource = "kernels"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish({"containers": await self.asgard.containers.listing(container_kernels())})


class ContainerHandler(AsgardHandler):
    """DELETE [?node=NODE]: remove the container from that node, or from every node it is on: a short Slurm job
    per node runs enroot as the user, as a kernel does, so it needs the right to execute in kernels."""

    auth_resource = "kernels"

    @web.authenticated
    @authorized_to(EXECUTE)
    async def delete(self, name: str) -> None:
        node = self.get_query_argument("node", "") or None
        removals = await self.asgard.containers.remove(name, node, container_kernels)
        self.finish(removal_json(name, removals))


class DetachedHandler(AsgardHandler):
    """GET: detached kernels this server found and did not take over, and those that ended while detached."""

    auth_resource = "kernels"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(self.asgard.detached.listing())


class DetachedKernelHandler(AsgardHandler):
    """POST: take the detached kernel over (Adopt); DELETE: end it and release its allocation (Release)."""

    auth_resource = "kernels"

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        await self.asgard.detached.adopt(kernel_id)
        self.finish({"kernel_id": kernel_id})

    @web.authenticated
    @authorized
    async def delete(self, kernel_id: str) -> None:
        await self.asgard.detached.release(kernel_id)
        self.set_status(204)
        self.finish()


class MonitorHandler(AsgardHandler):
    auth_resource = "kernels"

    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish(self.asgard.monitor.stats())


class KernelspecsHandler(AsgardHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        self.finish({"kernelspecs": await asyncio.to_thread(self.store().list)})


class KernelspecHandler(AsgardHandler):
    @web.authenticated
    @authorized
    async def get(self, name: str) -> None:
        self.finish(await asyncio.to_thread(self.store().read, name))

    @web.authenticated
    @authorized
    async def put(self, name: str) -> None:
        body = self.json_body()
        values = json_object(body.get("config", {}), "the kernelspec's config")
        _config, problems = await self.asgard.site.validate(values)
        refuse_problems("the kernel's settings have problems", problems)
        display_name = body.get("display_name") or name
        if not isinstance(display_name, str):
            raise BadRequest("display_name must be text")
        self.finish(await asyncio.to_thread(self.store().write, name, display_name, values))

    @web.authenticated
    @authorized
    async def delete(self, name: str) -> None:
        await asyncio.to_thread(self.store().delete, name)
        self.set_status(204)
        self.finish()


def handlers() -> list[tuple[str, type]]:
    name = r"(?P<name>[^/]+)"
    kernel_id = r"(?P<kernel_id>[^/]+)"
    return [
        (f"{API}/images", ImagesHandler),
        (f"{API}/images/import", ImageImportsHandler),
        (f"{API}/images/import/(?P<import_id>[^/]+)", ImageImportHandler),
        (f"{API}/resources", ResourcesHandler),
        (f"{API}/config", ConfigHandler),
        (f"{API}/validate", ValidateHandler),
        (f"{API}/estimate", EstimateHandler),
        (f"{API}/kernels", KernelsHandler),
        (f"{API}/kernels/{kernel_id}", KernelHandler),
        (f"{API}/kernels/{kernel_id}/terminal", KernelTerminalHandler),
        (f"{API}/kernels/{kernel_id}/save-image", SaveImageHandler),
        (f"{API}/kernels/{kernel_id}/container/bring", BringContainerHandler),
        (f"{API}/containers", ContainersHandler),
        (f"{API}/containers/{name}", ContainerHandler),
        (f"{API}/detached", DetachedHandler),
        (f"{API}/detached/{kernel_id}", DetachedKernelHandler),
        (f"{API}/monitor", MonitorHandler),
        (f"{API}/kernelspecs", KernelspecsHandler),
        (f"{API}/kernelspecs/{name}", KernelspecHandler),
    ]
