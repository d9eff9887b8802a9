"""PyxisProvisioner: a Jupyter kernel in a Pyxis container on a Slurm GPU node.

Life cycle (jupyter_client calls these in order, see local_provisioner.py):
pre_launch checks the launch configuration before anything is submitted;
launch_kernel gets the allocation (once; restarts reuse it), runs the kernel
as an srun step with Pyxis's options and returns the connection info the
node reported, with the kernel's CurveZMQ keys where its traffic is encrypted
(encryption.py); post_launch, after a move to another node, points the
server's activity watch at the new address (kernel_address.py);
poll/wait/send_signal/kill/terminate act on the step;
cleanup releases the allocation unless the kernel is restarting.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import zmq
from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.provisioning.provisioner_base import KernelProvisionerBase
from traitlets.config import Configurable

from ..containers.container_phases import CREATING, half_made
from ..containers.container_starts import CONTAINER_STARTS
from ..containers.container_steps import ENROOT_NAME_PREFIX, NOTHING_MADE, remove_container_argv
from ..containers.image_cache import ImageCache, is_registry_image
from ..containers.image_import_progress import ImportProgress
from ..containers.launch_plan import container_base_name, container_name, kernel_step_argv, lasting_container_name
from ..errors import (
    AsgardError,
    KernelStartError,
    KernelWithdrawn,
    LaunchConfigError,
    QueueWaitExceeded,
    SlurmError,
    SlurmNotFound,
)
from ..launch.encryption import encryption_problem, stricter, wants_curve
from ..launch.launch_config import LaunchConfig
from ..node import bootstrap, curve_proxy, recorder
from ..site.placement import PLACEMENT_TRAIT, Placement, chooses_nodes, on_node, place, wiped_notice
from ..site.site_policy import SitePolicy, check_launch, max_detach_grace
from ..slurm.allocation import Allocation
from ..slurm.monitor import SlurmMonitor
from ..slurm.slurm_commands import holder_comment
from .container_places import ContainerPlace, ContainerPlaces
from .detach_records import THIS_SERVER, KernelRecord, hub_server, private_root
from .kept_allocation import KeptAllocation
from .kept_process import KeptProcess
from .kernel_address import address, keep_connection_file, rewatch_activity
from .kernel_env import STEERING_PREFIXES, import_environment, steering_names, step_environment
from .kernel_row import why_ended
from .kernel_step import KernelStep

BOOTSTRAP_SOURCE = Path(bootstrap.__file__).read_text()
CURVE_PROXY_SOURCE = Path(curve_proxy.__file__).read_text()
RECORDER_SOURCE = Path(recorder.__file__).read_text()
ADOPT_TIMEOUT = 15.0  # seconds for a detached kernel to answer the server taking it over
PORT_NAMES = bootstrap.PORT_NAMES
PORT_ATTEMPTS = 3  # starts on fresh ports when a kernel starting beside this one took a port first
HALF_MADE_REMOVAL_TIMEOUT = 60.0  # seconds for enroot to remove a half-made container's files


def kernelspec_settings(kernel_spec: Any) -> set[str]:
    """The settings a kernelspec's own metadata.kernel_provisioner.config names."""
    metadata = getattr(kernel_spec, "metadata", None) or {}
    return set(metadata.get("kernel_provisioner", {}).get("config") or {})


# The Asgard kernels of this process by kernel id, from their first launch until cleanup: jupyter_server
# lists a kernel only once it has started, but a kernel waiting in the queue is the one users ask about.
_live: dict[str, PyxisProvisioner] = {}


def live_provisioners() -> list[PyxisProvisioner]:
    return list(_live.values())


def live_provisioner(kernel_id: str) -> PyxisProvisioner | None:
    return _live.get(kernel_id)


# Detached kernels this server is taking over, by kernel id: their start (under the same id) attaches to the
# running kernel instead of launching one (server/detached_kernels.py puts them here).
adoptions: dict[str, KernelRecord] = {}


# srun's words when it cannot reach the node a step was meant to run on.
NODE_LOST_MARKS = (
    "Communication connection failure",
    "Unable to contact slurm node",
    "Node failure",
    "Task launch for",
    "Zero Bytes were transmitted or received",
)


def _signal_name(signum: int) -> str:
    return signal.Signals(signum).name.removeprefix("SIG")


