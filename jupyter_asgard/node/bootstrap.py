"""Runs first inside the container, with the image's own python3 (3.8+, stdlib only).

It is sent as ``python3 -c <this source> KERNEL_ARGV...`` so that nothing has to
be installed in the image and no filesystem has to be shared with the Jupyter
server.  It picks the kernel's ports on the compute node itself (new ones on
every start: jupyter_client's clients follow a kernel to its new ports), writes
the connection file where only this user can read it, runs the kernel, and
once the kernel listens tells the provisioner the address, the ports and how
the kernel is encrypted in one line on stdout (srun relays it), with this
start's nonce.  The session key, the CurveZMQ keys and the nonce arrive in the
environment only and are removed from the kernel's own environment.

With CurveZMQ keys, curve_proxy.py first says whether the kernel encrypts by
itself ("curve": the keys go into the connection file) or not ("curve-proxy":
the kernel binds on ipc in this private directory and the proxy listens on the
node's ports in its place).
"""

from __future__ import annotations  # annotations stay unevaluated text: Python 3.8 cannot evaluate list[str]

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

TYPE_CHECKING = False
if TYPE_CHECKING:  # for mypy only: at run time the bootstrap imports nothing it does not use
    from collections.abc import Callable, Iterator, Mapping
    from typing import Any, NoReturn

HANDSHAKE = "ASGARD-HANDSHAKE "
HANDSHAKE_NONCE = "ASGARD_HANDSHAKE_NONCE"  # this start's secret: the provisioner takes only a handshake with it
FAILURE = "ASGARD-ERROR "
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")
ENCRYPTION_VARIABLES = ("ASGARD_CURVE_PUBLICKEY", "ASGARD_CURVE_SECRETKEY")
NATIVE_IPYKERNEL = (7, 4)  # ipykernel binds as a Curve server when the connection file carries keys
IMPORT_PATH = "import json, sys; print(json.dumps(sys.path))"
PROXY_FAILURE_PATIENCE = 5.0  # seconds for the kernel to end by itself after its proxy failed (its error explains)
BIND_PATIENCE = 60.0  # seconds to wait for the kernel to listen before leaving the verdict to the provisioner
KILL_NOW = signal.SIGUSR2  # the provisioner's kill(): the kernel dies at once, the bootstrap cleans up and ends
KILL_AFTER = 2.0  # seconds a kernel has to end after SIGTERM; the provisioner waits longer (kernel_step.py)
DEBUGGER_OFF = (
    "jupyter-asgard kernels have no debugger: debugpy would listen on a port of the compute node that every "
    "user of the node can reach, and it lets whoever connects run code in your kernel. Debug with pdb "
    "(%debug, breakpoint()) instead."
)


def fail(message: str, code: int = 1) -> NoReturn:
    print(FAILURE + message, flush=True)
    sys.exit(code)


def reserve_ports(ip: str) -> dict[str, int]:
    """Pick five free ports, new ones on every start: a restart that asked for the old ones could find them
    taken by another user of the node, who can see which they were. Hold them all until chosen."""
    held: list[socket.socket] = []
    ports: dict[str, int] = {}
    for name in PORT_NAMES:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((ip, 0))
        held.append(sock)
        ports[name] = sock.getsockname()[1]
    for sock in held:
        sock.close()
    return ports


def write_connection_file(directory: str, info: dict[str, Any]) -> str:
    path = os.path.join(directory, "kernel.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(info, handle)
    return path


def kernel_python(argv: list[str]) -> str:
    """The kernel's own python where argv starts one (its pyzmq and ipykernel count), else the bootstrap's."""
    name = os.path.basename(argv[0])
    if name == "python" or (name.startswith("python") and name[6:].replace(".", "").isdigit()):
        return shutil.which(argv[0]) or sys.executable
    return sys.executable


def runs_ipykernel(argv: list[str]) -> bool:
    return any(argv[i] == "-m" and argv[i + 1].startswith("ipykernel") for i in range(len(argv) - 1))


def import_path(python: str) -> list[str]:
    """Where python imports from. For this very python (the usual case: both are the image's python3) from
    site's own rules, at no cost; another one is asked (a python's start, some 20 ms)."""
    if os.path.realpath(python) == os.path.realpath(sys.executable):
        import site

        extra = [entry for entry in os.environ.get("PYTHONPATH", "").split(os.pathsep) if entry]
        return [*extra, site.getusersitepackages(), *site.getsitepackages()]
    try:
        found = subprocess.run([python, "-c", IMPORT_PATH], stdout=subprocess.PIPE, cwd="/", timeout=30)
        return [str(entry) for entry in json.loads(found.stdout or b"[]")]
    except (OSError, ValueError, subprocess.SubprocessError):
        return []


def ipykernel_version(path: list[str]) -> tuple[int, ...]:
    """The version of the first ipykernel on the import path, from its metadata (importing it takes a second)."""
    for entry in path:
        try:
            names = os.listdir(entry or "/")
        except OSError:
            continue
        for name in names:
            stem, _, suffix = name.rpartition(".")
            package, _, version = stem.partition("-")
            if package.lower() == "ipykernel" and suffix in ("dist-info", "egg-info"):
                return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())
    return ()


