"""Runs first inside the container, with the image's own python3 (3.8+, stdlib only).

It is sent as ``python3 -c <this source> KERNEL_ARGV...`` so that nothing has to
be installed in the image and no filesystem has to be shared with the Jupyter
server.  It binds the kernel's ports on the compute node itself (preferring the
ports of the previous run, so clients stay connected through a restart), writes
the connection file where only this user can read it, tells the provisioner
the address and ports in one line on stdout (srun relays it), and runs the
kernel.  The session key arrives in the environment only and is removed from
the kernel's own environment.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile

HANDSHAKE = "ASGARD-HANDSHAKE "
FAILURE = "ASGARD-ERROR "
PORT_NAMES = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def fail(message, code=1):
    print(FAILURE + message, flush=True)
    sys.exit(code)


def reserve_ports(ip, preferred):
    """Pick five free ports, the preferred ones where still free; hold them all until chosen."""
    held, ports = [], {}
    for name in PORT_NAMES:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((ip, int(preferred.get(name, 0))))
        except OSError:
            sock.bind((ip, 0))
        held.append(sock)
        ports[name] = sock.getsockname()[1]
    for sock in held:
        sock.close()
    return ports


def write_connection_file(info):
    directory = tempfile.mkdtemp(prefix="asgard-kernel-")
    path = os.path.join(directory, "kernel.json")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(info, handle)
    return directory, path


def kernel_environment():
    return {name: value for name, value in os.environ.items() if not name.startswith("ASGARD_")}


def run_kernel(argv, env):
    """Run the kernel as a child so its connection file can be removed when it ends."""
    child = subprocess.Popen(argv, env=env)

    def forward(signum, frame):
        child.send_signal(signum)

    # Slurm signals every process of the step (scancel --signal), so the kernel
    # gets SIGINT directly; the bootstrap must only survive it.
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGHUP, forward)
    while True:
        try:
            return child.wait()
        except InterruptedError:
            continue


def node_address():
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
            return probe.getsockname()[0]
        finally:
            probe.close()
    except OSError as error:
        fail("cannot find this node's address towards {}: {}".format(peer or "the network", error))


def main():
    key = os.environ.get("ASGARD_KERNEL_KEY")
    if not key:
        fail("no session key in the environment (ASGARD_KERNEL_KEY); the kernel must be started by jupyter-asgard")
    ip = node_address()
    argv = sys.argv[1:]
    if not argv or shutil.which(argv[0]) is None:
        fail("{!r} was not found in the container (PATH={}): the image needs it to run the kernel".format(
            argv[0] if argv else "", os.environ.get("PATH", "")), 127)
    ports = reserve_ports(ip, json.loads(os.environ.get("ASGARD_KERNEL_PORTS") or "{}"))
    info = dict(ports, ip=ip, transport="tcp", key=key,
                signature_scheme=os.environ.get("ASGARD_SIGNATURE_SCHEME", "hmac-sha256"),
                kernel_name=os.environ.get("ASGARD_KERNEL_NAME", ""))
    directory, path = write_connection_file(info)
    argv = [arg.replace("{connection_file}", path) for arg in argv]
    print(HANDSHAKE + json.dumps(dict(ports, ip=ip, node=os.environ.get("SLURMD_NODENAME", ""),
                                      step=os.environ.get("SLURM_STEP_ID", ""), pid=os.getpid())), flush=True)
    try:
        code = run_kernel(argv, kernel_environment())
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    sys.exit(128 - code if code < 0 else code)


if __name__ == "__main__":
    main()
