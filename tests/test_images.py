"""Container image discovery: squashfs names in both naming schemes, directory scans, configured registry images."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from traitlets.config import Config

from jupyter_asgard.containers import images
from jupyter_asgard.containers.images import (
    MANIFEST_LIMIT,
    ImageFile,
    ImageName,
    format_size,
    parse_image_filename,
    parse_image_uri,
    registry_images,
    scan_image_dirs,
)
from jupyter_asgard.site.site import AsgardSite

# 2024-01-02T03:04:05Z
MTIME = 1704164645.0

# --- file names -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        # Asgard's site naming: registry kept, fields joined with '_'.
        ("nvcr.io_nvidia_pytorch_23.12-py3.sqsh", ImageName("nvcr.io", "nvidia/pytorch", "23.12-py3")),
        ("ghcr.io_org_team_app_v1.2.sqsh", ImageName("ghcr.io", "org/team/app", "v1.2")),
        (
            "registry.example.com:5000_ml_base_2024.01.sqsh",
            ImageName("registry.example.com:5000", "ml/base", "2024.01"),
        ),
        ("ubuntu_22.04.sqsh", ImageName("", "ubuntu", "22.04")),
        ("nvidia_cuda_12.2.0-devel-ubuntu22.04.sqsh", ImageName("", "nvidia/cuda", "12.2.0-devel-ubuntu22.04")),
        # Two fields: the first is the repository even when it has a dot, or no repository would be left.
        ("python3.11_slim.sqsh", ImageName("", "python3.11", "slim")),
        # enroot's default naming: registry dropped, '/' and the tag separator became '+'.
        ("nvidia+pytorch+23.12-py3.sqsh", ImageName("", "nvidia/pytorch", "23.12-py3")),
        ("nvidia+pytorch+24.05-py3.sqsh", ImageName("", "nvidia/pytorch", "24.05-py3")),
        ("ubuntu+22.04.sqsh", ImageName("", "ubuntu", "22.04")),
        ("my_org+my_app+1.0.sqsh", ImageName("", "my_org/my_app", "1.0")),
        # enroot's naming with the registry kept as the first field.
        ("nvcr.io+nvidia+pytorch+23.12-py3.sqsh", ImageName("nvcr.io", "nvidia/pytorch", "23.12-py3")),
        # enroot's dockerd:// and podman:// imports turn a registry's port ':' into '+' too.
        ("registry.example.com+5000+ml+base+1.0.sqsh", ImageName("registry.example.com:5000", "ml/base", "1.0")),
        # Neither scheme: listed under the bare name.
        ("my-env.sqsh", ImageName("", "my-env", "")),
        ("ubuntu.sqsh", ImageName("", "ubuntu", "")),
        ("a__b.sqsh", ImageName("", "a__b", "")),
        ("_x.sqsh", ImageName("", "_x", "")),
        ("x+.sqsh", ImageName("", "x+", "")),
    ],
)
def test_parse_image_filename(filename: str, expected: ImageName) -> None:
    assert parse_image_filename(filename) == expected


@pytest.mark.parametrize("filename", ["notes.txt", "image.squashfs", "image.sqsh.tmp", "image.SQSH", "sqsh", ".sqsh"])
def test_parse_image_filename_refuses_non_squashfs(filename: str) -> None:
    assert parse_image_filename(filename) is None


@pytest.mark.parametrize(
    ("name", "uri", "display"),
    [
        (
            ImageName("nvcr.io", "nvidia/pytorch", "23.12-py3"),
            "docker://nvcr.io#nvidia/pytorch:23.12-py3",
            "nvcr.io/nvidia/pytorch:23.12-py3",
        ),
        (ImageName("", "ubuntu", "22.04"), "docker://ubuntu:22.04", "ubuntu:22.04"),
        (ImageName("", "my-env", ""), "docker://my-env", "my-env"),
        (ImageName("localhost:5000", "app", ""), "docker://localhost:5000#app", "localhost:5000/app"),
        (
            ImageName("nvcr.io", "nvidia/pytorch", "24.05-py3", "sha256:ab"),
            "docker://nvcr.io#nvidia/pytorch:24.05-py3@sha256:ab",
            "nvcr.io/nvidia/pytorch:24.05-py3@sha256:ab",
        ),
    ],
)
def test_image_name_uri_and_display(name: ImageName, uri: str, display: str) -> None:
    assert (name.uri, name.display) == (uri, display)


# --- sizes and JSON ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KB"),
        (512 * 1024**2, "512 MB"),
        (int(19.4 * 1024**3), "19.4 GB"),
        (99 * 1024**3, "99.0 GB"),
        (3 * 1024**4, "3.0 TB"),
        (2048 * 1024**5, "2048 PB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


def test_image_file_json() -> None:
    image = ImageFile(
        "/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh",
        ImageName("nvcr.io", "nvidia/pytorch", "23.12-py3"),
        int(19.4 * 1024**3),
        MTIME,
    )
    assert image.to_json() == {
        "path": "/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh",
        "uri": "docker://nvcr.io#nvidia/pytorch:23.12-py3",
        "display": "nvcr.io/nvidia/pytorch:23.12-py3",
        "registry": "nvcr.io",
        "repository": "nvidia/pytorch",
        "tag": "23.12-py3",
        "size": 20830591385,
        "size_text": "19.4 GB",
        "modified": "2024-01-02T03:04:05+00:00",
        "kind": "squashfs",
    }


# --- directory scans --------------------------------------------------------------------------


def make_image(path: Path, size: int = 0) -> Path:
    path.write_bytes(b"\0" * size)
    os.utime(path, (MTIME, MTIME))
    return path


def test_scan_lists_squashfs_files_sorted_by_display_name(tmp_path: Path) -> None:
    shared, own = tmp_path / "enroot", tmp_path / "home"
    shared.mkdir()
    own.mkdir()
    make_image(shared / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh", 3)
    make_image(shared / "ubuntu_22.04.sqsh")
    make_image(own / "nvidia+pytorch+24.05-py3.sqsh", 5)
    make_image(own / "my-env.sqsh", 1)
    make_image(own / "README.txt")

    found, notes = scan_image_dirs([str(shared), str(own)])

    assert notes == []
    assert [(image.name.display, image.path, image.size, image.modified) for image in found] == [
        ("my-env", str(own / "my-env.sqsh"), 1, MTIME),
        ("nvcr.io/nvidia/pytorch:23.12-py3", str(shared / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh"), 3, MTIME),
        ("nvidia/pytorch:24.05-py3", str(own / "nvidia+pytorch+24.05-py3.sqsh"), 5, MTIME),
        ("ubuntu:22.04", str(shared / "ubuntu_22.04.sqsh"), 0, MTIME),
    ]


def test_scan_orders_equal_names_by_path(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    make_image(second / "ubuntu_22.04.sqsh")
    make_image(first / "ubuntu+22.04.sqsh")

    found, _ = scan_image_dirs([str(second), str(first)])

    assert [image.path for image in found] == [str(first / "ubuntu+22.04.sqsh"), str(second / "ubuntu_22.04.sqsh")]


def test_scan_follows_symlinks_to_files_only_and_does_not_recurse(tmp_path: Path) -> None:
    target = make_image(tmp_path / "elsewhere.bin", 7)
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    (images_dir / "ubuntu_22.04.sqsh").symlink_to(target)
    (images_dir / "gone_1.0.sqsh").symlink_to(tmp_path / "missing")
    (images_dir / "dir_1.0.sqsh").mkdir()
    (images_dir / "nested").mkdir()
    make_image(images_dir / "nested" / "deep_1.0.sqsh")

    found, notes = scan_image_dirs([str(images_dir)])

    assert notes == []
    assert [(image.path, image.size) for image in found] == [(str(images_dir / "ubuntu_22.04.sqsh"), 7)]


def test_scan_notes_missing_and_unusable_directories(tmp_path: Path) -> None:
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    make_image(images_dir / "ubuntu_22.04.sqsh")
    a_file = make_image(tmp_path / "file")

    found, notes = scan_image_dirs([str(tmp_path / "missing"), str(images_dir), str(a_file)])

    assert [image.path for image in found] == [str(images_dir / "ubuntu_22.04.sqsh")]
    assert notes == [
        f"image directory {tmp_path / 'missing'} does not exist",
        f"image directory {a_file} is not a directory",
    ]


def test_scan_notes_unreadable_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The tests may run as root, whom file modes do not stop: refuse the way the kernel would.
    real_scandir = os.scandir

    def scandir(path: str):
        if path == "/enroot":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(images.os, "scandir", scandir)
    assert scan_image_dirs(["/enroot"]) == ([], ["image directory /enroot is not readable: Permission denied"])


def test_scan_survives_files_vanishing_mid_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_image(tmp_path / "kept_1.0.sqsh")
    vanishing = make_image(tmp_path / "vanishing_1.0.sqsh")
    real_scandir = os.scandir

    def scandir(path: str):
        with real_scandir(path) as entries:
            listed = list(entries)
        vanishing.unlink()  # removed between the listing and the stat
        return contextlib.nullcontext(listed)

    monkeypatch.setattr(images.os, "scandir", scandir)
    found, notes = scan_image_dirs([str(tmp_path)])
    assert ([image.path for image in found], notes) == ([str(tmp_path / "kept_1.0.sqsh")], [])


def test_scan_lists_a_directory_given_twice_once(tmp_path: Path) -> None:
    make_image(tmp_path / "ubuntu_22.04.sqsh")
    found, _ = scan_image_dirs([str(tmp_path), str(tmp_path)])
    assert len(found) == 1


def test_scan_of_nothing() -> None:
    assert scan_image_dirs([]) == ([], [])


def test_scan_leaves_out_a_directory_others_can_write_and_says_how_to_fix_it(tmp_path: Path) -> None:
    """Anyone could put a trojan there under a saved image's name, or swap one."""
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    make_image(shared / "my-env.sqsh")
    found, notes = scan_image_dirs([str(shared)])
    assert found == []
    assert notes == [
        f"image directory {shared} is not listed: {shared} can be written by other users (mode drwxrwxrwx): make "
        f"it yours alone (chmod go-w {shared}), or use a directory of your own"
    ]