def start_encryption(argv: list[str], ip: str, ports: dict[str, int], ipc: str) -> tuple[str, Any]:
    """How the kernel is to be encrypted ("curve", "curve-proxy" or "none") and the proxy process, if any,
    which goes on starting beside the kernel (proxy_ready waits for it).

    Where the image cannot encrypt, "auto" starts the kernel unencrypted and "required" fails the start."""
    if not all(os.environ.get(name) for name in ENCRYPTION_VARIABLES):
        return "none", None
    python = kernel_python(argv)
    if runs_ipykernel(argv) and ipykernel_version(import_path(python)) >= NATIVE_IPYKERNEL:
        return "curve", None
    helper = subprocess.Popen(
        [python, "-c", os.environ.get("ASGARD_CURVE_PROXY", ""), json.dumps(dict(ip=ip, ports=ports, ipc=ipc))],
        stdout=subprocess.PIPE,
        cwd="/",  # with -c the working directory is on sys.path: a notebook's own zmq.py must not count
        universal_newlines=True,
    )
    assert helper.stdout is not None
    word = helper.stdout.readline().strip()
    if word == "proxy":
        return "curve-proxy", helper
    helper.wait()
    why = "its python ({}) could not run the encrypting proxy{}".format(python, ": " + word if word else "")
    if os.environ.get("ASGARD_ENCRYPTION") == "required":
        fail("this site requires encrypted kernels, but the image cannot encrypt: {}".format(why))
    print("jupyter-asgard: the kernel is not encrypted: {}".format(why), file=sys.stderr)
    return "none", None


def proxy_ready(proxy: Any, child: subprocess.Popen[Any], handshake: dict[str, Any]) -> str:
    """Until the proxy listens: "" once it does (handshake says whether it encrypts), else what went wrong, or
    "ended" where the kernel ended meanwhile: its own error says more (an image without pyzmq has no
    ipykernel that runs either)."""
    word = proxy.stdout.readline().strip()
    if word.startswith("ready-plain "):
        print("jupyter-asgard: the kernel is not encrypted: {}".format(word[len("ready-plain ") :]), file=sys.stderr)
        handshake["encryption"] = "none"
        return ""
    if word == "ready":
        return ""
    try:
        child.wait(timeout=PROXY_FAILURE_PATIENCE)
        return "ended"
    except subprocess.TimeoutExpired:
        return word[len(FAILURE) :] if word.startswith(FAILURE) else "the kernel's encrypting proxy ended"


def connection_info(mode: str, ip: str, ports: dict[str, int], ipc: str) -> dict[str, Any]:
    """What the kernel binds: the node's ports (with the Curve keys for a kernel that encrypts itself), or
    ipc sockets in the private directory, numbered 1 to 5, behind the proxy."""
    if mode == "curve-proxy":
        return dict({name: number for number, name in enumerate(PORT_NAMES, start=1)}, transport="ipc", ip=ipc)
    info: dict[str, Any] = dict(ports, transport="tcp", ip=ip)
    if mode == "curve":
        info.update(
            curve_publickey=os.environ[ENCRYPTION_VARIABLES[0]], curve_secretkey=os.environ[ENCRYPTION_VARIABLES[1]]
        )
    return info


def start_recorder(argv: list[str], info: dict[str, Any], mode: str) -> Any:
    """A detachable kernel's IOPub recorder (recorder.py, on the step's stdout for the keeper), or None."""
    source = os.environ.get("ASGARD_RECORDER")
    if not source:
        return None
    if info["transport"] == "ipc":
        url = "ipc://{}-{}".format(info["ip"], info["iopub_port"])
    else:
        url = "tcp://{}:{}".format(info["ip"], info["iopub_port"])
    config = json.dumps(dict(url=url, curve=mode == "curve"))
    return subprocess.Popen([kernel_python(argv), "-c", source, config], cwd="/")


