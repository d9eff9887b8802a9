"""A real, single-machine Slurm cluster with real Pyxis and enroot, for jupyter-asgard's tests and demos.

Everything the tests need from Asgard is here, for real: munged, slurmctld and
two slurmd compute nodes (``gpu01``, ``gpu02``), each in its own network, mount
and UTS namespace with its own address, hostname, name service and enroot
storage (so a named container lives on one node only, as on a cluster), two
emulated GPUs per node (GRES), a ``gpu`` and a ``debug`` partition, and NVIDIA's
Pyxis plugin with enroot, built from their release sources by
``dev/install-container-runtime``.  Images are real squashfs files
(``images.py``), and the same images are in a real registry on the controller's address
(``registry.py``: Debian's docker-registry with token authentication, as nvcr.io), which the nodes'
enroot pulls from over plain HTTP.

Without root (e.g. on Binder) the cluster runs in "loopback" mode instead: all
daemons run as the current user (SlurmUser/SlurmdUser), both slurmd listen on
127.0.0.1 on ports of their own, GPU "devices" are symlinks to /dev/null, both
nodes share one enroot storage, and enroot runs unprivileged (user namespaces).

The cluster keeps all of its state below one directory and records its
processes and network objects in ``state.json`` there, so a cluster started
by ``python -m tests.cluster up`` in one process can be stopped by
``python -m tests.cluster down`` in another.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template

from .images import TINY, ImageBuildError, ensure_images
from .registry import PULL_USER, REFERENCES, REGISTRY_COMMANDS, TINY_REFERENCE, Registry, ensure_registry_images

HERE = Path(__file__).resolve().parent
NODES = ("gpu01", "gpu02")
GPUS_PER_NODE = 2
NODE_GRES = f"gpu:h100:{GPUS_PER_NODE}"  # each node's GRES, as slurm.conf.template declares and Slurm shows it
REQUIRED_COMMANDS = (
    "munged",
    "slurmctld",
    "slurmd",
    "srun",
    "sinfo",
    "enroot",
    "unsquashfs",
    "ip",
    "nsenter",
    "unshare",
)
NAMESPACE_COMMANDS = ("ip", "nsenter", "unshare")
CONTAINER_COMMANDS = ("enroot", "unsquashfs")
NETWORKS = ("namespaces", "loopback")
LOOPBACK_SLOTS = range(60, 100)  # ports 17400..17992: never those of a root cluster (slots 1..59)
PYXIS_PLUGIN = Path("/usr/local/lib/slurm/spank_pyxis.so")
# Where enroot keeps the containers (dev/install-container-runtime configures enroot so): a loopback
# cluster's nodes share it; a namespaced cluster's nodes each have storage and settings of their own.
NODE_STORAGE = Path("/var/lib/enroot-node")
# dev/install-container-runtime's enroot settings for the test nodes (their paths below NODE_STORAGE). A node
# gets its own copy, naming its storage by its path on the host: enroot finds the containers a node runs
# (`enroot list -f`, which Pyxis's NAME:exec asks) by their root's path within its file system, which a
# bind mount of the storage to NODE_STORAGE would hide.
ENROOT_NODE_CONF = Path("/usr/local/etc/enroot/enroot.conf.d/50-asgard-test-nodes.conf")
# What the nodes' enroot settings add for the cluster's registry, which serves plain HTTP as a site's mirror may.
NODE_REGISTRY_CONF = """\
# The test registry serves plain HTTP. enroot 4 cannot allow that for one registry only: with
# ENROOT_ALLOW_HTTP it speaks plain HTTP to every registry (its docker.sh picks the scheme once, for all;
# a registry's redirect to https:// is still followed). The test nodes reach no registry but this one.
ENROOT_ALLOW_HTTP yes
"""
STORAGE_DIRS = ("runtime", "data", "cache")  # enroot's per-user paths live below these, for any user
# The registry's and its token server's ports, after slurmctld's and the slurmds' (16800 + 10 * slot + 0..2).
REGISTRY_PORT_OFFSET = 5
INSTALL_HINT = (
    "run ./dev/install (Slurm, munge, Pyxis and enroot built from their release sources, and the test registry)"
)
ROOT_HINT = " and run as root (the cluster creates network namespaces)"


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the test cluster; the message says how to fix it."""


