"""A real Jupyter server (or JupyterLab) in its own process, for tests that go through HTTP like a browser."""

from __future__ import annotations

import asyncio
import html
import json
import os
import pty
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from tornado.httpclient import HTTPRequest
    from tornado.websocket import WebSocketClientConnection

T = TypeVar("T")
GONE = "the kernel is gone (shut down)"  # await_kernel's answer when the server no longer has the kernel


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Response:
    status: int
    body: Any

    @property
    def message(self) -> str:
        return self.body.get("message", "") if isinstance(self.body, dict) else ""


class ServerClient(ABC):
    """What a test asks of a Jupyter server over HTTP and its websockets, as its clients do, with self.token:
    JupyterServer runs one of its own; tests/hub.py reaches one behind a JupyterHub's proxy."""

    token: str

    @property
    @abstractmethod
    def url(self) -> str:
        """Where the server's URLs start: its own address, or its path behind a proxy."""

    @abstractmethod
    def log(self) -> str:
        """The end of what the server logged, to show with a failure."""

    def start_kernel(self, name: str, timeout: float = 120) -> str:
        """POST /api/kernels, then wait until the kernel answers on its websocket as JupyterLab's does: with
        pending kernels (Asgard's default) the POST answers before the kernel has started."""
        answer = self.request("POST", "/api/kernels", {"name": name})
        assert answer.status == 201, (answer.status, answer.body)
        kernel_id: str = answer.body["id"]
        error = self.await_kernel(kernel_id, timeout)
        assert not error, f"kernel {name} did not start: {error}\n{self.log()}"
        return kernel_id

    def await_kernel(self, kernel_id: str, timeout: float = 120) -> str:
        """Wait for a kernel's start as a client's websocket does: "" once it answers, else why it did not."""
        try:
            execute_via_websocket(self, kernel_id, "", timeout)
        except Exception as error:
            model = self.request("GET", f"/api/kernels/{kernel_id}")
            if model.status == 404:
                return f"{GONE}: {_error_page_message(error)}"
            return model.body.get("reason") or _error_page_message(error)
        return ""

    def failed_start(self, kernel_id: str, timeout: float = 120) -> str:
        """The reason a pending kernel's start failed, as its kernel model carries it (no websocket asked)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            model = self.request("GET", f"/api/kernels/{kernel_id}").body
            if model["execution_state"] == "dead":
                return str(model.get("reason", ""))
            time.sleep(0.2)
        raise AssertionError(f"kernel {kernel_id} still starting after {timeout:.0f}s: {model}")

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = "", timeout: float = 120
    ) -> Response:
        """One HTTP request; token "" means the server's token, None means no credentials at all; a body of
        bytes goes as it is, any other as JSON."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"token {token or self.token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:
                return Response(answer.status, _decode(answer.read()))
        except urllib.error.HTTPError as error:
            return Response(error.code, _decode(error.read()))


class JupyterServer(ServerClient):
    """`jupyter server` or `jupyter lab` on 127.0.0.1 with a token; stop() ends it and its kernels."""

    def __init__(
        self,
        root_dir: Path,
        log_path: Path,
        app: str = "server",
        extra_args: list[str] | None = None,
        runner: Callable[[list[str]], list[str]] | None = None,
    ) -> None:
        """runner: the server's command line as it is run (as another user: tests.unix_users.UnixUser.command)."""
        self.root_dir = root_dir
        self.log_path = log_path
        self.app = app
        self.extra_args = extra_args or []
        self.runner = runner
        self.token = secrets.token_hex(16)
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.env: dict[str, str] = {}
        self.terminal: int | None = None  # the terminal's other end, with start(terminal=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(
        self, env: dict[str, str] | None = None, timeout: float = 60, terminal: bool = False, poll: float = 0.2
    ) -> JupyterServer:
        """terminal: as if run in a terminal of its own: a process group of its own (Ctrl-C goes to all of it)
        and a terminal as stdin (jupyter_server asks before it shuts down only then), answered by answer().
        poll: seconds between asks whether it answers (a benchmark timing the start asks more often)."""
        argv = [
            sys.executable,
            "-m",
            "jupyter",
            self.app,
            "--no-browser",
            "--allow-root",
            f"--port={self.port}",
            "--ip=127.0.0.1",
            f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={self.root_dir}",
            "--ServerApp.port_retries=0",
            *self.extra_args,
        ]
        self.env = env or dict(os.environ)
        process_env = self.env
        if self.runner is not None:  # the runner gives the server its environment (env -i ...); ours finds it
            argv, process_env = self.runner(argv), dict(os.environ)
        stdin = None
        if terminal:
            self.terminal, stdin = pty.openpty()
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=process_env,
                stdin=stdin,
                start_new_session=terminal,
            )
        if stdin is not None:
            os.close(stdin)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter {self.app} exited:\n{self.log()}")
            if self.answers():
                return self
            time.sleep(poll)
        raise RuntimeError(f"jupyter {self.app} did not answer within {timeout}s:\n{self.log()}")

    def answers(self) -> bool:
        """Whether the server answers now. jupyter_server prints its URL before it listens (it binds its port
        once its event loop runs), so a printed URL alone does not say so."""
        try:
            return self.request("GET", "/api/status").status == 200
        except OSError:
            return False

    def answer(self, text: str) -> None:
        """Type text into the server's terminal."""
        assert self.terminal is not None
        os.write(self.terminal, text.encode())

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.terminal is not None:
            os.close(self.terminal)
            self.terminal = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