def kernel_environment(python_path: str) -> dict[str, str]:
    """The step's environment without the bootstrap's secrets, python_path first on PYTHONPATH."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("ASGARD_")}
    env["PYTHONPATH"] = os.pathsep.join(entry for entry in (python_path, env.get("PYTHONPATH", "")) if entry)
    return env


def without_debugger(directory: str) -> str:
    """A directory for the kernel's PYTHONPATH whose debugpy refuses to load, so that ipykernel offers no
    debugger: debugpy's adapter listens on 127.0.0.1 of the node, which every user of the node reaches
    (containers share its network), and admits any client, who could then run code in the kernel."""
    package = os.path.join(directory, "python", "debugpy")
    os.makedirs(package)
    with open(os.path.join(package, "__init__.py"), "w") as handle:
        handle.write("raise ImportError({!r})\n".format(DEBUGGER_OFF))
    return os.path.dirname(package)


class Signals:
    """What the step's signals ask of the kernel, from the bootstrap's first moment on: one that comes before
    the kernel runs (the provisioner may kill a kernel whose connection file it has just seen written) is
    carried out as soon as it does, and never ends the bootstrap before it has removed that file.

    Slurm signals every process of the step (scancel --signal), so the kernel gets SIGINT directly; the
    bootstrap must only survive it. On SIGTERM the kernel gets KILL_AFTER seconds to end before it is
    killed, so the bootstrap itself still ends before Slurm's KILL and removes the connection file. On
    KILL_NOW (the provisioner's kill) the kernel is killed at once, with no grace, and the bootstrap still
    removes the file and ends.
    """

    def __init__(self) -> None:
        self.child: subprocess.Popen[Any] | None = None
        self.stopping: list[float] = []
        self.killed = False
        signal.signal(signal.SIGINT, lambda signum, frame: None)
        signal.signal(KILL_NOW, lambda signum, frame: self.kill_now())
        signal.signal(signal.SIGTERM, lambda signum, frame: self.stop())
        signal.signal(signal.SIGHUP, lambda signum, frame: self.stop())

    def started(self, child: subprocess.Popen[Any]) -> None:
        self.child = child
        if self.killed:
            self.kill_now()
        elif self.stopping:
            self.stop()

    def stop(self) -> None:
        self.stopping.append(time.monotonic())
        for signum in (signal.SIGTERM, signal.SIGCONT):  # CONT: a stopped kernel must see the TERM too
            self._send(signum)

    def kill_now(self) -> None:
        self.killed = True
        self._send(signal.SIGKILL)

    def overdue(self) -> bool:
        """Whether the kernel has had its KILL_AFTER seconds since the first TERM."""
        return bool(self.stopping) and time.monotonic() - self.stopping[0] > KILL_AFTER

    def _send(self, signum: int) -> None:
        if self.child is not None:
            try:
                self.child.send_signal(signum)
            except OSError:
                pass


def run_kernel(
    argv: list[str], env: dict[str, str], signals: Signals, ready: Callable[[Any], str], announce: Callable[[], None]
) -> int:
    """Run the kernel as a child so its connection file can be removed when it ends; announce it once it
    listens on its ports."""
    child = subprocess.Popen(argv, env=env)
    signals.started(child)
    verdict = ready(child)
    if verdict == "ready":
        announce()
    elif verdict != "ended":
        print(FAILURE + verdict, flush=True)
        signals.stop()
    while True:
        try:
            return child.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            if signals.overdue():
                child.kill()
        except InterruptedError:
            continue


def listeners() -> dict[int, str] | None:
    """{port: socket inode} of this node's listening TCP sockets; None where /proc cannot tell."""
    found: dict[int, str] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[3] == "0A":  # TCP_LISTEN
                found[int(fields[1].rsplit(":", 1)[1], 16)] = fields[9]
    return found or None


def socket_inodes(root: int) -> set[str]:
    """Inodes of the sockets held by process root and every process below it (a kernel may be a wrapper)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/{}/stat".format(entry)) as handle:
                parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    family, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, its_parent in parents.items() if its_parent == parent and pid not in family]
        family.update(children)
        frontier.extend(children)
    inodes: set[str] = set()
    for pid in family:
        for link in fd_links(pid):
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    return inodes


def fd_links(pid: int) -> Iterator[str]:
    """What process pid's descriptors point to; one closed while we look is skipped, not the process."""
    try:
        fds = os.listdir("/proc/{}/fd".format(pid))
    except OSError:
        return
    for fd in fds:
        try:
            yield os.readlink("/proc/{}/fd/{}".format(pid, fd))
        except OSError:
            continue


def port_state(pid: int, ports: Mapping[str, int]) -> tuple[set[int], set[int]]:
    """The kernel's ports nobody listens on yet, and those another process listens on.

    Ports are chosen before the kernel binds them, so a kernel starting beside
    this one on the node may take one first; it stays taken, and the kernel
    may live on without it (ipykernel's heartbeat thread just dies).  Where
    /proc cannot tell, every port counts as the kernel's.
    """
    listening = listeners()
    if listening is None:
        return set(), set()
    missing = {port for port in ports.values() if port not in listening}
    ours = socket_inodes(pid) if len(missing) < len(ports) else set()
    return missing, {port for port in ports.values() if port in listening and listening[port] not in ours}


def await_ipc(child: subprocess.Popen[Any], paths: list[str]) -> str:
    """Until the kernel has bound its ipc sockets (behind the proxy): "ready", or "ended" if it ended first."""
    deadline = time.monotonic() + BIND_PATIENCE
    while child.poll() is None:
        if all(os.path.exists(path) for path in paths) or time.monotonic() > deadline:
            return "ready"
        time.sleep(0.02)
    return "ended"


def await_ports(child: subprocess.Popen[Any], ports: Mapping[str, int]) -> str:
    """Until the kernel listens on all its ports: "ready"; "ended" if it ended first, else which ports
    another process took, in zmq's words (both happen when a neighbour took a port: the provisioner starts
    again)."""
    deadline = time.monotonic() + BIND_PATIENCE
    while child.poll() is None:
        missing, foreign = port_state(child.pid, ports)
        if foreign:
            return "another process took port {} before the kernel could listen on it: Address already in use".format(
                ", ".join(map(str, sorted(foreign)))
            )
        if not missing or time.monotonic() > deadline:
            return "ready"
        time.sleep(0.05)
    return "ended"


def node_address() -> str:
    """This node's address on the route back to the host srun runs on, where the Jupyter server is.

    Slurm tells the step that host's address; the local end of a (connectionless)
    UDP socket aimed at it is the interface the server can reach, also on nodes
    with several networks.
    """
    peer = os.environ.get("SLURM_LAUNCH_NODE_IPADDR") or os.environ.get("SLURM_SRUN_COMM_HOST")
    try:
        if not peer:
            return socket.gethostbyname(socket.gethostname())
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            probe.connect((peer, 9))
            address: str = probe.getsockname()[0]
            return address
        finally:
            probe.close()
    except OSError as error:
        fail("cannot find this node's address towards {}: {}".format(peer or "the network", error))


def main() -> None:
    signals = Signals()
    key = os.environ.get("ASGARD_KERNEL_KEY")
    if not key:
        fail("no session key in the environment (ASGARD_KERNEL_KEY); the kernel must be started by jupyter-asgard")
    ip = node_address()
    argv = sys.argv[1:]
    if not argv or shutil.which(argv[0]) is None:
        fail(
            "{!r} was not found in the container (PATH={}): the image needs it to run the kernel".format(
                argv[0] if argv else "", os.environ.get("PATH", "")
            ),
            127,
        )
    ports = reserve_ports(ip)
    directory = tempfile.mkdtemp(prefix="asgard-kernel-")  # 0700: the connection file and the ipc sockets
    ipc = os.path.join(directory, "kernel")
    proxy = recorder = None
    try:
        mode, proxy = start_encryption(argv, ip, ports, ipc)
        info = dict(
            connection_info(mode, ip, ports, ipc),
            key=key,
            signature_scheme=os.environ.get("ASGARD_SIGNATURE_SCHEME", "hmac-sha256"),
            kernel_name=os.environ.get("ASGARD_KERNEL_NAME", ""),
        )
        path = write_connection_file(directory, info)
        argv = [arg.replace("{connection_file}", path) for arg in argv]
        handshake = dict(
            ports,
            ip=ip,
            encryption=mode,
            node=os.environ.get("SLURMD_NODENAME", ""),
            step=os.environ.get("SLURM_STEP_ID", ""),
            pid=os.getpid(),
            nonce=os.environ.get(HANDSHAKE_NONCE, ""),
        )
        ipc_paths = ["{}-{}".format(ipc, info[name]) for name in PORT_NAMES]

        def ready(child: subprocess.Popen[Any]) -> str:
            if proxy is None:
                return await_ports(child, ports)
            return proxy_ready(proxy, child, handshake) or await_ipc(child, ipc_paths)

        def announce() -> None:
            nonlocal recorder
            recorder = start_recorder(argv, info, mode)
            print(HANDSHAKE + json.dumps(handshake), flush=True)

        code = run_kernel(argv, kernel_environment(without_debugger(directory)), signals, ready, announce)
    finally:
        for helper in (proxy, recorder):
            if helper is not None:
                helper.kill()
                helper.wait()
        shutil.rmtree(directory, ignore_errors=True)
    sys.exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    main()