# jupyter_client makes its metaclass of ABCMeta and type(LoggingConfigurable), which mypy cannot evaluate.
class PyxisProvisioner(KernelProvisionerBase, SitePolicy):  # type: ignore[metaclass]
    """Runs the kernelspec's argv inside a Pyxis container, as a step of a Slurm allocation of its own."""

    def __init__(self, **kwargs: Any) -> None:
        # jupyter_client passes a kernelspec's config as keyword arguments, beside its own (kernel_id, ...):
        # of those a kernelspec names, only launch settings apply; the site's policy is the site's alone.
        launch_keys = set(LaunchConfig.keys())
        refused = kernelspec_settings(kwargs.get("kernel_spec")) - launch_keys
        known = set(self.class_trait_names()) - refused
        self.site_settings = sorted(refused & set(self.class_trait_names(config=True)))
        self.unknown_settings = sorted(set(kwargs) - known - set(self.site_settings))
        launch = {name: kwargs.pop(name) for name in launch_keys & set(kwargs)}
        super().__init__(**{name: value for name, value in kwargs.items() if name in known})
        self.site_partition = self.partition  # the site's default, before the kernelspec's settings apply
        self.site_detach_grace = max_detach_grace(self.detach_grace)
        for name, value in launch.items():
            setattr(self, name, value)
        self.monitor = SlurmMonitor.instance(parent=self.parent if isinstance(self.parent, Configurable) else None)
        self.client = self.monitor.client  # one client for every Slurm process of the server: counted together
        self.allocation: Allocation | KeptAllocation | None = None
        self.step: KernelStep | None = None
        self.launch: LaunchConfig | None = None
        self.launch_dir = ""
        self.session_name = ""  # the notebook's path, as jupyter_server passes it to the kernel
        self.node = ""
        self.container = ""  # the named container the kernel runs in (no Pyxis flag), once it has started
        self.end_state = ""  # set once the kernel's job has ended for good (CANCELLED, TIMEOUT, ...)
        self.lost_nodes: list[str] = []  # nodes that died under this kernel: new allocations avoid them
        self.exited = False  # its job ended: the kernel counts as a process that has exited
        self._restart_requested = False
        self._ports: dict[str, int] = {}
        self._moved = False  # the last launch came back at another address than the one before
        self._shutting_down = False
        self._withdrawn = False  # shut down before its start was over: nothing more may be submitted
        self._releasing = asyncio.Lock()  # a shutdown's release and a failed start's wait for each other
        self._starting_container = ""  # the named container of the step being started
        self.encryption = ""  # how the running kernel's traffic goes (encryption.MODES), once it has started
        self.record: KernelRecord | None = None  # a detachable kernel's directory (detach_records.py)
        self.detached = False  # the server stopped and left the kernel running: nothing more is done to it
        self.while_detached: dict[str, Any] = {}  # what an adopted kernel printed while no server held it
        self.taken_over_at: float | None = None  # when this server took the kernel over (seconds since the epoch)
        self.detached_since = 0.0  # when the server before it let go of it, as its record says
        self.importing: ImportProgress | None = None  # the import of its registry image, while a start does it
        self.places = ContainerPlaces()
        self.placement = Placement()  # where the last allocation went, and why not where its container is
        self.container_notice = ""  # where the user's container is, when the kernel runs away from it
        self.container_move: dict[str, Any] | None = None  # "bring it here" (container_moves.py), once asked
        self.container_source = ""  # a saved copy of its container that the next start makes the container from
        self._importing_since = 0.0

    # --- what the UI reads ---------------------------------------------------------

    @property
    def job_id(self) -> str:
        return self.allocation.job_id if self.allocation else ""

    @property
    def job_state(self) -> str:
        info = self.allocation.info if self.allocation else None
        return info.state if info else ""

    @property
    def phase(self) -> tuple[str, float | None]:
        """The container's setup while the kernel starts (the import of its registry image, then Pyxis's steps),
        and seconds in it so far."""
        if self.importing is not None:
            seconds = asyncio.get_running_loop().time() - self._importing_since
            return f"importing its image: {self.importing.describe()}", seconds
        step = self.step
        if step is None or step.handshake or not step.phase:
            return "", None
        return step.phase, asyncio.get_running_loop().time() - step.phase_since

    @property
    def container_home(self) -> str:
        """The node with the user's container, while the kernel runs away from it ("" otherwise)."""
        homes = self.placement.homes
        return homes[0] if self.container_notice and homes and self.node not in homes else ""

    @property
    def pending_reason(self) -> str:
        info = self.allocation.info if self.allocation else None
        return info.reason if info and info.state == "PENDING" else ""

    # --- life cycle ----------------------------------------------------------------

    @property
    def has_process(self) -> bool:
        return self.step is not None or self.exited

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        """Check everything that can be checked before Slurm is asked for anything."""
        self._shutting_down = False
        self.launch_dir = str(kwargs.get("cwd") or os.getcwd())
        adopted = adoptions.get(self.kernel_id)
        if adopted is not None:  # running already, with the settings it was started with
            record = adopted.read()
            self.launch_dir = str(record.get("launch_dir") or self.launch_dir)
            self.launch = LaunchConfig.parse(record.get("launch") or {})
        else:
            self.launch = await self._checked_config()
        _live[self.kernel_id] = self
        if self.connection_info and self.allocation is not None and not self.end_state:
            keep_connection_file(self.parent, self.connection_info)  # a restart: the last address until the new one
        kwargs = await super().pre_launch(**kwargs)
        self.session_name = kwargs["env"].get("JPY_SESSION_NAME", "")
        cmd = list(self.kernel_spec.argv) + list(kwargs.pop("extra_arguments", []))
        return {**kwargs, "cmd": cmd}

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> KernelConnectionInfo:
        assert self.launch is not None
        env = dict(kwargs.get("env") or os.environ)
        requested, self._restart_requested = self._restart_requested, False
        adopted = adoptions.pop(self.kernel_id, None)
        if adopted is not None:
            return await self._adopt(adopted)
        try:
            await self._usable_allocation(env)
            try:
                return await self._start_on_free_ports(cmd, env)
            except KernelStartError:
                if not await self._node_lost():
                    raise
            self.log.warning("Kernel %s: node %s is lost; starting again elsewhere", self.kernel_id, self.node)
            await self._usable_allocation(env)
            return await self._start_on_free_ports(cmd, env)
        except BaseException as error:
            await self._release(keep_row=bool(self.end_state))
            if self.end_state and not requested and self.connection_info and isinstance(error, KernelStartError):
                # An automatic restart (the restarter's) of a kernel whose job has ended: jupyter_client only
                # declares a kernel dead after relaunches that die, so report one that has exited already.
                self.log.error("Kernel %s: %s", self.kernel_id, error)
                self.exited = True
                return self.connection_info
            withdrawn = self._shutting_down or self._withdrawn
            if withdrawn and not isinstance(error, asyncio.CancelledError | KernelWithdrawn):
                raise KernelWithdrawn() from error
            raise

    async def post_launch(self, **kwargs: Any) -> None:
        """After a move to another node jupyter_client knows the new address; make jupyter_server follow."""
        if self._moved:
            self._moved = False
            rewatch_activity(self.parent, self.kernel_id)

    async def poll(self) -> int | None:
        return self.step.poll() if self.step else 1 if self.exited else 0

    async def wait(self) -> int | None:
        """As poll() says: without a step there is nothing to wait for (0), or the job ended under it (1)."""
        return await self.step.wait() if self.step else 1 if self.exited else 0

    async def shutdown_requested(self, restart: bool = False) -> None:
        """A polite shutdown before a restart means someone asked for the restart (the restarter kills)."""
        self._restart_requested = restart

    async def send_signal(self, signum: int) -> None:
        if self.step and signum:
            await self.step.signal(_signal_name(signum))

    async def kill(self, restart: bool = False) -> None:
        """At once, as LocalProvisioner's SIGKILL; terminate() is the polite one."""
        if self.step:
            await self.step.kill()

    async def terminate(self, restart: bool = False) -> None:
        if self.step:
            await self.step.signal("TERM")

    async def withdraw(self) -> None:
        """A shutdown while the kernel starts, at whatever moment of its start: what was submitted is
        withdrawn, nothing more is, and the start fails at once (instead of waiting for the queue)."""
        self._withdrawn = self._shutting_down = True
        self.log.info("Kernel %s: shut down while it started; its start is withdrawn", self.kernel_id)
        if self.allocation is not None:
            await self.cleanup(restart=False)

    async def cleanup(self, restart: bool = False) -> None:
        """After the step: on restart keep the allocation (and the container), else release both."""
        if self.detached:
            return
        if not restart:
            self._shutting_down = True
            await self._release()
            return
        async with self._releasing:
            await self._stop_step()
            self.step = None

    @property
    def outlives_server(self) -> bool:
        """A detachable kernel (its settings say so): it runs in a batch job the next server takes over."""
        return bool(self.launch and self.launch.detachable)

    async def unanswered(self) -> list[dict[str, Any]]:
        """The execute requests sent through an earlier server that ended after it let go of this kernel, with what
        they printed (KernelRecord.unanswered, read anew: one may end after the take-over). Their replies went to
        that server's connection to the kernel, which is gone: the tabs that sent them still wait for them."""
        if self.record is None or self.taken_over_at is None:
            return []
        return await asyncio.to_thread(self.record.unanswered, self.detached_since, self.taken_over_at)

    async def let_go(self, say_so: bool = True) -> None:
        """The server stops and leaves this detachable kernel running for the next one: stop following it, and
        (say_so) say it is free (its grace runs from now)."""
        self.detached = True
        _live.pop(self.kernel_id, None)
        if self.step is not None and isinstance(self.step.process, KeptProcess):
            self.step.process.forget()
        if self.allocation is not None:
            self.allocation.forget()
        if self.record is not None and say_so:
            await asyncio.to_thread(self.record.let_go)
        self.log.info("Kernel %s: detached; it runs on in Slurm job %s on %s", self.kernel_id, self.job_id, self.node)

    async def _adopt(self, record: KernelRecord) -> KernelConnectionInfo:
        """Take over a detached kernel: its job, its running step, its address and keys, as they were."""
        data = await asyncio.to_thread(record.read)
        self.record = record
        allocation = self._kept_allocation(record)
        allocation.adopt(str(data["job_id"]), str(data["node"]))
        self.allocation = allocation
        self.step = KernelStep(self.client, self.log, self.kernel_id, allocation.job_id, spawn=allocation.spawn)
        process = KeptProcess(record, int(data["start"]), allocation.job_over, from_end=True)
        self.step.adopt(process, dict(data["handshake"]))
        connection = dict(data["connection"])
        curve = (
            (connection["curve_publickey"].encode(), connection["curve_secretkey"].encode())
            if connection.get("curve_publickey")
            else None
        )
        self.node, self.container, self.encryption = (
            str(data["node"]),
            str(data.get("container", "")),
            str(data.get("encryption", "none")),
        )
        self.session_name = str(data.get("session", {}).get("path") or self.session_name)
        self._hold_curve_keys(curve)
        try:
            await self.step.wait_ready(ADOPT_TIMEOUT, curve)
        except KernelStartError:
            process.forget()
            raise
        self._ports = {name: int(connection[name]) for name in PORT_NAMES}
        self.detached_since, self.taken_over_at = record.claimed_after, time.time()
        self.while_detached = await asyncio.to_thread(record.while_detached, self.detached_since)
        connection["key"] = connection["key"].encode()
        self.connection_info = cast(KernelConnectionInfo, connection)
        if self.parent is not None:  # what a connection file the last server left says may match: use it all
            self.parent.load_connection_info(self.connection_info)
        self.log.info("Kernel %s: taken over in Slurm job %s on %s", self.kernel_id, self.job_id, self.node)
        return self.connection_info

    def _kept_allocation(self, record: KernelRecord) -> KeptAllocation:
        assert self.launch is not None
        grace = self.launch.detach_grace or self.site_detach_grace
        return KeptAllocation(self.client, self.monitor, self.log, record, grace, self.keeper_python)

    def _write_record(self, handshake: dict[str, Any]) -> None:
        """What the next server needs to take this kernel over (secrets: the file is 0600, its folder 0700)."""
        assert self.record is not None and self.launch is not None and self.step is not None
        connection = {name: value for name, value in self.connection_info.items()}
        connection["key"] = self.parent.session.key.decode() if self.parent is not None else ""
        self.record.update(
            kernel_id=self.kernel_id,
            kernel_name=self._kernel_name(),
            job_id=self.job_id,
            node=self.node,
            container=self.container,
            encryption=self.encryption,
            launch=self.launch.to_json(),
            launch_dir=self.launch_dir,
            grace=self.launch.detach_grace or self.site_detach_grace,
            start=self.step.process.number,
            handshake=handshake,
            connection=connection,
            hub_server=hub_server(),
        )

    def resolve_path(self, path: str) -> str | None:
        """Paths in tracebacks are container paths; those under the workdir are the same on this host."""
        candidate = Path(path).expanduser()
        if not candidate.is_absolute():
            candidate = Path(self.container_workdir()) / candidate
        return candidate.as_posix() if candidate.exists() else None

    async def get_provisioner_info(self) -> dict[str, Any]:
        info = await super().get_provisioner_info()
        info.update(job_id=self.job_id, node=self.node, ports=self._ports, lost_nodes=self.lost_nodes)
        return info

    async def load_provisioner_info(self, provisioner_info: dict[str, Any]) -> None:
        """What another process's provisioner knew of this kernel: where it ran, on which ports and which nodes
        to avoid. Not the allocation: it was held by that process, and ends with it."""
        await super().load_provisioner_info(provisioner_info)
        self.node = str(provisioner_info.get("node") or "")
        self._ports = {name: int(port) for name, port in (provisioner_info.get("ports") or {}).items()}
        self.lost_nodes = [str(node) for node in provisioner_info.get("lost_nodes") or []]

    # --- steps of a launch -----------------------------------------------------------

    async def _checked_config(self) -> LaunchConfig:
        values = {name: getattr(self, name) for name in LaunchConfig.keys()}
        problems = [
            f"unknown setting {name!r} in the kernelspec (known: {', '.join(LaunchConfig.keys())})"
            for name in self.unknown_settings
        ]
        problems += [
            f"the kernelspec {self._kernel_name()!r} sets {name!r}, a site setting: only the site's "
            f"configuration may set it (c.PyxisProvisioner.{name})"
            for name in self.site_settings
        ]
        try:
            config = LaunchConfig.parse(values, variables=self.expandable_variables)
        except LaunchConfigError as error:
            raise KernelStartError(
                f"the kernelspec {self._kernel_name()!r} is not valid: " + "; ".join(problems + error.problems),
                "fix it in the Asgard panel or in its kernel.json",
            ) from None
        config, refused = await check_launch(
            config, self, self.site_partition, self.launch_dir, site_grace=self.site_detach_grace
        )
        problems += refused
        problem = encryption_problem(self._encryption_policy(), self.kernel_spec, self._kernel_name())
        problems += [problem] if problem else []
        steering = steering_names(getattr(self.kernel_spec, "env", None) or {})
        if steering:
            problems.append(
                f"the kernelspec's env sets {', '.join(steering)}: variables starting with "
                f"{', '.join(STEERING_PREFIXES)} steer Slurm, Pyxis, enroot or (LD_*) the code srun loads on "
                "this host, which only the kernel's settings and the site may do; remove them from its env (a "
                "library path the kernel needs belongs in its image)"
            )
        try:
            self.client.command("srun"), self.client.command("salloc")
        except SlurmNotFound as error:
            problems.append(str(error))
        if problems:
            raise KernelStartError("; ".join(problems), "fix the kernel's settings in the Asgard panel or kernel.json")
        return config

    async def _usable_allocation(self, env: dict[str, str]) -> None:
        """The allocation to run the kernel in: the current one while it lives (restarts stay on it), a new
        one where its node died; a job that was cancelled or timed out does not come back."""
        if self.end_state:
            raise self._ended_error()
        if self.allocation is not None:
            ended = await self.allocation.ended()
            if ended == "NODE_FAIL":
                await self._forget_node()
            elif ended:
                self.end_state = ended
                raise self._ended_error()
        if self.allocation is None:
            await self._allocate(env)

    def _ended_error(self) -> KernelStartError:
        job = self.allocation.job_id if self.allocation else "of this kernel"
        return KernelStartError(
            f"the kernel's Slurm job {job} has ended: {why_ended(self.end_state)}",
            "shut this kernel down and start a new one (its allocation, and what was in memory, are gone)",
        )

    async def _node_lost(self) -> bool:
        """After a failed step on a restart: did the node go away (so a new allocation may help)?"""
        if self.allocation is None or not self.node:
            return False
        output = "\n".join(self.step.output) if self.step else ""
        if await self.allocation.ended() == "NODE_FAIL" or any(mark in output for mark in NODE_LOST_MARKS):
            await self._forget_node()
            return True
        return False

    async def _forget_node(self) -> None:
        """Give up the node and its allocation."""
        self.lost_nodes.append(self.node)
        await self._release(keep_row=True)

    async def _allocate(self, env: dict[str, str]) -> None:
        """A new allocation: on the node where the kernel's container is, where Slurm would start it there now
        (site/placement.py), else wherever Slurm puts it."""
        assert self.launch is not None
        if self._withdrawn:
            raise KernelWithdrawn()
        salloc_env = step_environment(env, {}, {})
        self.placement = await self._placement()
        node = self.placement.node
        if node:
            self.log.info(
                "Kernel %s: its container %s is on %s: asking for that node",
                self.kernel_id,
                *(self.placement.container, node),
            )
            try:
                return await self._request(on_node(self.launch, node), self.placement.patience, salloc_env)
            except QueueWaitExceeded:
                self.placement = self.placement.elsewhere(
                    f", which was not free within {self.placement.patience:.0f} s"
                )
        await self._request(self.launch, self.queue_timeout, salloc_env)

    async def _request(self, launch: LaunchConfig, queue_timeout: float, env: dict[str, str]) -> None:
        if self.outlives_server:
            try:
                self.record = KernelRecord(await asyncio.to_thread(private_root), self.kernel_id)
            except AsgardError as error:
                raise KernelStartError(error.message, error.hint) from None
            await asyncio.to_thread(self.record.remove)  # what a job of this kernel on a lost node left
            await asyncio.to_thread(self.record.create)
            await asyncio.to_thread(self.record.hold, THIS_SERVER)
        if self._withdrawn:  # withdrawn during an await above or placement's: it found no allocation to cancel
            if self.record is not None:
                await asyncio.to_thread(self.record.remove)
            raise KernelWithdrawn()
        if self.outlives_server:
            assert self.record is not None  # made above
            self.allocation = self._kept_allocation(self.record)
        else:
            self.allocation = Allocation(self.client, self.monitor, self.log, self.kernel_id)
        comment = holder_comment(socket.gethostname(), os.getpid())
        await self.allocation.request(launch, comment, queue_timeout, env, tuple(self.lost_nodes))

    async def _placement(self) -> Placement:
        """Where the kernel's container is, and whether its allocation goes there (site/placement.py)."""
        assert self.launch is not None
        name = lasting_container_name(self.launch, self.container_name_template, self._kernel_name())
        if not (self.containers and name):
            return Placement()
        try:
            places = await asyncio.to_thread(self.places.places, name)
        except AsgardError as error:
            self.log.warning("Kernel %s: where its container is stays unknown: %s", self.kernel_id, error)
            return Placement()
        usable = [place for place in places if place.node not in self.lost_nodes]
        homes = tuple(place.node for place in usable if not place.fresh_copy)
        copies = tuple(place.node for place in usable if place.fresh_copy)
        placement = Placement(name, homes, copies) if homes else Placement(name, copies)
        if not placement.homes:
            return placement
        if not self.container_placement:
            return placement.elsewhere(f" (this server does not place kernels by their containers: {PLACEMENT_TRAIT})")
        if chooses_nodes(self.launch):
            return placement.elsewhere(" (this kernel's salloc_args choose its nodes)")
        return await place(self.client, self.launch, placement, self.container_placement_wait)

    async def _note_container(self, step: KernelStep) -> None:
        """The kernel runs in its container on its node: recorded (container_places.py), and the user told
        where their container is if not here, or that the one recorded here was gone."""
        assert self.launch is not None
        if not self.container:
            return
        fresh = CREATING in step.phases
        away = self.placement.notice(self.node, fresh)
        try:
            place = ContainerPlace(
                *(self.container, self.node, self.launch.image, self.launch.container_writable, self.launch.partition),
                fresh_copy=fresh and bool(away),
            )
            wiped = await asyncio.to_thread(self.places.seen, place, fresh)
        except AsgardError as error:
            self.log.warning("Kernel %s: where its container is could not be recorded: %s", self.kernel_id, error)
            return
        if wiped is not None:
            self.log.warning(
                "Kernel %s: the container %s recorded on %s (last used %s) was gone: forgotten; made anew",
                *(self.kernel_id, self.container, self.node, wiped.last_use),
            )
        self.container_notice = wiped_notice(self.container, self.node) if wiped else away
        if self.container_notice:
            self.log.warning("Kernel %s: %s", self.kernel_id, self.container_notice)

    async def _start_on_free_ports(self, cmd: list[str], env: dict[str, str]) -> KernelConnectionInfo:
        """Start the step; again on other ports when a kernel starting beside it on the node took one first
        (the bootstrap picks free ports, the kernel binds them a moment later). Its image is looked up once."""
        assert self.launch is not None
        launch = await self._from_copy() or await self._with_cached_image(self.launch, env)
        for _ in range(PORT_ATTEMPTS - 1):
            try:
                return await self._start_step(cmd, env, launch)
            except KernelStartError:
                if not (self.step and self.step.lost_a_port()):
                    raise
                await self.step.stop()
                self.log.warning(
                    "Kernel %s: a port was taken on the node; starting again on other ports", self.kernel_id
                )
        return await self._start_step(cmd, env, launch)

    async def _start_step(self, cmd: list[str], env: dict[str, str], launch: LaunchConfig) -> KernelConnectionInfo:
        assert self.launch is not None and self.allocation is not None and self.parent is not None
        session = self.parent.session
        kernelspec_env = {name: env[name] for name in self.kernel_spec.env if name in env}
        curve = self._curve_keys()
        step_env = step_environment(
            env,
            kernelspec_env,
            {
                "ASGARD_KERNEL_KEY": session.key.decode(),
                "ASGARD_SIGNATURE_SCHEME": session.signature_scheme,
                "ASGARD_KERNEL_NAME": self._kernel_name(),
                **self._curve_environment(curve),
                **({"ASGARD_RECORDER": RECORDER_SOURCE} if self.record else {}),
            },
        )
        argv = kernel_step_argv(
            launch,
            job_id=self.allocation.job_id,
            workdir=self.launch_dir,
            mount_workdir=self.mount_workdir,
            name_template=self.container_name_template,
            kernel_name=self._kernel_name(),
            kernelspec_env=list(kernelspec_env),
            command=[self.bootstrap_python, "-I", "-S", "-c", BOOTSTRAP_SOURCE, *cmd],
            srun=self.client.command("srun"),
            containers=self.containers,
            progress=self.container_progress,
        )
        self.log.info("Kernel %s: starting in Slurm job %s", self.kernel_id, self.allocation.job_id)
        spawn = self.allocation.spawn if isinstance(self.allocation, KeptAllocation) else None
        self.step = KernelStep(self.client, self.log, self.kernel_id, self.allocation.job_id, spawn=spawn)
        name = (
            container_base_name(
                container_name(launch, self.container_name_template, self._kernel_name(), self.allocation.job_id)
            )
            if self.containers
            else ""
        )
        self._starting_container = name
        async with CONTAINER_STARTS.starting(self.allocation.node, name) if name else nullcontext():
            handshake = await self.step.start(argv, step_env, self.start_timeout)
        self.node, self.container = handshake["node"], name
        self.encryption = str(handshake.get("encryption") or "none")
        curve = curve if self.encryption != "none" else None
        self._hold_curve_keys(curve)
        await self.step.wait_ready(self.start_timeout, curve)
        await self._note_container(self.step)
        self.log.info(
            "Kernel %s: running on %s (%s), encryption: %s", self.kernel_id, self.node, handshake["ip"], self.encryption
        )
        self._ports = {name: int(handshake[name]) for name in PORT_NAMES}
        previous = address(self.connection_info)
        info: dict[str, Any] = {
            "ip": handshake["ip"],
            "transport": "tcp",
            **self._ports,
            "key": session.key,
            "signature_scheme": session.signature_scheme,
            "kernel_name": self._kernel_name(),
        }
        if curve:
            info.update(curve_publickey=curve[0].decode(), curve_secretkey=curve[1].decode())
        self.connection_info = cast(KernelConnectionInfo, info)  # mypy reads no TypedDict from **self._ports
        self._moved = bool(previous) and previous != address(self.connection_info)
        if self.record is not None:
            await asyncio.to_thread(self._write_record, handshake)
        return self.connection_info

    async def _from_copy(self) -> LaunchConfig | None:
        """The launch that makes the kernel's container anew from a copy brought from another node
        (container_moves.py): the copy that is on this node removed first, under the container's own name."""
        source, self.container_source = self.container_source, ""
        if not source:
            return None
        assert self.launch is not None and self.allocation is not None
        name, node = self.container, self.allocation.node
        try:
            await self._remove_container(name)
        except SlurmError as error:
            raise KernelStartError(
                f"the container {name} on {node} could not be replaced by the copy: {error}"
            ) from None
        await asyncio.to_thread(self.places.forget, name, node)
        self.placement = replace(self.placement, homes=(node, *self.placement.homes))
        self.log.info("Kernel %s: making its container %s on %s from %s", self.kernel_id, name, node, source)
        return replace(self.launch, image=source, container_name=self.launch.container_name or name)

    async def _with_cached_image(self, launch: LaunchConfig, env: dict[str, str]) -> LaunchConfig:
        """The launch with a registry image replaced by its imported squashfs (image_cache.py), where the site
        imports registry images once; as it is otherwise (Pyxis pulls the image itself)."""
        if not (self.containers and self.import_registry_images and is_registry_image(launch.image)):
            return launch
        assert self.allocation is not None
        cache = ImageCache(self.client, self.image_cache_dir, self.keeper_python, import_environment(env))
        self.importing, self._importing_since = ImportProgress(), asyncio.get_running_loop().time()
        try:
            path = await cache.image_for(self.allocation.job_id, self.allocation.node, launch.image, self.importing)
        finally:
            self.importing = None
        self.log.info("Kernel %s: its image %s is %s", self.kernel_id, launch.image, path)
        return replace(launch, image=path)

    async def _release(self, keep_row: bool = False) -> None:
        """Stop the step and cancel the allocation; never raises, so a failed start leaves no job behind.
        One release at a time: a shutdown during a start releases while the failed start does too.

        keep_row: the kernel lives on in Jupyter (dead, or restarting elsewhere): keep showing it."""
        async with self._releasing:
            await self._release_now(keep_row)

    async def _release_now(self, keep_row: bool) -> None:
        if not keep_row:
            _live.pop(self.kernel_id, None)
        try:
            await self._stop_step()
        finally:
            self.step = None
            allocation = self.allocation  # a shutdown may release it while a failed start does too
            if allocation:
                await allocation.cancel()
                if self.record is not None and not keep_row:
                    await asyncio.to_thread(self.record.remove)
                if not self.end_state or not keep_row:  # an ended job stays on show (id, state) until shutdown
                    allocation.forget()
                    if self.allocation is allocation:
                        self.allocation = None

    async def _stop_step(self) -> None:
        """The step ended; a named container it was unpacking removed, while the allocation is still held."""
        if self.step is None:
            return
        unpacking = half_made(self.step.phase) and not self.step.handshake
        await self.step.stop()
        if unpacking:
            await self._remove_half_made_container()

    async def _remove_half_made_container(self) -> None:
        """A start stopped while enroot unpacked its named container: remove what it wrote, in the allocation
        still held, or every later start of that container would fail (Pyxis reuses a half-made one)."""
        allocation, name = self.allocation, self._starting_container
        if allocation is None or not allocation.node or not name:
            return
        try:
            await self._remove_container(name)
            self.log.info("Kernel %s: removed the half-made container %s on %s", self.kernel_id, name, allocation.node)
        except SlurmError as error:
            self.log.error(
                "Kernel %s: the container %s on %s was left half made (its start was stopped while it was being "
                "created) and could not be removed: %s; remove it with `srun -w %s enroot remove -f %s%s`",
                self.kernel_id,
                name,
                allocation.node,
                error,
                allocation.node,
                ENROOT_NAME_PREFIX,
                name,
            )

    async def _remove_container(self, name: str) -> None:
        """The named container's files removed from the allocation's node (none there is no error); SlurmError."""
        assert self.allocation is not None
        argv = remove_container_argv(
            self.allocation.job_id, self.allocation.node, name, srun=self.client.command("srun")
        )
        (await self.client.run(argv, timeout=HALF_MADE_REMOVAL_TIMEOUT)).checked(tolerated=(NOTHING_MADE,))

    # --- encryption ---------------------------------------------------------------------

    def _encryption_policy(self) -> str:
        """The stricter of jupyter_client's policy (the kernel manager's) and the site's."""
        return stricter(getattr(self.parent, "transport_encryption", "disabled"), self.transport_encryption)

    def _curve_keys(self) -> tuple[bytes, bytes] | None:
        """The kernel's Curve key pair (public, secret) where the policy and kernelspec ask for one: the kernel
        manager's, kept across restarts as the session key is (clients keep their connection info), else new."""
        if not wants_curve(self._encryption_policy(), self.kernel_spec):
            return None
        public, secret = getattr(self.parent, "curve_publickey", None), getattr(self.parent, "curve_secretkey", None)
        if public and secret:
            return public, secret
        return zmq.curve_keypair()

    def _curve_environment(self, curve: tuple[bytes, bytes] | None) -> dict[str, str]:
        """The keys and the proxy for the bootstrap: in the step's environment only, never on a command line."""
        if curve is None:
            return {}
        return {
            "ASGARD_CURVE_PUBLICKEY": curve[0].decode(),
            "ASGARD_CURVE_SECRETKEY": curve[1].decode(),
            "ASGARD_ENCRYPTION": self._encryption_policy(),
            "ASGARD_CURVE_PROXY": CURVE_PROXY_SOURCE,
        }

    def _hold_curve_keys(self, curve: tuple[bytes, bytes] | None) -> None:
        """Give the kernel manager the keys the kernel runs with, or none for a kernel in the clear:
        jupyter_client's load_connection_info never drops keys of an earlier start."""
        if self.parent is not None and hasattr(self.parent, "curve_publickey"):
            self.parent.curve_publickey, self.parent.curve_secretkey = curve or (None, None)

    # --- derived settings ---------------------------------------------------------------

    def _kernel_name(self) -> str:
        return getattr(self.parent, "kernel_name", "") or "asgard"

    def container_workdir(self) -> str:
        """The kernel's working directory in its container (a terminal in the container starts there too)."""
        assert self.launch is not None
        return self.launch.workdir or self.launch_dir