def started_server(home: Path, config: str, environ: dict[str, str] | None = None) -> JupyterServer:
    """A `jupyter server` of its own below home: config is its jupyter_server_config.py, and its root, data
    and runtime files are below home too (the caller stops it); environ instead of the test's environment."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "jupyter_server_config.py").write_text(config)
    (home / "root").mkdir()
    env = {
        **(environ or os.environ),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
    }
    extra_args = [f"--config={home / 'jupyter_server_config.py'}"]
    return JupyterServer(home / "root", home / "server.log", extra_args=extra_args).start(env)


@contextmanager
def running_server(home: Path, config: str, environ: dict[str, str] | None = None) -> Iterator[JupyterServer]:
    """started_server, stopped afterwards (with its kernels)."""
    server = started_server(home, config, environ)
    try:
        yield server
    finally:
        server.stop()


def checkout_labextensions(home: Path) -> list[str]:
    """A labextensions directory holding the extension built in the checkout under test (npm run build writes
    it to jupyter_asgard/labextension), for JupyterLab to load before the one pip installed, which is a copy
    made at install time: a worktree, or a change rebuilt since, has its own. None where nothing is built."""
    import jupyter_asgard

    built = Path(jupyter_asgard.__file__).resolve().parent / "labextension"
    if not (built / "package.json").is_file():
        return []
    extensions = home / "labextensions"
    extensions.mkdir(exist_ok=True)
    link = extensions / json.loads((built / "package.json").read_text())["name"]
    if not link.is_symlink():
        link.symlink_to(built, target_is_directory=True)
    return [str(extensions)]


def lab_config(home: Path) -> str:
    """A test's JupyterLab: without JupyterLab's news and update checks, with the checkout's own extension (a
    link to it below home)."""
    return (
        "c.LabApp.news_url = None\nc.LabApp.check_for_updates_class = 'jupyterlab.NeverCheckForUpdate'\n"
        f"c.LabApp.extra_labextensions_path = {checkout_labextensions(home)!r}\n"
    )


def started_lab(home: Path, config: str) -> JupyterServer:
    """A JupyterLab of its own below home, configured by config (jupyter_server_config.py in
    JUPYTER_CONFIG_DIR, where notebook kernels read it too), without JupyterLab's news and update checks, with
    the checkout's own extension (the caller stops it). Its data is home/data: make that a link to share it."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config").mkdir()
    (home / "config" / "jupyter_server_config.py").write_text(config + lab_config(home))
    (home / "root").mkdir()
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_DATA_DIR": str(home / "data"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
    }
    return JupyterServer(home / "root", home / "lab.log", app="lab").start(env)


@contextmanager
def running_lab(home: Path, config: str) -> Iterator[JupyterServer]:
    """started_lab, stopped afterwards (with its kernels)."""
    lab = started_lab(home, config)
    try:
        yield lab
    finally:
        lab.stop()


def _error_page_message(error: Exception) -> str:
    """The message of the server's error page that refused a websocket (jupyter_server's error.html)."""
    response = getattr(error, "response", None)
    page = response.body.decode(errors="replace") if response is not None and response.body else ""
    found = re.search(r'<pre class="traceback">(.*?)</pre>', page, re.DOTALL)
    return html.unescape(found.group(1)) if found else repr(error)


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return raw.decode(errors="replace")


def run_async(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """asyncio.run(main()), in a thread of its own where this one runs an event loop already: Playwright's sync
    API keeps one while a test's browser is open, and asyncio.run refuses to run in it."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(max_workers=1) as thread:
        return thread.submit(lambda: asyncio.run(main())).result()


def websocket_request(server: ServerClient, path: str, timeout: float = 60) -> HTTPRequest:
    """The opening request of a websocket at path, as a program's client sends it: the token in the
    Authorization header, which jupyter_server and a JupyterHub's single-user server both read (such a server
    reads a token in a websocket's URL only from a browser, which says so in its Sec-Fetch-Mode header)."""
    from tornado.httpclient import HTTPRequest

    url = "ws" + server.url.removeprefix("http") + path
    headers = {"Authorization": f"token {server.token}"}
    # tornado's own request timeout (20 s by default) would cut the wait for a kernel still in the queue
    return HTTPRequest(url, headers=headers, connect_timeout=timeout, request_timeout=timeout)


def shell_request(msg_type: str, content: dict[str, Any], session: str) -> tuple[str, str]:
    """A shell-channel request as JupyterLab sends it on a kernel websocket: its msg_id, and the message."""
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "username": "test", "session": session, "msg_type": msg_type, "version": "5.3"}
    message = {"header": header, "parent_header": {}, "metadata": {}, "channel": "shell", "content": content}
    return msg_id, json.dumps(message)


