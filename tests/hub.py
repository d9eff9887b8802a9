"""A real JupyterHub in front of the test cluster, run as a login node runs one: as root, with the local-process
spawner, JupyterHub's dummy authenticator (any password), named servers, and npm's configurable-http-proxy
(dev/install puts it at HUB_PROXY). Its users are throwaway Unix users (tests/unix_users.py); the server it spawns
for each runs JupyterLab with jupyter_asgard through `jupyterhub-singleuser`, configured as the session's own
servers are, and starts Asgard kernels on the test cluster's GPU nodes as that user.

The hub runs in the mount namespace that gives the first user a way to this Python and checkout: the servers it
spawns see the machine as the users' own commands do and run this Python and checkout too, with no environment
of their own to install.

The hub's configuration is the README's (its `jupyterhub_config.py` for a login node, and what the users'
servers add to the site's configuration), followed by what only a test sets: addresses, the test cluster's
environment, the dummy authenticator, the tests' roles and services.

A test reaches the hub's REST API with the token of a service the hub knows (SERVICE: admin of users, servers and
tokens), and a user's server through the hub's proxy as a program does, with a token the hub made for that user.
Who may do what on whose server is the hub's roles' say, through the custom scopes that
jupyter_asgard.server.hub_authorizer reads in every single-user server: each user may do everything on their own
servers; the grantees (hub users without a Unix account, who never start a server) get access to the first
user's servers with the one action they are granted there.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from jupyter_asgard.server.hub_authorizer import SCOPE_PREFIX
from tests.cluster import LocalCluster
from tests.cluster.cluster import alive
from tests.kernels import cluster_site
from tests.readme_blocks import readme_python
from tests.server import ServerClient, free_port, lab_config
from tests.unix_users import REPO, UnixUser, throwaway_user
from tests.waiting import wait_for

HUB_PROXY = Path("/opt/jupyter-asgard/hub-proxy/node_modules/.bin/configurable-http-proxy")  # as dev/install puts it
SERVICE = "asgard-tests"
CULLER = "idle-culler"  # the README's name for jupyterhub-idle-culler's service
# Seconds between the reports of a server's activity to the hub, and between the hub's looks at its proxy's: the
# hub knows when each server was last used within them (JupyterHub's defaults, 300, would have it stale for minutes).
ACTIVITY_INTERVAL = 5
HUB_CONFIG = "# /etc/jupyterhub/jupyterhub_config.py on a login node"  # the README's blocks, by their first lines
SERVER_CONFIG = "# /etc/jupyter/jupyter_server_config.py: kernels of servers the hub stops"


class HubUserServer(ServerClient):
    """A user's server as a program reaches it through the hub's proxy, with token (the owner's, or another
    hub user's); name: one of the owner's named servers, "" for the default one."""

    def __init__(self, hub: Hub, owner: str, token: str, name: str = "") -> None:
        self.hub, self.owner, self.token, self.name = hub, owner, token, name

    @property
    def url(self) -> str:
        return f"{self.hub.url}/user/{self.owner}" + (f"/{self.name}" if self.name else "")

    def log(self) -> str:
        """The hub's log, which the servers it spawns write to as well."""
        return self.hub.log()


class Hub(ServerClient):
    """The hub, its proxy and the servers it spawns for users; as a ServerClient, its proxy's address with the
    service's token (its REST API is below /hub/api). grants: hub user -> the action (read, write or execute)
    they are granted on the first user's servers."""

    def __init__(
        self, cluster: LocalCluster, kernels_dir: Path, users: list[UnixUser], grants: dict[str, str], port: int = 0
    ):
        self.cluster, self.kernels_dir, self.users, self.grants = cluster, kernels_dir, users, grants
        # What the users' servers read (their configuration and kernelspecs): open to them, unlike pytest's
        # temporary directories. The hub's own state (its database, cookie secret and tokens) is not.
        self.directory = Path(tempfile.mkdtemp(prefix="asgard-hub-"))
        self.directory.chmod(0o755)
        self.state = self.directory / "state"
        self.state.mkdir(mode=0o700)
        self.port, self.hub_port, self.proxy_api_port = port or free_port(), free_port(), free_port()
        self.token = secrets.token_hex(32)
        self.culler_token = secrets.token_hex(32)
        self.tokens: dict[str, str] = {}  # hub user -> token_of(user)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def owner(self) -> UnixUser:
        """The user whose servers the grantees are granted access to."""
        return self.users[0]

    def log(self) -> str:
        path = self.directory / "hub.log"
        return path.read_text(errors="replace")[-8000:] if path.exists() else ""

    def server_environment(self) -> dict[str, str]:
        """What a single-user server needs besides what the spawner sets (HOME, USER, JUPYTERHUB_*): the test
        cluster's Slurm, the session's kernelspecs, the site's configuration, and this checkout's code."""
        return {
            **self.cluster.env,
            "JUPYTER_PATH": str(self.directory / "jupyter"),
            "JUPYTER_CONFIG_PATH": str(self.directory / "config"),
            "PYTHONPATH": str(REPO),
            "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "JUPYTERHUB_ACTIVITY_INTERVAL": str(ACTIVITY_INTERVAL),
        }

    def roles(self) -> str:
        """The README's culler role, and the grants on the first user's servers (instead of the README's example)."""
        owner = self.owner.name
        service = {"name": SERVICE, "services": [SERVICE], "scopes": ["admin:users", "admin:servers", "tokens"]}
        granted = [
            {
                "name": f"{action}-{owner}-{grantee}",
                "users": [grantee],
                "scopes": [f"access:servers!user={owner}", f"{SCOPE_PREFIX}:{action}:*!user={owner}"],
            }
            for grantee, action in self.grants.items()
        ]
        return f"[role for role in c.JupyterHub.load_roles if role['name'] == {CULLER!r}] + {[service, *granted]!r}"

    def hub_config(self) -> str:
        """The README's jupyterhub_config.py, then what a test sets."""
        settings: dict[str, Any] = {
            "JupyterHub.ip": "127.0.0.1",
            "JupyterHub.port": self.port,
            "JupyterHub.hub_ip": "127.0.0.1",
            "JupyterHub.hub_port": self.hub_port,
            "JupyterHub.db_url": f"sqlite:///{self.state / 'jupyterhub.sqlite'}",
            "JupyterHub.cookie_secret_file": str(self.state / "cookie_secret"),
            "JupyterHub.authenticator_class": "dummy",
            "Authenticator.allow_all": True,
            # The culler is a service the hub knows but does not start: a test runs it (culling) when it wants
            # servers culled, and no other test's server is stopped under it.
            "JupyterHub.services": [
                {"name": SERVICE, "api_token": self.token},
                {"name": CULLER, "api_token": self.culler_token},
            ],
            "JupyterHub.last_activity_interval": ACTIVITY_INTERVAL,
            "ConfigurableHTTPProxy.command": [str(HUB_PROXY)],
            "ConfigurableHTTPProxy.api_url": f"http://127.0.0.1:{self.proxy_api_port}",
            "ConfigurableHTTPProxy.auth_token": secrets.token_hex(32),
            "ConfigurableHTTPProxy.pid_file": str(self.state / "proxy.pid"),
            "Spawner.environment": self.server_environment(),
        }
        ours = "".join(f"c.{name} = {value!r}\n" for name, value in settings.items())
        return f"{readme_python(HUB_CONFIG)}\n{ours}c.JupyterHub.load_roles = {self.roles()}\n"

    def server_config(self) -> str:
        """The single-user servers' jupyter_server_config.py: the session's site (one that allows detachable
        kernels), JupyterLab as in the tests' own, and what the README has a hub's servers add."""
        return cluster_site(self.cluster) + lab_config(self.directory) + readme_python(SERVER_CONFIG)

    def prepare(self) -> None:
        """The files the hub and the users' servers read, and each user's scratch directory (as a site makes it)."""
        (self.directory / "config").mkdir(mode=0o755)
        (self.directory / "config" / "jupyter_server_config.py").write_text(self.server_config())
        kernels = self.directory / "jupyter" / "kernels"
        shutil.copytree(self.kernels_dir, kernels)
        for path in [self.directory / "jupyter", kernels, *kernels.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        (self.state / "jupyterhub_config.py").write_text(self.hub_config())
        for user in self.users:
            scratch = self.cluster.netscratch / user.name
            scratch.mkdir(exist_ok=True)
            os.chown(scratch, user.uid, -1)

    def start(self, timeout: float = 120) -> Hub:
        if not os.access(HUB_PROXY, os.X_OK):
            raise RuntimeError(f"no {HUB_PROXY}: run dev/install")
        self.prepare()
        variables = [f"{key}={value}" for key, value in self.server_environment().items()]
        argv = [*variables, f"HOME={self.state}", sys.executable, "-m", "jupyterhub"]
        argv += ["-f", str(self.state / "jupyterhub_config.py")]
        with open(self.directory / "hub.log", "ab") as log:
            # nsenter and env exec what they run: this process is the hub's own, whose SIGTERM stops it all
            self.process = subprocess.Popen(
                self.owner.seeing("env", "-i", "-C", str(self.state), *argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

        def answers() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the hub exited:\n{self.log()}")
            try:
                return self.request("GET", "/hub/api/", timeout=5).status == 200
            except OSError:
                return False

        wait_for(answers, timeout, f"the hub to answer through its proxy:\n{self.log()}")
        answer = self.request("POST", "/hub/api/users", {"usernames": [user.name for user in self.users]})
        assert answer.status == 201, (answer.status, answer.body)
        return self

    def user_model(self, name: str) -> dict[str, Any]:
        answer = self.request("GET", f"/hub/api/users/{name}")
        assert answer.status == 200, (answer.status, answer.body)
        model: dict[str, Any] = answer.body
        return model

    def start_server(self, user: str, name: str = "", timeout: float = 120) -> None:
        """Start the user's server (its default one, or its named server name) unless it runs, and wait until
        it is ready."""
        if self.user_model(user)["servers"].get(name, {}).get("ready"):
            return
        answer = self.request("POST", f"/hub/api/users/{user}/servers/{name}", {})
        assert answer.status in (201, 202), (answer.status, answer.body, self.log())
        wait_for(
            lambda: self.user_model(user)["servers"].get(name, {}).get("ready"),
            timeout,
            f"{user}'s server {name!r} to be ready:\n{self.log()}",
        )

    def stop_server(self, user: str, name: str = "", timeout: float = 120) -> None:
        """Stop the user's server (as the hub stops it: its kernels shut down) and wait until it is gone."""
        answer = self.request("DELETE", f"/hub/api/users/{user}/servers/{name}")
        assert answer.status in (202, 204), (answer.status, answer.body)
        wait_for(lambda: name not in self.user_model(user)["servers"], timeout, f"{user}'s server {name!r} to stop")

    def token_of(self, user: str) -> str:
        """An API token of the user's (made by the hub once), with all that the user may do."""
        if user not in self.tokens:
            answer = self.request("POST", f"/hub/api/users/{user}/tokens", {"note": "jupyter-asgard tests"})
            assert answer.status == 201, (answer.status, answer.body)
            self.tokens[user] = answer.body["token"]
        return self.tokens[user]

    def server(self, owner: str, name: str = "", as_user: str | None = None) -> HubUserServer:
        """The owner's server (name: a named one), as the owner reaches it or as_user, with their tokens."""
        return HubUserServer(self, owner, self.token_of(as_user or owner), name)

    @contextmanager
    def culling(self, timeout: int, every: int) -> Iterator[None]:
        """jupyterhub-idle-culler, while the block runs, as the hub's service CULLER (with its token and only its
        scopes): it stops each server unused for timeout seconds, looking every `every` seconds."""
        env = {
            "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "JUPYTERHUB_API_TOKEN": self.culler_token,
            "JUPYTERHUB_API_URL": f"http://127.0.0.1:{self.hub_port}/hub/api",
        }
        argv = [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={timeout}", f"--cull-every={every}"]
        with open(self.directory / "hub.log", "ab") as log:
            culler = subprocess.Popen(argv, env=env, cwd=self.state, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            yield
        finally:
            culler.terminate()
            culler.wait(timeout=30)

    def stop(self) -> list[str]:
        """SIGTERM to the hub, which stops its proxy and the servers it spawned; what was left after it ended
        ([] when nothing), ended then as well."""
        left = []
        proxy_pid_file = self.state / "proxy.pid"
        proxy = int(proxy_pid_file.read_text()) if proxy_pid_file.exists() else 0
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=120)
            except subprocess.TimeoutExpired:
                left.append(f"the hub (pid {self.process.pid})")
                self.process.kill()
                self.process.wait()
        if proxy and alive(proxy):
            left.append(f"the proxy (pid {proxy})")
            os.kill(proxy, signal.SIGKILL)
        for user in self.users:
            if processes := user.wait_for_no_processes(30):
                left.append(f"processes of {user.name}: {json.dumps(processes)}")
            shutil.rmtree(self.cluster.netscratch / user.name, ignore_errors=True)
        shutil.rmtree(self.directory, ignore_errors=True)
        return left


@contextmanager
def running_hub(
    cluster: LocalCluster, kernels_dir: Path, users: list[UnixUser], grants: dict[str, str], port: int = 0
) -> Iterator[Hub]:
    """A started Hub (see Hub), stopped afterwards: a failure if anything of it was left running."""
    hub = Hub(cluster, kernels_dir, users, grants, port)
    try:
        yield hub.start()
    finally:
        left = hub.stop()
    assert not left, f"the hub left {left}"


def demo(root: Path, kernels_dir: Path, notebooks: Path, port: int) -> None:
    """dev/demo-hub: a hub in front of the cluster in root, with two throwaway users to log in as (any password),
    each with the example notebooks in their home, until Ctrl-C (or SIGTERM) stops it all."""
    cluster = LocalCluster.attach(root)
    with throwaway_user("alice") as first, throwaway_user("bob") as second:
        for user in (first, second):
            for notebook in sorted(notebooks.glob("*.ipynb")):
                shutil.copy(notebook, user.home / notebook.name)
                os.chown(user.home / notebook.name, user.uid, -1)
        with running_hub(cluster, kernels_dir, [first, second], {}, port) as hub:
            print(f"JupyterHub: {hub.url}/hub/login  users: {first.name}, {second.name} (any password)", flush=True)
            print("Ctrl-C stops the hub, the users' servers and their kernels.", flush=True)
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                signal.pause()
            except KeyboardInterrupt:
                print("stopping the hub", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m tests.hub", description=demo.__doc__)
    parser.add_argument("--root", type=Path, required=True, help="the running test cluster's directory")
    parser.add_argument("--kernels", type=Path, required=True, help="the kernelspecs the users' servers offer")
    parser.add_argument("--notebooks", type=Path, required=True, help="notebooks to put in each user's home")
    parser.add_argument("--port", type=int, default=8000, help="the hub's port on 127.0.0.1")
    args = parser.parse_args(argv)
    demo(args.root, args.kernels, args.notebooks, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
