"""Image imports without Slurm: the import job's command, a default name the image list reads back, the URI a
cached import pins, and what an import says in a status bar."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jupyter_asgard.containers.image_cache import ImageCache, cached_file, enroot_uri, is_registry_image
from jupyter_asgard.containers.image_dir import usable_dir
from jupyter_asgard.containers.image_import_progress import ImportProgress, cache_file_name
from jupyter_asgard.containers.image_imports import ImageImport, default_name
from jupyter_asgard.containers.images import parse_image_filename
from jupyter_asgard.errors import ImageRefused, KernelStartError
from jupyter_asgard.kernel.kernel_env import import_environment
from jupyter_asgard.node.importer import pinned
from jupyter_asgard.slurm.slurm_client import SlurmClient
from jupyter_asgard.slurm.slurm_commands import own_job_argv, srun_job_id

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("uri", "name", "listed_as"),
    [
        (
            "docker://nvcr.io#nvidia/pytorch:24.05-py3",
            "nvcr.io_nvidia_pytorch_24.05-py3",
            "nvcr.io/nvidia/pytorch:24.05-py3",
        ),
        ("docker://ubuntu", "ubuntu_latest", "ubuntu:latest"),
        ("docker://10.213.1.1:5000#tests/python:3", "10.213.1.1-5000_tests_python_3", "10.213.1.1-5000/tests/python:3"),
    ],
)
def test_an_import_named_by_default_is_listed_as_the_image_it_came_from(uri: str, name: str, listed_as: str) -> None:
    assert default_name(uri) == name
    listed = parse_image_filename(name + ".sqsh")
    assert listed is not None and listed.display == listed_as


def test_the_import_job_asks_for_the_sites_resources_and_leaves_out_what_it_does_not_set() -> None:
    argv = own_job_argv(
        "jupyter-asgard-import-1",
        "jupyter-asgard:login1:42",
        {"--partition": "", "--cpus-per-task": "4", "--mem": "8G", "--time": "2:00:00"},
        ["python3", "-c", "..."],
        srun="/usr/bin/srun",
    )
    assert argv == [
        "/usr/bin/srun",
        "--job-name=jupyter-asgard-import-1",
        "--nodes=1",
        "--ntasks=1",
        "--comment=jupyter-asgard:login1:42",
        "--cpus-per-task=4",
        "--mem=8G",
        "--time=2:00:00",
        "python3",
        "-c",
        "...",
    ]


@pytest.mark.parametrize(
    ("line", "job_id"),
    [
        ("srun: job 123 queued and waiting for resources", "123"),
        ("srun: job 123 has been allocated resources", "123"),
        ("srun: error: Unable to allocate resources: Invalid partition name specified", ""),
        ("asgard-import job 9 gpu01", ""),
    ],
)
def test_srun_names_the_job_only_when_it_waited(line: str, job_id: str) -> None:
    assert srun_job_id(line) == job_id


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh", False),
        ("./local.sqsh", False),
        ("docker://nvcr.io#nvidia/pytorch:24.05-py3", True),
        ("nvcr.io#nvidia/pytorch:24.05-py3", True),
        ("dockerd://local/image:1", False),
        ("", False),
    ],
)
def test_an_image_that_is_no_path_comes_from_a_registry(image: str, registry: bool) -> None:
    assert is_registry_image(image) is registry


def test_a_cached_import_pins_the_digest_the_tag_had_and_keeps_one_given() -> None:
    assert (
        pinned("docker://nvcr.io#nvidia/pytorch:24.05-py3", DIGEST)
        == f"docker://nvcr.io#nvidia/pytorch:24.05-py3@{DIGEST}"
    )
    assert pinned(enroot_uri("nvcr.io#nvidia/pytorch:24.05-py3"), DIGEST) == (
        f"docker://nvcr.io#nvidia/pytorch:24.05-py3@{DIGEST}"
    )
    given = f"docker://nvcr.io#nvidia/pytorch@{DIGEST}"
    assert pinned(given, "sha256:" + "cd" * 32) == given


def test_the_status_line_says_where_an_import_is_and_how_it_ended() -> None:
    found = ImageImport("1", "docker://x#y:z", "y", "/images/y.sqsh")
    assert found.status() == "submitting the import job"
    found.job_id = "17"
    assert found.status() == "waiting in the Slurm queue (job 17)"
    found.state = "imported"
    assert found.status() == "imported as /images/y.sqsh"
    found.state, found.message = "failed", "the registry refused your credentials"
    assert found.status() == "the registry refused your credentials"
    assert not found.running and found.to_json()["status"] == found.message


def test_a_cache_directory_others_can_write_is_refused_and_a_link_in_it_is_no_cached_image(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(ImageRefused, match="not safe to write images in"):
        usable_dir(str(shared), "image_cache_dir")
    cache = tmp_path / "cache"
    usable_dir(str(cache), "image_cache_dir")
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    planted = cache / f"sha256-{'ab' * 32}.sqsh"
    planted.symlink_to(tmp_path / "elsewhere.sqsh")
    (tmp_path / "elsewhere.sqsh").write_bytes(b"hsqs")
    assert not cached_file(str(planted))  # a kernel would run what the link points at
    planted.unlink()
    planted.write_bytes(b"hsqs")
    assert cached_file(str(planted))


def test_an_imports_srun_gets_the_users_enroot_settings_but_no_container_or_job_of_the_servers() -> None:
    server = {
        "PATH": "/usr/bin:/bin",
        "ENROOT_CONFIG_PATH": "/home/ada/.config/enroot",
        "PYXIS_CONTAINER_IMAGE": "/enroot/other.sqsh",  # would run enroot itself in a container
        "SLURM_JOB_ID": "7",  # a server that runs in a job: srun would make the import a step of it
        "SLURM_CONF": "/etc/slurm/slurm.conf",
    }
    env = import_environment(server)
    assert env["ENROOT_CONFIG_PATH"] == "/home/ada/.config/enroot" and env["SLURM_CONF"] == "/etc/slurm/slurm.conf"
    assert "PYXIS_CONTAINER_IMAGE" not in env and "SLURM_JOB_ID" not in env


async def test_a_cached_name_something_else_holds_fails_the_start_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever takes the cache's name for a digest (a directory, a link) is never run, and the start does not
    wait on it: it fails saying what to remove. The digest is what the node's lookup would have said."""
    digest = "sha256:" + "cd" * 32
    (tmp_path / cache_file_name(digest)).mkdir()

    async def looked_up(*_args: object) -> str:
        return digest

    cache = ImageCache(SlurmClient(), str(tmp_path), "python3", {})
    monkeypatch.setattr(cache, "_digest", looked_up)
    with pytest.raises(KernelStartError, match="is in the way, and is no image file of yours"):
        await asyncio.wait_for(cache.image_for("1", "gpu01", "docker://r#i:t", ImportProgress()), 10)
