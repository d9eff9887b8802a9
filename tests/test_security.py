"""Security of Asgard kernels on the real test cluster and of the REST API on a real Jupyter server.

The session key (the HMAC key that signs every Jupyter message, the only secret
between clients and the kernel) must never show where others or logs can see
it; files holding it are the user's alone; a client that cannot sign with it is
ignored; and input from kernelspecs and the REST API is checked before any of
it reaches a command line.
"""

from __future__ import annotations

import ast
import getpass
import json
import os
import queue
import shutil
import stat
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.manager import AsyncKernelManager
from traitlets.config import Config

import jupyter_asgard
from jupyter_asgard.errors import KernelStartError
from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs, execute, kernel_jobs, running_steps, start, wait_until_no_kernel_jobs
from tests.server import JupyterServer, Response
from tests.waiting import wait_for

CONNECTION_FILE_PROBE = """
import json, os
from ipykernel import get_connection_file
path = get_connection_file()
print(json.dumps({
    "path": path,
    "file_mode": os.stat(path).st_mode & 0o7777,
    "dir_mode": os.stat(os.path.dirname(path)).st_mode & 0o7777,
    "owner": os.stat(path).st_uid,
    "uid": os.getuid(),
    "key": json.load(open(path))["key"],
    "key_in_environ": os.environb.get(b"ASGARD_KERNEL_KEY") is not None,
    "environ": open("/proc/self/environ", "rb").read().decode(errors="replace"),
}))
"""


# --- a kernel started through the Jupyter server, as JupyterLab starts one ------------------------------------


@dataclass
class ServerKernel:
    kernel_id: str
    connection_file: Path
    info: dict[str, Any]
    job_id: str

    @property
    def key(self) -> str:
        return self.info["key"]

    def client(self, key: bytes | None = None) -> BlockingKernelClient:
        """A client with the kernel's real address and ports (read anew: a restart takes new ports, and
        jupyter_client rewrites the server's connection file); key None means the real key."""
        client = BlockingKernelClient()
        info = json.loads(self.connection_file.read_text())
        client.load_connection_info({**info, "key": self.key.encode() if key is None else key})
        client.start_channels(hb=False)
        return client

    def run(self, code: str, timeout: float = 30) -> dict[str, Any]:
        """Execute with the real key; the reply's content plus stdout."""
        client = self.client()
        try:
            client.wait_for_ready(timeout=timeout)
            stdout: list[str] = []
            reply = client.execute_interactive(
                code,
                timeout=timeout,
                output_hook=lambda message: (
                    stdout.append(message["content"]["text"]) if message["msg_type"] == "stream" else None
                ),
            )
            return {**reply["content"], "stdout": "".join(stdout)}
        finally:
            client.stop_channels()


@pytest.fixture(scope="class")
def server_kernel(jupyter_server: JupyterServer, kernelspecs: KernelSpecs) -> Iterator[ServerKernel]:
    kernel_id = jupyter_server.start_kernel("asgard-test")
    try:
        connection_file = Path(jupyter_server.env["JUPYTER_RUNTIME_DIR"]) / f"kernel-{kernel_id}.json"
        info = json.loads(connection_file.read_text())
        job_id = jupyter_server.request("GET", f"/asgard/api/kernels/{kernel_id}").body["job_id"]
        assert job_id
        yield ServerKernel(kernel_id, connection_file, info, job_id)
    finally:
        jupyter_server.request("DELETE", f"/api/kernels/{kernel_id}")
        assert not [line for line in wait_until_no_kernel_jobs() if kernel_id in line]


def run_text(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60)


