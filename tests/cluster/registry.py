"""A real container registry for the test cluster, with token authentication as nvcr.io uses it.

Debian's ``docker-registry`` (the CNCF distribution registry 2.8) serves the suite's test images over plain
HTTP; its ``auth: token:`` settings send clients to ``token_server.py`` beside this file, which checks a
user name and password and hands out JWTs signed with a key made for each registry at its start.  So
enroot on a node pulls from it as from NGC: ``401`` with a token realm, a token for the user's
``.credentials``, then the manifest and layers; a wrong password or a missing tag fails with NGC's status.

The images are the squashfs images of ``images.py``, the same root filesystems, made OCI images without a
Docker daemon (``umoci``: one layer each, the recipe's ``ENV``, and the ``history`` entry enroot needs) and
pushed as Docker v2 schema 2 (``skopeo copy --format v2s2``: enroot's first manifest request sends no
``Accept`` header, and registry 2.8 answers that with 404 for an OCI manifest).  Both the OCI layout and
a registry storage holding all the pushed images are built once per machine and cached beside the
squashfs images; a cluster's registry starts from hard links to the cached storage's blobs (which the
registry never rewrites) and a copy of its small tag and link files (which it does), so a start pushes
nothing.  The tiny image (images.py's ``TINY_RECIPE``: files in three layers) has an OCI layout and a
storage of its own, keyed by its own recipe, which a cluster's registry starts from too.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from .images import CACHE, RECIPE_HASH, RECIPES, TINY, TINY_RECIPE, ImageBuildError, _run, ensure_images, write_files

REGISTRY_COMMANDS = ("docker-registry", "skopeo", "umoci", "openssl")
SERVICE = "asgard-test-registry"  # the registry's name in its tokens (auth.token.service)
ISSUER = "asgard-test-token-server"
PULL_USER = "asgard-tester"  # the tests' researcher, who may pull, as with an NGC API key
PUSH_USER = "asgard-publisher"  # the cluster's own pushes
ACTIONS = {PULL_USER: ["pull"], PUSH_USER: ["pull", "push"]}
TOKEN_SERVER = Path(__file__).resolve().with_name("token_server.py")
# Where each test image stands in the registry: the Jupyter-ready one under NGC's name, as its squashfs.
REFERENCES = {
    "python-ipykernel": "nvidia/pytorch:23.12-py3",
    "python": "library/debian:12",
    "python-ipykernel7": "jupyter/ipykernel:7.4.0",
}
IMAGE_CMD = "/bin/bash"  # what Debian's images run; enroot writes it into the container's /etc/rc
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"  # v2 schema 2, as pushed
V2 = Path("docker/registry/v2")  # the registry's files below its storage root
# What the cached layout and storage are, besides the squashfs images (their own directory): a change to any
# of it builds them anew.
REGISTRY_HASH = hashlib.sha256(json.dumps([REFERENCES, IMAGE_CMD, "v2s2"], sort_keys=True).encode()).hexdigest()[:12]
TINY_REFERENCE = "asgard/tiny:1.0"
TINY_HASH = hashlib.sha256(
    json.dumps([asdict(TINY_RECIPE), TINY_REFERENCE, IMAGE_CMD, "v2s2"], sort_keys=True).encode()
).hexdigest()[:12]


def oci_layout() -> Path:
    """The cached OCI layout: one tag per test image, named as its recipe."""
    return CACHE / RECIPE_HASH / f"oci-{REGISTRY_HASH}"


def seed_storage() -> Path:
    """The cached registry storage with every test image pushed under its REFERENCES name."""
    return CACHE / RECIPE_HASH / f"registry-{REGISTRY_HASH}"


def tiny_directory() -> Path:
    """The tiny image's cached OCI layout (`oci`) and registry storage (`registry`)."""
    return CACHE / f"tiny-{TINY_HASH}"


def layout_of(image: str) -> Path:
    """The cached OCI layout that holds test image `image` (a recipe of images.py) under its name."""
    return tiny_directory() / "oci" if image == TINY else oci_layout()