@dataclass
class ClusterState:
    """What a running cluster consists of, persisted so another process can stop it."""

    root: str
    slot: int
    network: str = "namespaces"
    containers: bool = True
    pids: dict[str, int] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)


def check_prerequisites(network: str = "namespaces", containers: bool = True) -> None:
    """Raise ClusterUnavailable naming what is missing."""
    if network == "namespaces" and os.geteuid() != 0:
        raise ClusterUnavailable(f"the test cluster needs root: {INSTALL_HINT}{ROOT_HINT}")
    commands = [
        cmd
        for cmd in REQUIRED_COMMANDS
        if (network == "namespaces" or cmd not in NAMESPACE_COMMANDS) and (containers or cmd not in CONTAINER_COMMANDS)
    ]
    if network == "namespaces" and containers:
        commands += REGISTRY_COMMANDS
    missing = [cmd for cmd in commands if shutil.which(cmd) is None]
    if containers and not PYXIS_PLUGIN.exists():
        missing.append(str(PYXIS_PLUGIN))
    if missing:
        hint = INSTALL_HINT + (ROOT_HINT if network == "namespaces" else "")
        raise ClusterUnavailable(f"missing {', '.join(missing)}: {hint}")


def _run(*argv: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kwargs)


@contextmanager
def _slot_lock() -> Iterator[None]:
    with open(Path(tempfile.gettempdir()) / "asgard-cluster-slots.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _free_slot() -> int:
    """A slot number whose bridge, veths, namespaces and ports no other cluster uses (nor a crashed one
    left behind: a namespace kept alive by a stray process keeps its veth on the host)."""
    links = {name.split("@")[0].rstrip(":") for name in _run("ip", "-o", "link", "show").stdout.split()}
    for slot in range(1, 60):
        names = {f"asgbr{slot}", *(f"va{slot}{node}" for node in NODES)}
        if not names & links and not any(Path(f"/run/netns/asg{slot}-{node}").exists() for node in NODES):
            return slot
    raise ClusterUnavailable("no free cluster slot: stop old clusters with `python -m tests.cluster down`")


def _free_loopback_slot() -> int:
    """A slot whose slurmctld and slurmd ports are free on this machine."""
    for slot in LOOPBACK_SLOTS:
        try:
            for port in (16800 + 10 * slot + offset for offset in range(1 + len(NODES))):
                with socket.socket() as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Slurm's daemons do
                    probe.bind(("", port))
        except OSError:
            continue
        return slot
    raise ClusterUnavailable("no free loopback cluster ports: stop old clusters with `python -m tests.cluster down`")


class LocalCluster:
    """One test cluster: call start(), use env and the data paths, call stop()."""

    def __init__(self, root: Path | str | None = None, network: str | None = None, containers: bool = True) -> None:
        """network: "namespaces" (root only: a network namespace and address per node) or "loopback"
        (any user: both nodes on 127.0.0.1); default: namespaces as root, loopback otherwise.
        containers=False: no Pyxis (for a demo where enroot cannot run); jobs run on the nodes as they are."""
        network = network or ("namespaces" if os.geteuid() == 0 else "loopback")
        if network not in NETWORKS:
            raise ValueError(f"network must be one of {NETWORKS}, not {network!r}")
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="asgard-cluster-"))
        self.state = ClusterState(root=str(self.root), slot=0, network=network, containers=containers)

    @property
    def loopback(self) -> bool:
        return self.state.network == "loopback"

    # --- paths a test or demo uses -------------------------------------------------

    @property
    def slurm_conf(self) -> Path:
        return self.root / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """Variables that point Slurm's client commands at this cluster."""
        return {"SLURM_CONF": str(self.slurm_conf)}

    @property
    def images_dir(self) -> Path:
        """Stands in for Asgard's /enroot."""
        return self.root / "enroot"

    @property
    def netscratch(self) -> Path:
        """Stands in for Asgard's /netscratch."""
        return self.root / "netscratch"

    @property
    def datasets(self) -> Path:
        """Stands in for Asgard's /ds."""
        return self.root / "ds"

    def node_storage(self, node: str) -> Path:
        """The node's enroot storage (its containers), seen from the host."""
        return NODE_STORAGE if self.loopback else self.root / "nodes" / node / "enroot"

    @property
    def controller_addr(self) -> str:
        return "127.0.0.1" if self.loopback else f"10.213.{self.state.slot}.1"

    def node_addr(self, node: str) -> str:
        return "127.0.0.1" if self.loopback else f"10.213.{self.state.slot}.{11 + NODES.index(node)}"

    def node_namespace(self, node: str) -> str:
        """The name of the node's network namespace (`ip netns exec NAME ...`); none in loopback mode."""
        if self.loopback:
            raise ValueError("a loopback cluster's nodes have no network namespace of their own")
        return f"asg{self.state.slot}-{node}"

    def node_port(self, node: str) -> int:
        """The node's slurmd port: shared by all nodes (SlurmdPort) unless they share 127.0.0.1."""
        return 16801 + 10 * self.state.slot + (NODES.index(node) if self.loopback else 0)

    def pytorch_image(self) -> Path:
        """A Jupyter-ready image under the name Asgard gives its NGC PyTorch image."""
        return self.images_dir / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh"

    def bare_image(self) -> Path:
        """An image with Python but no ipykernel."""
        return self.images_dir / "debian_12.sqsh"

    def ipykernel7_image(self) -> Path:
        """An image with the bare image's Python and ipykernel 7.4 with its dependencies from PyPI."""
        return self.images_dir / "ipykernel-7.4.sqsh"

    # --- the registry ----------------------------------------------------------

    @property
    def has_registry(self) -> bool:
        """A cluster with containers and network namespaces runs one. A loopback cluster does not: its nodes
        read the host's own enroot settings, which allow no plain HTTP, and it runs as a user who cannot
        build the registry's images."""
        return self.state.containers and not self.loopback

    @property
    def registry(self) -> Registry:
        """docker-registry and its token server, on the controller's address, which the nodes reach."""
        if not self.has_registry:
            raise ValueError("only a cluster with containers and network namespaces runs a registry")
        port = 16800 + 10 * self.state.slot + REGISTRY_PORT_OFFSET
        return Registry(self.root / "registry", self.controller_addr, port, port + 1)

    @property
    def registry_address(self) -> str:
        """HOST:PORT of the registry."""
        return self.registry.address

    def registry_uri(self, image: str) -> str:
        """The enroot URI (docker://HOST:PORT#REPO:TAG) under which test image `image` (a recipe of
        images.py) is in the registry."""
        return self.registry.uri(TINY_REFERENCE if image == TINY else REFERENCES[image])

    def pytorch_registry_image(self) -> str:
        """pytorch_image() in the registry, as NGC's nvidia/pytorch:23.12-py3."""
        return self.registry_uri("python-ipykernel")

    def bare_registry_image(self) -> str:
        """bare_image() in the registry."""
        return self.registry_uri("python")

    def ipykernel7_registry_image(self) -> str:
        """ipykernel7_image() in the registry."""
        return self.registry_uri("python-ipykernel7")

    def tiny_registry_image(self) -> str:
        """The tiny image (a few files in three layers, no root filesystem: nothing runs in it) in the registry,
        for tests of the import itself."""
        return self.registry_uri(TINY)

    @property
    def registry_credentials(self) -> tuple[str, str]:
        """The user name and password of the tests' user, who may pull (made anew at each start)."""
        return PULL_USER, self.registry.password(PULL_USER)

    def write_enroot_credentials(self, config_dir: Path, password: str | None = None, owner: str | None = None) -> Path:
        """config_dir/.credentials, as enroot reads it from its ENROOT_CONFIG_PATH: the tests' user for the
        registry, with password instead of theirs where given (a wrong one); owner: the Unix user whose enroot
        reads it (a file only its owner can read, as enroot's users keep theirs)."""
        config_dir.mkdir(parents=True, exist_ok=True)
        credentials = config_dir / ".credentials"
        credentials.write_text(self.registry.netrc(password))
        credentials.chmod(0o600)
        if owner is not None:
            for path in (config_dir, credentials):
                shutil.chown(path, owner)
        return credentials

    @property
    def registry_log(self) -> Path:
        """docker-registry's log: a line for every request, with the address of the client that made it."""
        return self.root / "log" / "registry.log"

    def push_image(self, image: str, reference: str) -> None:
        """Push test image `image` as REPO:TAG `reference`. Over an existing tag (of REFERENCES), the tag moves
        to a new digest for the rest of the session: a test that does so pushes the original back."""
        self.registry.push(image, reference)

    def registry_digest(self, reference: str) -> str:
        """The manifest digest REPO:TAG `reference` has in the registry now (what a moved tag changes)."""
        return self.registry.digest(reference)

    def stop_registry(self) -> None:
        """Stop docker-registry (its token server, settings and storage stay): a registry that is down."""
        terminate(self.state.pids.pop("registry"))
        self.save_state()

    def start_registry(self, timeout: float = 30.0) -> None:
        """Start docker-registry, with its settings and storage as they were; once it answers."""
        self._spawn("registry", self.registry.registry_argv(), log=self.registry_log)
        _wait_for(self.registry.ready, timeout, "the registry did not answer", lambda: self.log("registry"))

    def log(self, name: str) -> str:
        """The tail of a daemon's log, for error messages."""
        path = self.root / "log" / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"

    # --- life cycle -------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> LocalCluster:
        """Bring the cluster up; on any failure tear down what was started."""
        check_prerequisites(self.state.network, self.state.containers)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            # Root clusters side by side must not pick the same slot; loopback ones probe their ports.
            with _slot_lock() if not self.loopback else nullcontext():
                self.state.slot = _free_loopback_slot() if self.loopback else _free_slot()
                if not self.loopback:
                    self._make_network()
            self._make_tree()
            self._write_configs()
            self._start_daemons()
            self._wait_for_nodes(timeout)
            if self.has_registry:
                _wait_for(self.registry.ready, timeout, "the registry did not answer", self._registry_logs)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every process, namespace and link of the cluster and delete its files."""
        for ns in self.state.namespaces:
            kill_namespace_processes(ns)
        if self.loopback:
            _kill_job_processes(self.root)
        for pid in reversed(list(self.state.pids.values())):
            terminate(pid)
        for ns in self.state.namespaces:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
        for link in self.state.links:
            subprocess.run(["ip", "link", "delete", link], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        self.state = ClusterState(
            root=str(self.root), slot=self.state.slot, network=self.state.network, containers=self.state.containers
        )

    def save_state(self) -> None:
        (self.root / "state.json").write_text(json.dumps(asdict(self.state)))

    @classmethod
    def attach(cls, root: Path | str) -> LocalCluster:
        """A handle on a cluster another process started at root."""
        cluster = cls(root)
        cluster.state = ClusterState(**json.loads((Path(root) / "state.json").read_text()))
        return cluster

    # --- steps of start() -------------------------------------------------------

    def _make_tree(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        for sub in (
            "etc",
            "log",
            "run",
            "state",
            "build",
            "dev",
            "munge",
            "workspace",
            *(f"state/slurmd-{node}" for node in NODES),
        ):
            (self.root / sub).mkdir(exist_ok=True)
        # As on a real cluster, every user of the machine reaches munged's socket (Slurm's clients authenticate
        # through it): other users' commands are theirs to Slurm, and refused or allowed as such. The key is 0400.
        (self.root / "munge").chmod(0o755)
        self.netscratch.mkdir(exist_ok=True)
        self.netscratch.chmod(0o1777)
        self._make_nodes()
        if self.state.containers:
            self._make_images()
        if self.has_registry:
            self._make_registry()
        self._make_data()
        for index in range(GPUS_PER_NODE):
            device = self.root / "dev" / f"nvidia{index}"
            if self.loopback and not device.is_symlink():
                device.symlink_to("/dev/null")  # mknod needs root; Slurm accepts the char device behind it
            elif not device.exists():
                os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))

    def _make_images(self) -> None:
        """Real squashfs images (built once per machine), under both of enroot's naming schemes."""
        try:
            built = ensure_images()
        except ImageBuildError as error:
            raise ClusterUnavailable(str(error)) from None
        self.images_dir.mkdir(exist_ok=True)
        links = {
            self.pytorch_image(): built["python-ipykernel"],
            self.images_dir / "nvidia+pytorch+23.12-py3.sqsh": built["python-ipykernel"],
            self.bare_image(): built["python"],
            self.ipykernel7_image(): built["python-ipykernel7"],
        }
        for link, target in links.items():
            if not link.is_symlink():
                link.symlink_to(target)

    def _make_registry(self) -> None:
        """The registry's settings, a new key and passwords, and its storage with the images (cached once per
        machine)."""
        try:
            self.registry.prepare(seeds=ensure_registry_images())
        except ImageBuildError as error:
            raise ClusterUnavailable(str(error)) from None

    def _registry_logs(self) -> str:
        return "\n".join(f"--- {name}:\n{self.log(name)}" for name in ("registry", "token-server"))

    def _make_nodes(self) -> None:
        """Each node's enroot storage, /etc/hosts and resolver configuration."""
        nodes = self.root / "nodes"
        nodes.mkdir(exist_ok=True)
        for node in NODES:
            (nodes / node).mkdir(exist_ok=True)
            storage = self.node_storage(node)
            for sub in STORAGE_DIRS:
                (storage / sub).mkdir(parents=True, exist_ok=True)
                if (storage / sub).stat().st_uid == os.geteuid():
                    (storage / sub).chmod(0o1777)
            (nodes / node / "hosts").write_text(self._hosts(node))
            paths = "".join(f"ENROOT_{sub.upper()}_PATH {storage / sub}/user-$(id -u)\n" for sub in STORAGE_DIRS)
            (nodes / node / "enroot.conf").write_text(paths + (NODE_REGISTRY_CONF if self.has_registry else ""))
            # No DNS server on the test network: the node's resolver must say so at once (a real node's
            # DNS answers), not wait 10 s for a server it cannot reach on every kernel start.
            (nodes / node / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")

    def _hosts(self, node: str) -> str:
        controller = socket.gethostname().split(".")[0]
        lines = [
            "127.0.0.1 localhost",
            "::1 localhost ip6-localhost ip6-loopback",
            f"{self.controller_addr} {controller}",
            *(f"{self.node_addr(n)} {n}" for n in NODES),
        ]
        return "\n".join(lines) + "\n"

    def _make_data(self) -> None:
        user_dir = self.netscratch / _user()
        user_dir.mkdir(exist_ok=True)
        (user_dir / "hello.txt").write_text("hello from netscratch\n")
        self.datasets.mkdir(exist_ok=True)
        (self.datasets / "iris.csv").write_text(
            "sepal_length,sepal_width,petal_length,petal_width,species\n"
            "5.1,3.5,1.4,0.2,setosa\n7.0,3.2,4.7,1.4,versicolor\n6.3,3.3,6.0,2.5,virginica\n"
        )

    def _make_network(self) -> None:
        """A bridge on the host (the controller's address) and one namespace per node."""
        slot = self.state.slot
        bridge = f"asgbr{slot}"
        _run("ip", "link", "add", bridge, "type", "bridge")
        self.state.links.append(bridge)
        self.save_state()
        _run("ip", "addr", "add", f"{self.controller_addr}/24", "dev", bridge)
        _run("ip", "link", "set", bridge, "up")
        for node in NODES:
            namespace, host_end = self.node_namespace(node), f"va{slot}{node}"
            _run("ip", "netns", "add", namespace)
            self.state.namespaces.append(namespace)
            self.save_state()
            _run("ip", "link", "add", host_end, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            _run("ip", "link", "set", host_end, "master", bridge, "up")
            _run("ip", "-n", namespace, "addr", "add", f"{self.node_addr(node)}/24", "dev", "eth0")
            _run("ip", "-n", namespace, "link", "set", "eth0", "up")
            _run("ip", "-n", namespace, "link", "set", "lo", "up")

    def _write_configs(self) -> None:
        slot = self.state.slot
        ports = {node: f" Port={self.node_port(node)}" if self.loopback else "" for node in NODES}
        node_lines = "\n".join(f"NodeName={node} NodeAddr={self.node_addr(node)}{ports[node]}" for node in NODES)
        values = {
            "root": self.root,
            "slurm_user": _user() if self.loopback else "root",
            "controller_host": socket.gethostname().split(".")[0],
            "controller_addr": self.controller_addr,
            "slurmctld_port": 16800 + 10 * slot,
            "slurmd_port": self.node_port(NODES[0]),
            "munge_socket": self.root / "munge" / "munge.socket",
            "node_lines": node_lines,
            "all_nodes": ",".join(NODES),
            "debug_node": NODES[-1],
            "node_gres": NODE_GRES,
        }
        template = Template((HERE / "slurm.conf.template").read_text())
        self.slurm_conf.write_text(template.substitute(values))
        gres = "\n".join(
            f"NodeName={node} Name=gpu Type=h100 File={self.root}/dev/nvidia[0-{GPUS_PER_NODE - 1}]" for node in NODES
        )
        (self.root / "etc" / "gres.conf").write_text(gres + "\n")
        # As on Asgard: container names are global to the node (Pyxis's default scope, spelled out).
        pyxis = f"required {PYXIS_PLUGIN} container_scope=global runtime_path={self.root / 'run' / 'pyxis'}\n"
        (self.root / "etc" / "plugstack.conf").write_text(pyxis if self.state.containers else "")

    def _start_daemons(self) -> None:
        munge_dir = self.root / "munge"
        (munge_dir / "munge.key").write_bytes(os.urandom(1024))
        (munge_dir / "munge.key").chmod(0o400)
        self._spawn(
            "munged",
            [
                "munged",
                "-F",
                "--force",
                f"--socket={munge_dir / 'munge.socket'}",
                f"--key-file={munge_dir / 'munge.key'}",
                f"--pid-file={munge_dir / 'munged.pid'}",
                f"--seed-file={munge_dir / 'munged.seed'}",
                f"--log-file={self.root / 'log' / 'munged.log'}",
            ],
        )
        _wait_for(lambda: (munge_dir / "munge.socket").exists(), 10, "munged did not start", lambda: self.log("munged"))
        self._spawn("slurmctld", ["slurmctld", "-D", "-c", "-f", str(self.slurm_conf)])
        for node in NODES:
            self.start_slurmd(node)
        if self.has_registry:
            self._spawn("token-server", self.registry.token_server_argv(), log=self.root / "log" / "token-server.log")
            self._spawn("registry", self.registry.registry_argv(), log=self.registry_log)

    def start_slurmd(self, node: str) -> None:
        """node's slurmd, in the node's namespaces (also for a node brought back after a fault)."""
        slurmd = ["slurmd", "-D", "-N", node, "-f", str(self.slurm_conf)]
        self._spawn(f"slurmd-{node}", slurmd if self.loopback else self._node_namespaces(node, slurmd))

    def _node_namespaces(self, node: str, argv: list[str]) -> list[str]:
        """argv in the node's network namespace and in mount and UTS namespaces of its own: its hostname,
        /etc/hosts, resolver and enroot storage (its enroot settings name it), which containers started on
        it see too."""
        files = self.root / "nodes" / node
        setup = (
            'mount --bind "$1" "$2" && mount --bind "$3" /etc/hosts && mount --bind "$4" /etc/resolv.conf '
            '&& hostname "$5" && shift 5 && exec "$@"'
        )
        return [
            "nsenter",
            f"--net=/run/netns/{self.node_namespace(node)}",
            "unshare",
            "--mount",
            "--uts",
            "--propagation",
            "private",
            "sh",
            "-c",
            setup,
            "node-setup",
            str(files / "enroot.conf"),
            str(ENROOT_NODE_CONF),
            str(files / "hosts"),
            str(files / "resolv.conf"),
            node,
            *argv,
        ]

    def _spawn(self, name: str, argv: list[str], log: Path | None = None) -> None:
        """argv as the cluster's daemon name, its output into log (default: log/NAME.stdout)."""
        output = open(log or self.root / "log" / f"{name}.stdout", "ab")
        process = subprocess.Popen(
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **self.env},
        )
        output.close()
        self.state.pids[name] = process.pid
        self.save_state()

    def _wait_for_nodes(self, timeout: float) -> None:
        def idle() -> bool:
            result = subprocess.run(
                ["sinfo", "-h", "-N", "-p", "gpu", "-o", "%N %T"],
                capture_output=True,
                text=True,
                env={**os.environ, **self.env},
            )
            states = dict(line.split() for line in result.stdout.splitlines() if line.strip())
            return all(states.get(node) == "idle" for node in NODES)

        def logs() -> str:
            daemons = ("slurmctld", *(f"slurmd-{n}" for n in NODES))
            return "\n".join(f"--- {name}:\n{self.log(name)}" for name in daemons)

        _wait_for(idle, timeout, "nodes did not become idle", logs)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _wait_for(predicate, timeout: float, what: str, logs) -> None:
    """Poll predicate; on timeout raise with the daemons' logs (a callable, read only then)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise ClusterUnavailable(f"{what} within {timeout:.0f}s; logs:\n{logs()}")


def kill_namespace_processes(namespace: str) -> None:
    """slurmstepd and the tasks it starts live in the node's namespace, not under our pids."""
    for _ in range(50):
        result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True)
        pids = [int(pid) for pid in result.stdout.split()]
        if not pids:
            return
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.1)