def command_lines() -> list[str]:
    """Every process's command line, from ps and from /proc directly (ps may shorten long ones)."""
    lines = run_text("ps", "-eww", "-o", "args").stdout.splitlines()
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            lines.append(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
        except OSError:
            pass  # the process ended meanwhile
    return lines


def files_below(root: Path, limit: int = 20 * 1024 * 1024) -> Iterator[tuple[Path, str]]:
    for path in root.rglob("*"):
        try:
            if path.is_file() and not path.is_symlink() and path.stat().st_size <= limit:
                yield path, path.read_bytes().decode(errors="replace")
        except OSError:
            pass


class TestServerKernel:
    """One kernel started through POST /api/kernels, probed from every side."""

    def test_the_keys_are_in_no_command_line_slurm_record_or_log(
        self, server_kernel: ServerKernel, jupyter_server: JupyterServer, slurm_cluster: LocalCluster
    ) -> None:
        key = server_kernel.key
        job_id = server_kernel.job_id
        assert len(key) >= 32
        # Output and a restart have flowed through the server log by the time we look.
        assert server_kernel.run("import sys; print('hello', file=sys.__stderr__, flush=True)")["status"] == "ok"
        assert jupyter_server.request("POST", f"/api/kernels/{server_kernel.kernel_id}/restart").status == 200
        assert server_kernel.run("print('again')")["stdout"].strip() == "again"

        places: dict[str, str] = {}
        places["process command lines"] = "\n".join(command_lines())
        for argv in (
            ["scontrol", "-d", "show", "job", job_id],
            ["scontrol", "-d", "show", "step", job_id],
            ["squeue", "-j", job_id, "-o", "%all"],
            ["sstat", "-j", job_id, "-a", "-o", "JobID,NodeList"],
        ):
            result = run_text(*argv)
            places[" ".join(argv)] = result.stdout + result.stderr
        assert job_id in places[f"scontrol -d show job {job_id}"]
        assert "jupyter-kernel" in places[f"scontrol -d show step {job_id}"]
        # sacct needs accounting storage, which the test cluster has none of (AccountingStorageType=
        # accounting_storage/none): sacct fails and says so. What it prints is still checked; on Asgard the
        # job records hold what scontrol shows above (the allocation's salloc command line and the step's
        # srun options), which carry no key.
        sacct = run_text("sacct", "-o", "all", "-j", job_id, "--parsable2")
        if sacct.returncode != 0:
            assert "accounting storage is disabled" in sacct.stderr.lower(), sacct.stderr
        places["sacct -o all"] = sacct.stdout + sacct.stderr
        places["jupyter server log"] = jupyter_server.log_path.read_text(errors="replace")
        assert running_steps(job_id) == [f"{job_id}.1"]  # started, then restarted
        # slurmctld's state save (where job records live), the slurmd spools, the daemons' logs.
        for path, text in files_below(slurm_cluster.root):
            places[str(path)] = text
        assert server_kernel.kernel_id in places["jupyter server log"]
        # The CurveZMQ secret key goes the same way as the session key: the step's environment, never a
        # command line, a Slurm record or a log.
        curve_key = server_kernel.info["curve_secretkey"]
        leaked = [place for place, text in places.items() if key in text or curve_key in text]
        assert leaked == []

    def test_files_with_the_key_are_readable_by_the_user_alone(self, server_kernel: ServerKernel) -> None:
        server_file = server_kernel.connection_file.stat()
        assert stat.S_IMODE(server_file.st_mode) == 0o600
        assert server_file.st_uid == os.getuid()
        assert stat.S_IMODE(server_kernel.connection_file.parent.stat().st_mode) & 0o077 == 0
        node = json.loads(server_kernel.run(CONNECTION_FILE_PROBE)["stdout"])
        assert Path(node["path"]).parent.name.startswith("asgard-kernel-")
        assert node["key"] == server_kernel.key  # the kernel's own file, with the same key
        assert node["file_mode"] == 0o600
        assert node["dir_mode"] & 0o777 == 0o700  # in a container's /tmp, Pyxis's containers add the sticky bit
        assert node["owner"] == node["uid"]
        # The bootstrap hands the key on in the file only: the kernel's own environment has none of it.
        assert node["key_in_environ"] is False
        assert server_kernel.key not in node["environ"]

    @pytest.mark.parametrize("key", [b"not-the-key-" + b"0" * 20, b""], ids=["wrong key", "unsigned"])
    def test_a_client_without_the_key_is_ignored(
        self, server_kernel: ServerKernel, slurm_cluster: LocalCluster, key: bytes
    ) -> None:
        # On the user's netscratch, which the kernel's container mounts: the test sees what the kernel wrote.
        marker = slurm_cluster.netscratch / getpass.getuser() / f"marker-{uuid.uuid4().hex}"
        code = f"open({str(marker)!r}, 'w').write('ran')"
        intruder = server_kernel.client(key)
        try:
            intruder.execute(code)
            intruder.control_channel.send(intruder.session.msg("shutdown_request", {"restart": False}))
            with pytest.raises(queue.Empty):
                intruder.get_shell_msg(timeout=4)
            with pytest.raises(queue.Empty):
                intruder.get_control_msg(timeout=0.5)
        finally:
            intruder.stop_channels()
        assert not marker.exists()
        # The kernel ignored both requests: it lives on, and the real key works.
        reply = server_kernel.run(code)
        assert reply["status"] == "ok"
        assert marker.read_text() == "ran"
        marker.unlink()

    def test_the_server_listens_on_its_http_port_only(
        self, server_kernel: ServerKernel, jupyter_server: JupyterServer
    ) -> None:
        assert jupyter_server.process is not None
        listening = run_text("ss", "-Hltnp").stdout.splitlines()
        mine = [line for line in listening if f"pid={jupyter_server.process.pid}," in line]
        assert len(mine) == 1 and f"127.0.0.1:{jupyter_server.port} " in mine[0], mine


# --- kernels of AsyncKernelManager: what happens to the key when a kernel ends --------------------------------


class ContainerView:
    """A process in a kernel's container's mount namespace: what the container's private /tmp held stays
    visible (as another step attached to the running container, a terminal say, keeps it alive) after the
    kernel has ended."""

    def __init__(self, kernel_pid: int) -> None:
        self.process = subprocess.Popen(["nsenter", f"--mount=/proc/{kernel_pid}/ns/mnt", "sleep", "600"])

    def path(self, inside: Path) -> Path:
        return Path(f"/proc/{self.process.pid}/root") / inside.relative_to("/")

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.mark.usefixtures("no_kernel_jobs_left")
@pytest.mark.parametrize("how", ["shutdown", "kill", "restart_now"])
async def test_the_key_does_not_outlive_the_kernel_on_the_node(
    kernelspecs: KernelSpecs, tmp_path: Path, how: str
) -> None:
    """kill: shutdown_kernel(now=True), which is also what jupyter_client falls back to for a kernel that
    answers neither its shutdown request nor SIGTERM; restart_now: the automatic restart after a crash."""
    name = kernelspecs.make("asgard-sec-cpu", gpus=None)
    km = await start(name, tmp_path)
    files: list[Path] = []
    views: list[ContainerView] = []

    async def look() -> None:
        files.append(Path(json.loads((await execute(km, CONNECTION_FILE_PROBE))["stdout"])["path"]))
        views.append(ContainerView(km.provisioner.step.handshake["pid"]))
        wait_for(lambda: views[-1].path(files[-1]).exists(), 10, "the connection file seen in the container")

    try:
        await look()
        if how == "restart_now":
            await km.restart_kernel(now=True)
            await look()
            await km.shutdown_kernel()
        else:
            await km.shutdown_kernel(now=how == "kill")
        left = [str(path) for path, view in zip(files, views, strict=True) if view.path(path.parent).exists()]
        assert left == [], "left in the container, holding the session key"
    finally:
        if km.has_kernel:
            await km.shutdown_kernel()
        for view in views:
            view.close()


@pytest.mark.usefixtures("no_kernel_jobs_left")
async def test_values_with_shell_metacharacters_reach_the_kernel_literally(
    kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    """No shell between the server and the kernel: what a shell would run is passed on as text."""
    markers = tmp_path / "markers"
    markers.mkdir()
    env_value = f"$(touch {markers}/env1); `touch {markers}/env2`; touch {markers}/env3 && echo & | > < * '\""
    # Pyxis cannot mount a path with '$', '`' or '"' (the notebook directory is refused, test_start_errors.py);
    # a mount of the directory above it covers it, and --container-workdir reaches chdir as it is.
    workdir = tmp_path / "proj;$(touch${IFS}m1)`touch${IFS}m2`&&|><'\"*?"
    workdir.mkdir()
    name = kernelspecs.make(
        "asgard-sec-meta",
        gpus=None,
        env={"PROBE": env_value},
        mounts=[*kernelspecs.base_config()["mounts"], f"{tmp_path}:{tmp_path}"],
    )
    km = await start(name, workdir)
    try:
        code = "import os, json; print(json.dumps([os.getcwd(), os.environ['PROBE']]))"
        cwd, probe = json.loads((await execute(km, code))["stdout"])
    finally:
        await km.shutdown_kernel()  # gracefully: a kill leaves the node's connection file behind (see above)
    assert (cwd, probe) == (str(workdir), env_value)
    assert list(markers.iterdir()) == []
    for directory in (tmp_path, workdir, Path.cwd(), Path("/")):
        assert not [path for path in directory.iterdir() if path.name in ("m1", "m2")], directory


@pytest.mark.usefixtures("no_kernel_jobs_left")
async def test_a_kernelspec_cannot_lift_the_sites_limits(kernelspecs: KernelSpecs, tmp_path: Path) -> None:
    """max_gpus and allowed_partitions are the site's policy (c.PyxisProvisioner in the server's
    configuration); a user's kernel.json that names them must not override them."""
    site = Config({"PyxisProvisioner": {"max_gpus": 1, "allowed_partitions": ["debug"]}})
    name = kernelspecs.make("asgard-sec-greedy", gpus=2, partition="gpu", max_gpus=8, allowed_partitions=[])
    km = AsyncKernelManager(kernel_name=name, config=site)
    try:
        with pytest.raises(KernelStartError) as refused:
            await km.start_kernel(cwd=str(tmp_path))
    finally:
        if km.has_kernel:
            await km.shutdown_kernel()
    message = str(refused.value)
    # Refused for the limits themselves, or for naming site settings in a kernelspec: either names them.
    assert "allows at most 1" in message or "max_gpus" in message, message
    assert "partition 'gpu' is not offered" in message or "allowed_partitions" in message, message
    assert kernel_jobs() == []


# --- input through the REST API ---------------------------------------------------------------------------------


def good_config(cluster: LocalCluster) -> dict[str, Any]:
    return {
        "image": str(cluster.pytorch_image()),
        "mounts": [f"{cluster.datasets}:/ds:ro"],
        "gpus": 1,
        "partition": "gpu",
    }


def snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    """Every path below roots with its size and modification time."""
    found = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.exists() else []:
            info = path.lstat()
            found[str(path)] = (info.st_size, info.st_mtime_ns)
    return found


@pytest.fixture
def nothing_written(jupyter_server: JupyterServer) -> Iterator[Callable[[], None]]:
    """check() asserts that the user's kernelspecs (JUPYTER_DATA_DIR) and the server's home and root
    directory are exactly as they were; afterwards, what a failing case wrote is removed again, so that
    one refusal missed does not fail every case after it."""
    data_dir = Path(jupyter_server.env["JUPYTER_DATA_DIR"])
    home = data_dir.parent
    watched = (data_dir, jupyter_server.root_dir)
    before, entries = snapshot(*watched), sorted(path.name for path in home.iterdir())

    def check() -> None:
        assert snapshot(*watched) == before
        assert sorted(path.name for path in home.iterdir()) == entries
        for outside in ("/kernel.json", "/etc/kernel.json", "/etc/kernels", "/tmp/kernel.json"):
            assert not os.path.exists(outside)

    yield check
    jupyter_server.request("DELETE", f"/asgard/api/kernelspecs/{SPEC_NAME}")
    shutil.rmtree(data_dir / "kernels" / SPEC_NAME, ignore_errors=True)


SPEC_NAME = "sec-probe"

# (setting, value, words of the problem the answer must name)
BAD_VALUES = [
    # shell metacharacters
    ("image", "/enroot/x.sqsh; rm -rf ~", "image /enroot/x.sqsh; rm -rf ~ does not exist"),
    ("image", "$(id)", "is neither a path nor an enroot URI"),
    ("image", "`id`", "is neither a path nor an enroot URI"),
    ("image", "/enroot/x.sqsh\nrm -rf ~", "image contains a control character"),
    ("image", "/enroot/x.sqsh\rid", "image contains a control character"),
    ("partition", "gpu; rm -rf ~", "is not a valid Slurm name"),
    ("partition", "$(id)", "is not a valid Slurm name"),
    ("account", "`id`", "is not a valid Slurm name"),
    ("qos", "normal|id", "is not a valid Slurm name"),
    ("reservation", "r&&id", "is not a valid Slurm name"),
    ("container_name", "c; rm -rf ~", "container_name 'c; rm -rf ~'"),
    ("gpus", "1; id", "gpus '1; id'"),
    ("mem", "8G$(id)", "mem '8G$(id)'"),
    ("time", "`id`", "time '`id`'"),
    ("cpus_per_task", "4; id", "cpus_per_task must be a whole number"),
    ("container_env", ["HOME;id"], "container_env: 'HOME;id' is not a variable name"),
    ("mounts", ["/ds:/ds\nid"], "mounts contains a control character"),
    ("workdir", "x\nid", "workdir contains a control character"),
    # option injection: a value that would be read as an option of srun or salloc
    ("image", "--container-mounts=/:/host", "is neither a path nor an enroot URI"),
    ("partition", "--container-mounts=/:/host", "is not a valid Slurm name"),
    ("partition", "--partition=debug", "is not a valid Slurm name"),
    ("account", "-Aroot", "is not a valid Slurm name"),
    ("constraint", "--exclusive", "constraint '--exclusive' must be a feature expression"),
    ("constraint", "a --exclusive", "must be a feature expression without spaces"),
    ("workdir", "--container-mounts=/:/host", "must be an absolute path inside the container"),
    ("mounts", ["--container-mounts=/:/host"], "the source must be an absolute path"),
    ("mounts", ["/ds:/ds,/:/host"], "a path cannot contain one"),  # a second mount smuggled in after a ','
    ("container_env", ["--container-mounts=/:/host"], "is not a variable name"),
    ("srun_args", ["--jobid=1"], "srun_args: --jobid is set by jupyter-asgard"),
    ("srun_args", ["-J x"], "srun_args: -J is set by jupyter-asgard"),
    ("srun_args", ["-J", "x"], "srun_args: -J is set by jupyter-asgard"),
    ("srun_args", ["--container-mounts=/:/host"], "srun_args: --container-mounts is set by jupyter-asgard"),
    ("srun_args", ["--chdir=/"], "srun_args: --chdir is set by jupyter-asgard"),
    ("srun_args", ["--export=NONE"], "srun_args: --export is set by jupyter-asgard"),
    ("srun_args", ["; rm -rf ~"], "is not an option"),
    ("salloc_args", ["--job-name=x"], "salloc_args: --job-name is set by jupyter-asgard"),
    ("salloc_args", ["--comment=x"], "salloc_args: --comment is set by jupyter-asgard"),
    ("salloc_args", ["-Jx"], "salloc_args: -J is set by jupyter-asgard"),
    # getopt_long takes any unambiguous abbreviation of a long option, and a cluster of short options
    # ("-vJx" is -v -J x): Slurm's salloc and srun read these as the reserved options (checked by hand on
    # the test cluster: `salloc --job-na=evil` and `salloc -vJevil` name the job "evil", and
    # `srun --jobid=1 --jobi=3` runs the step in job 3).
    ("srun_args", ["--jobi=1"], "srun_args: --jobi"),
    ("srun_args", ["--exp=NONE"], "srun_args: --exp"),
    ("srun_args", ["-vJx"], "srun_args: -vJx"),
    ("salloc_args", ["--job-na=x"], "salloc_args: --job-na"),
    ("salloc_args", ["--comm=x"], "salloc_args: --comm"),
    ("salloc_args", ["-vJx"], "salloc_args: -vJx"),
    # oversized values
    ("image", "/" + "x" * 5000, "image is 5001 characters long; at most 4096 are allowed"),
    ("mounts", ["/ds:/ds"] * 65, "mounts has 65 entries; at most 64 are allowed"),
    ("srun_args", ["--verbose"] * 65, "srun_args has 65 entries; at most 64 are allowed"),
    ("cpus_per_task", 10**12, "cpus_per_task must be a whole number from 0 to 1000000"),
    ("gpus", 10**12, "gpus must be a count"),
    ("mem", "9" * 5000, "mem is 5000 characters long"),
    # settings that are the site's, not the user's, and settings that do not exist
    ("max_gpus", 100, "unknown setting 'max_gpus'"),
    ("bootstrap_python", "sh", "unknown setting 'bootstrap_python'"),
    ("argv", ["sh", "-c", "id"], "unknown setting 'argv'"),
]


def bad_value_id(case: tuple[str, Any, str]) -> str:
    return f"{case[0]}={str(case[1])[:30]!r}"


@pytest.mark.parametrize(("setting", "value", "problem"), BAD_VALUES, ids=[bad_value_id(c) for c in BAD_VALUES])
def test_bad_values_are_refused_with_the_problem_named(
    jupyter_server: JupyterServer,
    slurm_cluster: LocalCluster,
    nothing_written: Callable[[], None],
    setting: str,
    value: Any,
    problem: str,
) -> None:
    config = {**good_config(slurm_cluster), setting: value}
    checked = jupyter_server.request("POST", "/asgard/api/validate", config)
    saved = jupyter_server.request(
        "PUT", f"/asgard/api/kernelspecs/{SPEC_NAME}", {"display_name": "Probe", "config": config}
    )
    for answer in (checked, saved):
        assert answer.status == 400, answer.body
        assert any(problem in line for line in answer.body["problems"]), answer.body
        assert problem in answer.message
    assert jupyter_server.request("GET", f"/asgard/api/kernelspecs/{SPEC_NAME}").status == 404
    nothing_written()


TRAVERSALS = [
    "..",
    ".",
    "%2e%2e",
    "%2e",
    "%2e%2e%2f%2e%2e%2fetc",
    "..%2f..%2fetc",
    "..%2F..%2Fetc%2Fpasswd",
    "%2fetc",
    "%2Fetc%2Fkernels",
    "a%5c..%5cb",
    "..%5c..%5cetc",
    "%252e%252e%252f",
    "x%00y",
    "x%0ay",
    "..%c0%af",
    "x" * 65,
    "a%20b",
    "$(id)",
    "%60id%60",
    "k;id",
]
RAW_TRAVERSALS = ["../../etc", "../..", "x/../../../etc"]  # not one path segment: no handler takes them


@pytest.mark.parametrize("name", TRAVERSALS + RAW_TRAVERSALS)
def test_kernelspec_names_cannot_leave_the_kernels_directory(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster, nothing_written: Callable[[], None], name: str
) -> None:
    path = f"/asgard/api/kernelspecs/{name}"
    answers = [
        jupyter_server.request("PUT", path, {"display_name": "x", "config": good_config(slurm_cluster)}),
        jupyter_server.request("GET", path),
        jupyter_server.request("DELETE", path),
    ]
    for answer in answers:
        assert answer.status in (400, 404), (name, answer)
        if name in TRAVERSALS:  # one path segment: the handler answers, naming the problem
            assert answer.status == 400, (name, answer)
            assert "may contain only letters, digits" in answer.message or (
                "Invalid unicode in name" in answer.message
            ), (name, answer)  # tornado's, for %c0%af
    nothing_written()


def test_the_kernelspec_store_never_leaves_its_directory(
    jupyter_server: JupyterServer, slurm_cluster: LocalCluster
) -> None:
    """A well-formed name lands in JUPYTER_DATA_DIR/kernels/NAME and nowhere else; deleting it removes
    that directory only."""
    data_dir = Path(jupyter_server.env["JUPYTER_DATA_DIR"])
    created = jupyter_server.request("PUT", "/asgard/api/kernelspecs/..sec", {"config": good_config(slurm_cluster)})
    assert created.status == 400
    created = jupyter_server.request("PUT", "/asgard/api/kernelspecs/sec.ok..x", {"config": good_config(slurm_cluster)})
    assert created.status == 200, created.body
    assert Path(created.body["resource_dir"]) == data_dir / "kernels" / "sec.ok..x"
    assert jupyter_server.request("DELETE", "/asgard/api/kernelspecs/sec.ok..x").status == 204
    assert (data_dir / "kernels").is_dir() and not (data_dir / "kernels" / "sec.ok..x").exists()


def raw_request(server: JupyterServer, method: str, path: str, body: bytes) -> Response:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(server.url + path, data=body, method=method)
    request.add_header("Authorization", f"token {server.token}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return Response(answer.status, json.loads(answer.read() or b"null"))
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return Response(error.code, json.loads(raw))
        except ValueError:
            return Response(error.code, raw.decode(errors="replace"))


def body_of(config: Any) -> bytes:
    return json.dumps({"display_name": "Probe", "config": config}).encode()


# (endpoint, body, status, words of the message); GOOD stands for a valid launch configuration.
BAD_BODIES = [
    pytest.param("validate", json.dumps({"image": "/x" * 40000}).encode(), 413, "over 64 KiB", id="validate-80KB"),
    pytest.param("kernelspec", body_of({"image": "/x" * 40000}), 413, "over 64 KiB", id="kernelspec-80KB"),
    pytest.param("validate", b"x" * (10 * 1024 * 1024), 413, "over 64 KiB", id="validate-10MB"),
    pytest.param("validate", b"{not json", 400, "not JSON", id="validate-not-json"),
    pytest.param("kernelspec", b"{not json", 400, "not JSON", id="kernelspec-not-json"),
    pytest.param("validate", b'["image"]', 400, "must be a JSON object", id="validate-array"),
    pytest.param("kernelspec", b'"image"', 400, "must be a JSON object", id="kernelspec-string"),
    pytest.param(
        "kernelspec",
        b'{"display_name": "' + b"x" * 200 + b'", "config": GOOD}',
        400,
        "display name must be 1 to 128",
        id="kernelspec-long-display-name",
    ),
    pytest.param(
        "kernelspec",
        b'{"display_name": ["x"], "config": GOOD}',
        400,
        "display_name must be text",
        id="kernelspec-display-name-array",
    ),
    # Malformed in ways json.loads does not call JSONDecodeError: still the client's mistake, a 400 saying so.
    pytest.param("validate", b"[" * 30000 + b"]" * 30000, 400, "JSON", id="validate-nested-30000-deep"),
    pytest.param("validate", b'{"image": "\xff\xfe"}', 400, "JSON", id="validate-not-utf8"),
    pytest.param("validate", b'{"cpus_per_task": ' + b"9" * 5000 + b"}", 400, "", id="validate-5000-digit-int"),
    # PUT's "config" must be an object too (validate's whole body is checked to be one).
    pytest.param("kernelspec", body_of("image"), 400, "config", id="kernelspec-config-string"),
    pytest.param("kernelspec", body_of(["image"]), 400, "config", id="kernelspec-config-array"),
    pytest.param("kernelspec", body_of(None), 400, "config", id="kernelspec-config-null"),
    pytest.param("kernelspec", body_of(5), 400, "config", id="kernelspec-config-number"),
]


@pytest.mark.parametrize(("endpoint", "body", "status", "words"), BAD_BODIES)
def test_bad_bodies_are_refused_and_never_crash_the_handler(
    jupyter_server: JupyterServer,
    slurm_cluster: LocalCluster,
    nothing_written: Callable[[], None],
    endpoint: str,
    body: bytes,
    status: int,
    words: str,
) -> None:
    method, path = (
        ("POST", "/asgard/api/validate") if endpoint == "validate" else ("PUT", f"/asgard/api/kernelspecs/{SPEC_NAME}")
    )
    good = json.dumps(good_config(slurm_cluster)).encode()
    answer = raw_request(jupyter_server, method, path, body.replace(b"GOOD", good))
    assert answer.status == status, answer.body
    assert isinstance(answer.body, dict) and words in answer.message, answer.body
    assert jupyter_server.request("GET", f"/asgard/api/kernelspecs/{SPEC_NAME}").status == 404
    nothing_written()


# --- no shell anywhere ----------------------------------------------------------------------------------------

SHELL_CALLS = {
    ("os", "system"),
    ("os", "popen"),
    ("subprocess", "getoutput"),
    ("subprocess", "getstatusoutput"),
    ("asyncio", "create_subprocess_shell"),
}
PROCESS_CALLS = {
    "run",
    "Popen",
    "call",
    "check_call",
    "check_output",
    "create_subprocess_exec",
    "execv",
    "execvp",
    "execvpe",
    "spawnv",
    "spawnvp",
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def shell_uses(source: str, filename: str) -> list[str]:
    """Calls that run a shell or hand a command over as one string."""
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and node.attr == "create_subprocess_shell":
            found.append(f"{filename}:{node.lineno}: create_subprocess_shell")
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if tuple(name.rsplit(".", 1)[-2:]) in SHELL_CALLS or name in ("system", "popen", "getoutput"):
            found.append(f"{filename}:{node.lineno}: {name}()")
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant) and not keyword.value.value):
                found.append(f"{filename}:{node.lineno}: {name}(shell=...)")
        if (
            name.rsplit(".", 1)[-1] in PROCESS_CALLS
            and node.args
            and (
                isinstance(node.args[0], ast.JoinedStr)
                or (
                    isinstance(node.args[0], ast.Constant)
                    and isinstance(node.args[0].value, str)
                    and " " in node.args[0].value
                )
            )
        ):
            found.append(f"{filename}:{node.lineno}: {name}() with the command as one string")
    return found


def test_no_subprocess_goes_through_a_shell() -> None:
    package = Path(jupyter_asgard.__file__).parent
    sources = sorted(package.rglob("*.py"))
    assert len(sources) > 20
    found = [use for path in sources for use in shell_uses(path.read_text(), str(path.relative_to(package)))]
    assert found == []
    # Every process the package starts, found by the same walk, so the check cannot pass by looking nowhere.
    starters = [
        f"{path.name}:{node.lineno}"
        for path in sources
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and _dotted(node.func).rsplit(".", 1)[-1] in PROCESS_CALLS
    ]
    assert len(starters) >= 4, starters
    # And the checker itself notices what it must.
    assert (
        shell_uses(
            "import os, subprocess, asyncio\nos.system('id')\nsubprocess.run('id -u', shell=True)\n"
            "asyncio.create_subprocess_shell('id')\nsubprocess.Popen(f'{x} y')\n",
            "probe.py",
        )
        != []
    )
    assert len(shell_uses("subprocess.run('id', shell=True)\nos.system('x')\n", "p.py")) == 2