# --- manifests beside saved images: read only if a small regular file, never waited for ----------------------

LISTING = (
    "import json, sys\n"
    "from jupyter_asgard.containers.images import scan_image_dirs\n"
    "found, notes = scan_image_dirs([sys.argv[1]])\n"
    "print(json.dumps([[image.path, image.manifest] for image in found]))\n"
)


def _limited_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))


def listed_apart(directory: Path) -> list[list[object]]:
    """The listing, in a process of its own with 1 GiB of memory and 20 s: a listing that reads a manifest
    without end fails here instead of taking the machine's memory or hanging the test run."""
    done = subprocess.run(
        [sys.executable, "-c", LISTING, str(directory)],
        capture_output=True,
        text=True,
        timeout=20,
        preexec_fn=_limited_memory,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_a_manifest_is_read_beside_its_image(tmp_path: Path) -> None:
    make_image(tmp_path / "env.sqsh")
    (tmp_path / "env.sqsh.json").write_text(json.dumps({"name": "env", "packages": ["numpy==2.0"]}))
    assert listed_apart(tmp_path) == [[str(tmp_path / "env.sqsh"), {"name": "env", "packages": ["numpy==2.0"]}]]


@pytest.mark.parametrize("kind", ["link to /dev/zero", "fifo", "oversized", "link to a good manifest"])
def test_a_manifest_that_is_no_small_regular_file_is_no_manifest(tmp_path: Path, kind: str) -> None:
    """Planted beside an image in a listed directory, none of them holds the listing up or takes its memory,
    and the image is listed as it is, without a manifest."""
    manifest = tmp_path / "env.sqsh.json"
    if kind == "link to /dev/zero":
        manifest.symlink_to("/dev/zero")
    elif kind == "fifo":
        os.mkfifo(manifest)
    elif kind == "oversized":
        manifest.write_text(json.dumps({"name": "env", "padding": "x" * MANIFEST_LIMIT}))
    else:
        (tmp_path / "elsewhere.json").write_text(json.dumps({"name": "env"}))
        manifest.symlink_to(tmp_path / "elsewhere.json")
    make_image(tmp_path / "env.sqsh")
    assert listed_apart(tmp_path) == [[str(tmp_path / "env.sqsh"), None]]


# --- configured registry images ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "user", "expected"),
    [
        ("docker://nvcr.io#nvidia/pytorch:23.12-py3", "", ImageName("nvcr.io", "nvidia/pytorch", "23.12-py3")),
        (
            "docker://alice@nvcr.io#nvidia/pytorch:23.12-py3",
            "alice",
            ImageName("nvcr.io", "nvidia/pytorch", "23.12-py3"),
        ),
        ("docker://$oauthtoken@nvcr.io#nvidia/pytorch", "$oauthtoken", ImageName("nvcr.io", "nvidia/pytorch", "")),
        ("docker://ubuntu:22.04", "", ImageName("", "ubuntu", "22.04")),
        ("docker://nvidia/cuda:12.2.0-base-ubuntu22.04", "", ImageName("", "nvidia/cuda", "12.2.0-base-ubuntu22.04")),
        (
            "docker://registry.example.com:5000#ml/base:1.0",
            "",
            ImageName("registry.example.com:5000", "ml/base", "1.0"),
        ),
        # Pyxis's --container-image form, without the scheme.
        ("nvcr.io#nvidia/pytorch:23.12-py3", "", ImageName("nvcr.io", "nvidia/pytorch", "23.12-py3")),
        ("ubuntu", "", ImageName("", "ubuntu", "")),
        # REGISTRY/IMAGE:TAG: a first component with a dot or a port is a registry.
        ("nvcr.io/nvidia/pytorch:23.12-py3", "", ImageName("nvcr.io", "nvidia/pytorch", "23.12-py3")),
        ("localhost:5000/app:dev", "", ImageName("localhost:5000", "app", "dev")),
        ("ghcr.io/org/tool", "", ImageName("ghcr.io", "org/tool", "")),
        ("  nvcr.io/nvidia/pytorch:23.12-py3  ", "", ImageName("nvcr.io", "nvidia/pytorch", "23.12-py3")),
        # Pinned to a manifest digest (enroot 4), with or without a tag; the digest's "@" is not a user's.
        (
            f"docker://nvcr.io#nvidia/pytorch:24.05-py3@sha256:{'a' * 64}",
            "",
            ImageName("nvcr.io", "nvidia/pytorch", "24.05-py3", f"sha256:{'a' * 64}"),
        ),
        (
            f"docker://alice@localhost:5000#app@sha256:{'0' * 64}",
            "alice",
            ImageName("localhost:5000", "app", "", f"sha256:{'0' * 64}"),
        ),
    ],
)
def test_parse_image_uri(uri: str, user: str, expected: ImageName) -> None:
    assert parse_image_uri(uri) == (user, expected)