def _kill_job_processes(root: Path) -> None:
    """Without namespaces, a loopback cluster's slurmstepd and job tasks are found by their environment:
    slurmstepd inherits slurmd's SLURM_CONF, tasks have a SLURM_JOB_ID besides it."""
    conf = f"SLURM_CONF={root / 'etc' / 'slurm.conf'}".encode()
    for _ in range(50):
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                environ = (proc / "environ").read_bytes().split(b"\0")
                comm = (proc / "comm").read_text().strip()
            except OSError:
                continue
            if conf in environ and (comm == "slurmstepd" or any(v.startswith(b"SLURM_JOB_ID=") for v in environ)):
                pids.append(int(proc.name))
        if not pids:
            return
        for pid in pids:
            _signal(pid, signal.SIGKILL)
        time.sleep(0.1)


def terminate(pid: int) -> None:
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive(pid):
        time.sleep(0.05)
    _signal(pid, signal.SIGKILL)
    _reap(pid)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def alive(pid: int) -> bool:
    _reap(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in _status(pid)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return "zombie"


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def leftovers(cluster_root: Path, namespaces: list[str], links: list[str], pids: list[int]) -> list[str]:
    """What of a stopped cluster is still there: namespaces, links, processes, its directory."""
    found = [f"namespace {ns}" for ns in namespaces if Path(f"/run/netns/{ns}").exists()]
    links_now = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [f"link {link}" for link in links if f" {link}:" in links_now or f" {link}@" in links_now]
    found += [f"pid {pid}" for pid in pids if alive(pid)]
    processes = subprocess.run(["ps", "-eo", "pid,stat,args"], capture_output=True, text=True).stdout.splitlines()
    found += [line for line in processes if str(cluster_root) in line and " Z" not in line]
    if cluster_root.exists():
        found.append(f"directory {cluster_root}")
    return found
