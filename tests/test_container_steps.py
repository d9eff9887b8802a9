"""The steps that join a running kernel's container, as pure commands (the cluster tests run them:
test_kernel_container.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from jupyter_asgard.containers.container_steps import (
    PACKAGES,
    container_job_argv,
    container_name_problem,
    container_problem,
    image_name_problem,
    manifest_path,
    packages_of,
    remove_container_argv,
    remove_container_command,
    save_argv,
    saved_image_path,
    terminal_argv,
)
from jupyter_asgard.server.kernel_terminals import terminal_env


def test_a_terminal_attaches_to_the_running_container_beside_the_kernel() -> None:
    assert terminal_argv("42", "gpu01", "jupyter-asgard-pytorch-1a2b", "/home/ada/work", ["bash", "-l"]) == [
        "srun",
        "--job-name=jupyter-terminal",
        "--jobid=42",
        "--nodelist=gpu01",
        "--nodes=1",
        "--ntasks=1",
        "--overlap",
        "--container-name=jupyter-asgard-pytorch-1a2b:exec",
        "--container-workdir=/home/ada/work",
        "--pty",
        "bash",
        "-l",
    ]


def test_a_save_exports_the_running_container_and_lists_its_packages() -> None:
    argv = save_argv("42", "gpu01", "env", "/netscratch/ada/images/env.sqsh")
    assert argv[:9] == [
        "srun",
        "--job-name=jupyter-save-image",
        "--jobid=42",
        "--nodelist=gpu01",
        "--nodes=1",
        "--ntasks=1",
        "--overlap",
        "--container-name=env:exec",
        "--container-save=/netscratch/ada/images/env.sqsh",
    ]
    assert argv[9:12] == ["python3", "-I", "-c"] and argv[12] == PACKAGES


def test_the_package_listing_runs_without_pip_and_reads_as_pip_freeze() -> None:
    listed = subprocess.run([sys.executable, "-I", "-c", PACKAGES], capture_output=True, text=True, check=True)
    packages = packages_of(listed.stdout)
    assert any(package.lower().startswith("pytest==") for package in packages)
    assert len({package.split("==")[0].lower() for package in packages}) == len(packages)  # each once
    assert packages == sorted(packages, key=str.lower)


@pytest.mark.parametrize("name", ["my-env", "torch2.1_cuda12", "A"])
def test_image_names_that_make_a_plain_file_name(name: str) -> None:
    assert image_name_problem(name) == ""


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "-x", "a b", "x" * 65, "env\n"])
def test_image_names_that_would_not(name: str) -> None:
    assert "is not allowed" in image_name_problem(name)


def test_where_a_saved_image_and_its_manifest_go() -> None:
    path = saved_image_path("/netscratch/ada/images", "env")
    assert (path, manifest_path(path)) == ("/netscratch/ada/images/env.sqsh", "/netscratch/ada/images/env.sqsh.json")


def test_a_terminal_gets_the_environment_a_kernel_step_gets() -> None:
    environ = {"PATH": "/srv/venv/bin:/usr/bin", "VIRTUAL_ENV": "/srv/venv", "HOME": "/home/ada", "JUPYTER_TOKEN": "t"}
    changes = terminal_env(environ)
    assert changes["VIRTUAL_ENV"] is None and changes["JUPYTER_TOKEN"] is None
    assert "HOME" not in changes  # kept as it is


def test_only_a_running_kernel_with_a_named_container_has_one_to_join() -> None:
    class Kernel:
        node, step, container = "gpu01", object(), "env"

    assert container_problem(Kernel(), "saved") == ""
    queued = Kernel()
    queued.node, queued.step = "", None
    assert "not running yet" in container_problem(queued, "saved")
    bare = Kernel()
    bare.container = ""
    assert "without a named container" in container_problem(bare, "opened in a terminal")


def test_a_half_made_container_is_removed_by_a_step_outside_any_container() -> None:
    argv = remove_container_argv("42", "gpu02", "my-env", srun="/opt/slurm/bin/srun")
    assert argv[0] == "/opt/slurm/bin/srun" and "--jobid=42" in argv and "--nodelist=gpu02" in argv
    assert "--overlap" in argv and not [arg for arg in argv if arg.startswith("--container")]
    assert argv[-4:] == ["enroot", "remove", "--force", "pyxis_my-env"]  # Pyxis's name for it (global scope)


def test_a_container_s_removal_is_a_job_of_its_own_on_its_node_that_fails_rather_than_queue() -> None:
    command = remove_container_command("my-env")
    argv = container_job_argv("jupyter-asgard-remove-1a2b", "jupyter-asgard:login1:42", "gpu02", "gpu", 10, command)
    assert argv == [
        "srun",
        "--job-name=jupyter-asgard-remove-1a2b",
        "--nodes=1",
        "--ntasks=1",
        "--comment=jupyter-asgard:login1:42",
        "--nodelist=gpu02",
        "--partition=gpu",
        "--time=10",
        "--immediate=60",
        "enroot",
        "remove",
        "--force",
        "pyxis_my-env",
    ]


def test_a_container_job_without_a_recorded_partition_leaves_it_to_slurm_and_asks_a_minute_at_least() -> None:
    argv = container_job_argv("name", "comment", "gpu01", "", 0, ["true"], srun="/opt/slurm/bin/srun")
    assert argv[0] == "/opt/slurm/bin/srun"
    assert not [arg for arg in argv if arg.startswith("--partition")] and "--time=1" in argv


@pytest.mark.parametrize("name", ["my-env", "jupyter-asgard-pytorch-1a2b3c4d", "torch2.1_cuda12", "..", "-x"])
def test_container_names_a_kernelspec_can_give_can_be_named_to_remove_them(name: str) -> None:
    assert container_name_problem(name) == ""


@pytest.mark.parametrize("name", ["", "env:no_exec", "a/b", "../x", "a b", "env\n", "ümlaut"])
def test_anything_else_never_reaches_enroot(name: str) -> None:
    assert "is not a container's name" in container_name_problem(name)