def test_registry_images() -> None:
    assert registry_images(
        [
            "nvcr.io/nvidia/pytorch:23.12-py3",
            "docker://alice@ghcr.io#org/tool",
            "",
            "docker://",
            "nvcr.io#",
        ]
    ) == [
        {
            "path": "",
            "uri": "docker://nvcr.io#nvidia/pytorch:23.12-py3",
            "display": "nvcr.io/nvidia/pytorch:23.12-py3",
            "registry": "nvcr.io",
            "repository": "nvidia/pytorch",
            "tag": "23.12-py3",
            "size": None,
            "size_text": "",
            "modified": None,
            "kind": "registry",
        },
        {
            "path": "",
            "uri": "docker://alice@ghcr.io#org/tool",
            "display": "ghcr.io/org/tool",
            "registry": "ghcr.io",
            "repository": "org/tool",
            "tag": "",
            "size": None,
            "size_text": "",
            "modified": None,
            "kind": "registry",
        },
    ]


def test_registry_and_file_entries_share_their_keys(tmp_path: Path) -> None:
    make_image(tmp_path / "ubuntu_22.04.sqsh")
    found, _ = scan_image_dirs([str(tmp_path)])
    assert set(found[0].to_json()) == set(registry_images(["ubuntu:22.04"])[0])


async def test_a_listing_serves_within_its_cache_time_until_this_server_changes_an_image(tmp_path: Path) -> None:
    """One scan serves every listing within c.AsgardSite.images_cache_seconds (a refresh loop scans nothing);
    a save by this server (ImageSaves' images_changed) makes the next listing scan anew."""
    site = AsgardSite(config=Config({"AsgardSite": {"image_dirs": [str(tmp_path)], "images_cache_seconds": 3600}}))
    (tmp_path / "debian_12.sqsh").write_bytes(b"hsqs")
    listed = await site.images()
    (tmp_path / "my-env.sqsh").write_bytes(b"hsqs")
    assert await site.images() == listed
    site.forget_images()
    paths = [image["path"] for image in (await site.images())["images"]]
    assert paths == [str(tmp_path / "debian_12.sqsh"), str(tmp_path / "my-env.sqsh")]