def execute_request(code: str, session: str) -> tuple[str, str]:
    """An execute_request, as shell_request."""
    content = {"code": code, "silent": False, "store_history": False, "user_expressions": {}, "allow_stdin": False}
    return shell_request("execute_request", content, session)


def kernel_info_request(session: str) -> tuple[str, str]:
    """A kernel_info_request, as shell_request."""
    return shell_request("kernel_info_request", {}, session)


async def kernel_websocket(
    server: ServerClient, kernel_id: str, session: str, timeout: float = 60
) -> WebSocketClientConnection:
    """The kernel's channels websocket, opened as JupyterLab opens it: its client session in the URL."""
    from tornado.websocket import websocket_connect

    request = websocket_request(server, f"/api/kernels/{kernel_id}/channels?session_id={session}", timeout)
    return await asyncio.wait_for(websocket_connect(request), timeout)


def closed_by_server(connection: WebSocketClientConnection) -> ConnectionError:
    return ConnectionError(f"the server closed the kernel websocket ({connection.close_code})")


async def request_on(
    connection: WebSocketClientConnection, request: tuple[str, str], timeout: float = 60
) -> AsyncIterator[dict[str, Any]]:
    """Send a request (shell_request's msg_id and message) through an open kernel websocket and yield what comes
    back for it, each read within timeout. ConnectionError where the server has closed the websocket, before the
    request was sent or after."""
    from tornado.websocket import WebSocketClosedError

    msg_id, message = request
    try:
        await connection.write_message(message)
    except WebSocketClosedError as error:
        raise closed_by_server(connection) from error
    while True:
        raw = await asyncio.wait_for(connection.read_message(), timeout)
        if raw is None:
            raise closed_by_server(connection)
        reply = json.loads(raw)
        if reply.get("parent_header", {}).get("msg_id") == msg_id:
            yield reply


async def execute_on(connection: WebSocketClientConnection, code: str, session: str, timeout: float = 60) -> str:
    """Run code through an open kernel websocket; its stream output. ConnectionError where the server closes it."""
    output = []
    async for reply in request_on(connection, execute_request(code, session), timeout):
        if reply["msg_type"] == "stream":
            output.append(reply["content"]["text"])
        elif reply["msg_type"] == "status" and reply["content"]["execution_state"] == "idle":
            break  # request_on yields until then, or raises
    return "".join(output)


def execute_via_websocket(server: ServerClient, kernel_id: str, code: str, timeout: float = 60) -> str:
    """Run code the way JupyterLab does, through the server's kernel websocket; return the stream output."""

    async def go() -> str:
        session = uuid.uuid4().hex
        connection = await kernel_websocket(server, kernel_id, session, timeout)
        try:
            return await execute_on(connection, code, session, timeout)
        finally:
            connection.close()

    return run_async(go)


def terminal_websocket(server: ServerClient, name: str, timeout: float = 60) -> HTTPRequest:
    """The opening request of terminal name's websocket (terminado's protocol), as websocket_request."""
    return websocket_request(server, f"/terminals/websocket/{name}", timeout)


def websocket_status(request: HTTPRequest) -> int:
    """101 where the websocket opens, else the HTTP status that refused it."""
    from tornado.httpclient import HTTPClientError
    from tornado.websocket import websocket_connect

    async def connect() -> int:
        try:
            connection = await websocket_connect(request)
        except HTTPClientError as error:
            return error.code
        connection.close()
        return 101

    return run_async(connect)


def terminal_session(server: ServerClient, name: str, typed: str, until: str, timeout: float = 60) -> str:
    """Type into a jupyter_server terminal as JupyterLab's does (terminado's websocket) and return what it
    shows until `until` appears; "" in the answer if the terminal ended (its disconnect) first."""
    from tornado.websocket import websocket_connect

    async def go() -> str:
        connection = await asyncio.wait_for(websocket_connect(terminal_websocket(server, name, timeout)), timeout)
        await connection.write_message(json.dumps(["set_size", 40, 200, 600, 2000]))
        await connection.write_message(json.dumps(["stdin", typed]))
        shown = ""
        try:
            while until not in shown:
                raw = await asyncio.wait_for(connection.read_message(), timeout)
                if raw is None:
                    break
                kind, *content = json.loads(raw)
                if kind == "stdout":
                    shown += content[0]
                elif kind == "disconnect":
                    break
        finally:
            connection.close()
        return shown

    return run_async(go)


def terminal_ends(server: ServerClient, name: str, timeout: float = 60) -> bool:
    """Whether the terminal's process ends within timeout: its websocket says disconnect, or closes."""
    from tornado.websocket import websocket_connect

    async def go() -> bool:
        try:
            connection = await asyncio.wait_for(websocket_connect(terminal_websocket(server, name, 30)), 30)
        except Exception:
            return True  # gone already
        try:
            while True:
                raw = await connection.read_message()
                if raw is None or json.loads(raw)[0] == "disconnect":
                    return True
        finally:
            connection.close()

    async def bounded() -> bool:
        try:
            return await asyncio.wait_for(go(), timeout)
        except asyncio.TimeoutError:
            return False

    return run_async(bounded)