def ensure_registry_images() -> list[Path]:
    """The cached registry storages (the squashfs images', the tiny image's), built first where missing (one
    build at a time per machine)."""
    return [_ensure_squashfs_images_storage(), _ensure_tiny_storage()]


def _ensure_tiny_storage() -> Path:
    layout, seed = layout_of(TINY), tiny_directory() / "registry"
    if layout.is_dir() and seed.is_dir():
        return seed
    _check_build_prerequisites(seed, REGISTRY_COMMANDS)
    with open(CACHE / "registry.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not layout.is_dir():
            _build_tiny_layout(layout)
        if not seed.is_dir():
            _build_seed(layout, seed, {TINY: TINY_REFERENCE})
        for entry in CACHE.iterdir():  # the tiny image of an older recipe
            if entry.is_dir() and entry.name.startswith("tiny-") and entry != tiny_directory():
                shutil.rmtree(entry, ignore_errors=True)
    return seed


def _check_build_prerequisites(seed: Path, commands: tuple[str, ...]) -> None:
    if os.geteuid() != 0:
        raise ImageBuildError(f"the test registry's images are not built yet ({seed}): run `./dev/install` as root")
    missing = [tool for tool in commands if shutil.which(tool) is None]
    if missing:
        raise ImageBuildError(f"missing {', '.join(missing)}: run ./dev/install")


def _ensure_squashfs_images_storage() -> Path:
    layout, seed = oci_layout(), seed_storage()
    if layout.is_dir() and seed.is_dir():
        return seed
    squashfs = ensure_images()
    _check_build_prerequisites(seed, ("unsquashfs", *REGISTRY_COMMANDS))
    with open(CACHE / "registry.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not layout.is_dir():
            _build_layout(squashfs, layout)
        if not seed.is_dir():
            _build_seed(layout, seed, REFERENCES)
        _remove_other_builds()
    return seed


def _remove_other_builds() -> None:
    """Layouts and storages of an older REGISTRY_HASH beside the squashfs images are never used again (images.py
    removes those of older squashfs recipes, with their directory)."""
    current = (oci_layout(), seed_storage())
    for entry in (CACHE / RECIPE_HASH).iterdir():
        if entry.is_dir() and entry.name.startswith(("oci-", "registry-")) and entry not in current:
            shutil.rmtree(entry, ignore_errors=True)


def _build_layout(squashfs: dict[str, Path], layout: Path) -> None:
    """Each squashfs image's root filesystem, unpacked, as the one layer of an OCI image with its recipe's ENV."""
    with tempfile.TemporaryDirectory(prefix="asgard-oci-", dir=CACHE) as work:
        partial = Path(work) / "oci"
        _run("umoci", "init", "--layout", str(partial))
        for name, recipe in RECIPES.items():
            rootfs, image = Path(work) / name, f"{partial}:{name}"
            _run("unsquashfs", "-no-progress", "-quiet", "-d", str(rootfs), str(squashfs[name]))
            _run("umoci", "new", "--image", image)
            history = f"--history.created_by=asgard test image {name}"  # the history entry enroot needs
            _run("umoci", "insert", "--image", image, history, str(rootfs), "/")
            env = [f"--config.env={key}={value}" for key, value in recipe.env.items()]
            _run("umoci", "config", "--image", image, *env, f"--config.cmd={IMAGE_CMD}")
            shutil.rmtree(rootfs)
        _run("umoci", "gc", "--layout", str(partial))  # the manifests and configs umoci config replaced
        partial.rename(layout)


def _build_tiny_layout(layout: Path) -> None:
    """The tiny image: a layer per TINY_RECIPE layer (its files, or the whiteout of a path), with its ENV.

    The layers are tar files of this process, added as they are: umoci 0.4.7's own `insert` cuts a small
    layer's tar short (the last file's padding and the end-of-archive blocks are missing), which tar refuses."""
    with tempfile.TemporaryDirectory(prefix="asgard-oci-", dir=CACHE) as work:
        partial = Path(work) / "oci"
        _run("umoci", "init", "--layout", str(partial))
        image = f"{partial}:{TINY}"
        _run("umoci", "new", "--image", image)
        for number, layer in enumerate(TINY_RECIPE.layers, start=1):
            files = Path(work) / f"layer-{number}"
            if isinstance(layer, str):  # a whiteout: an empty .wh.NAME beside the removed path
                directory, _, name = layer.strip("/").rpartition("/")
                write_files(files, {f"{directory}/.wh.{name}".lstrip("/"): ""})
            else:
                write_files(files, layer)
            archive = Path(work) / f"layer-{number}.tar"
            with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as tar:
                for path in sorted(files.rglob("*")):
                    tar.add(path, arcname=str(path.relative_to(files)), recursive=False, filter=_reproducible)
            history = f"--history.created_by=asgard test image {TINY}, layer {number}"  # enroot needs one
            _run("umoci", "raw", "add-layer", "--image", image, history, str(archive))
        env = [f"--config.env={key}={value}" for key, value in TINY_RECIPE.env.items()]
        _run("umoci", "config", "--image", image, *env, f"--config.cmd={IMAGE_CMD}")
        _run("umoci", "gc", "--layout", str(partial))
        layout.parent.mkdir(parents=True, exist_ok=True)
        partial.rename(layout)


def _reproducible(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """A layer member owned by root, dated 2024-01-01, as each build makes it."""
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    member.mtime = 1704067200
    return member


def _build_seed(layout: Path, seed: Path, references: dict[str, str]) -> None:
    """The test images of layout pushed as their references (name: REPO:TAG), through a registry of its own
    with token authentication, into a storage kept."""
    with tempfile.TemporaryDirectory(prefix="asgard-registry-", dir=CACHE) as work:
        registry = Registry(Path(work) / "registry", "127.0.0.1", _free_port(), _free_port())
        registry.prepare(seeds=[])
        with _running(registry):
            for name, reference in references.items():
                registry.push(name, reference)
        registry.storage.rename(seed)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def _running(registry: Registry) -> Iterator[None]:
    """registry and its token server, as processes of this one, for as long as the block runs."""
    logs = registry.directory / "logs"
    logs.mkdir(exist_ok=True)
    processes = []
    try:
        for name, argv in (("registry", registry.registry_argv()), ("token-server", registry.token_server_argv())):
            with open(logs / f"{name}.log", "ab") as log:
                processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        while not registry.ready():
            if time.monotonic() > deadline or any(process.poll() is not None for process in processes):
                output = "\n".join(f"--- {path.name}:\n{path.read_text()[-2000:]}" for path in logs.iterdir())
                raise ImageBuildError(f"building the test registry's images: it did not start; logs:\n{output}")
            time.sleep(0.05)
        yield
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def _link_or_copy(source: str, destination: str) -> None:
    """A blob file of the cached storage into a cluster's: a hard link (the registry writes a blob once, under
    a new name, and never rewrites it), a copy where the cache is on another file system."""
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


def _answers(url: str, status: int) -> bool:
    """Whether url answers with status (the registry's and the token server's 401 to a request without
    credentials: both are up and read their settings)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status) == status
    except urllib.error.HTTPError as error:
        return error.code == status
    except OSError:
        return False


@dataclass(frozen=True)
class Registry:
    """One registry and its token server: their files below directory, their addresses and accounts."""

    directory: Path
    host: str
    port: int
    token_port: int

    @property
    def address(self) -> str:
        """HOST:PORT, as in an enroot URI (docker://HOST:PORT#REPO:TAG) or skopeo's docker://HOST:PORT/REPO:TAG."""
        return f"{self.host}:{self.port}"

    @property
    def storage(self) -> Path:
        return self.directory / "storage"

    @property
    def config(self) -> Path:
        return self.directory / "registry.json"

    @property
    def token_config(self) -> Path:
        return self.directory / "token-server.json"

    @property
    def realm(self) -> str:
        return f"http://{self.host}:{self.token_port}/token"

    def uri(self, reference: str) -> str:
        """The enroot URI of REPO:TAG in this registry."""
        return f"docker://{self.address}#{reference}"

    def password(self, user: str) -> str:
        return str(json.loads(self.token_config.read_text())["passwords"][user])

    def netrc(self, password: str | None = None) -> str:
        """An enroot .credentials line for the tests' user (netrc form; enroot and curl match the machine by
        host name, without the port, which covers the token server on the same host)."""
        password = self.password(PULL_USER) if password is None else password
        return f"machine {self.host} login {PULL_USER} password {password}\n"

    def prepare(self, seeds: list[Path]) -> None:
        """Everything the registry and token server read: a signing key and its certificate made now, the
        accounts with fresh passwords, both daemons' settings, and the storage (from seeds: the cached ones)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)  # the key and the passwords
        key, certificate = self.directory / "token-key.pem", self.directory / "token-cert.pem"
        # ES256: an EC key takes milliseconds to make, an RSA key up to half a second of every cluster start.
        _run(
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
            "-subj",
            f"/CN={ISSUER}",
            "-days",
            "30",
        )
        token_settings = {
            "host": self.host,
            "port": self.token_port,
            "service": SERVICE,
            "issuer": ISSUER,
            "key": str(key),
            "certificate": str(certificate),
            "passwords": {user: secrets.token_urlsafe(16) for user in ACTIONS},
            "actions": ACTIONS,
        }
        self.token_config.write_text(json.dumps(token_settings, indent=1))
        # JSON is YAML: the registry reads it as its config.yml.
        registry_settings = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "fields": {"service": "registry"}},
            "storage": {"filesystem": {"rootdirectory": str(self.storage)}, "delete": {"enabled": True}},
            "http": {"addr": self.address, "secret": secrets.token_hex(16)},
            "auth": {
                "token": {"realm": self.realm, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(certificate)}
            },
        }
        self.config.write_text(json.dumps(registry_settings, indent=1))
        if not self.storage.exists():
            for seed in seeds:
                blobs, repositories = self.storage / V2 / "blobs", self.storage / V2 / "repositories"
                shutil.copytree(seed / V2 / "blobs", blobs, copy_function=_link_or_copy, dirs_exist_ok=True)
                shutil.copytree(seed / V2 / "repositories", repositories, dirs_exist_ok=True)

    def registry_argv(self) -> list[str]:
        return ["docker-registry", "serve", str(self.config)]

    def token_server_argv(self) -> list[str]:
        return [sys.executable, str(TOKEN_SERVER), str(self.token_config)]

    def ready(self) -> bool:
        """Whether the registry and the token server both answer."""
        return all(_answers(url, 401) for url in (f"http://{self.address}/v2/", f"{self.realm}?service={SERVICE}"))

    def digest(self, reference: str, user: str = PULL_USER) -> str:
        """The manifest digest REPO:TAG reference has now, asked as a client asks (a token for user, then the
        manifest's HEAD, for Docker v2 schema 2, as pushed)."""
        repository, _, tag = reference.rpartition(":")
        query = urllib.parse.urlencode({"service": SERVICE, "scope": f"repository:{repository}:pull"})
        basic = base64.b64encode(f"{user}:{self.password(user)}".encode()).decode()
        token_request = urllib.request.Request(f"{self.realm}?{query}", headers={"Authorization": f"Basic {basic}"})
        with urllib.request.urlopen(token_request, timeout=10) as response:
            token = json.load(response)["token"]
        manifest = urllib.request.Request(
            f"http://{self.address}/v2/{repository}/manifests/{tag}",
            method="HEAD",
            headers={"Authorization": f"Bearer {token}", "Accept": DOCKER_MANIFEST},
        )
        with urllib.request.urlopen(manifest, timeout=10) as response:
            return str(response.headers["Docker-Content-Digest"])

    def push(self, image: str, reference: str) -> None:
        """The test image named image (a recipe of images.py) pushed as REPO:TAG reference, as the cluster's
        publisher, in Docker v2 schema 2; over an existing tag, the tag moves to it (a new digest)."""
        _run(
            "skopeo",
            "copy",
            "--quiet",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
            "--dest-creds",
            f"{PUSH_USER}:{self.password(PUSH_USER)}",
            f"oci:{layout_of(image)}:{image}",
            f"docker://{self.address}/{reference}",
        )
