"""The step's container name and mounts as the provisioner and the panel's preview derive them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from jupyter_asgard.containers.container_starts import ContainerStarts
from jupyter_asgard.containers.launch_plan import (
    container_base_name,
    container_name,
    kernel_step_argv,
    step_mounts,
    workdir_problems,
)
from jupyter_asgard.containers.step_failures import summarize
from jupyter_asgard.launch.launch_config import LaunchConfig

IMAGE = "/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh"


def config(**values: object) -> LaunchConfig:
    return LaunchConfig.parse({"image": IMAGE, **values}, {"USER": "alice", "HOME": "/home/alice"})


@pytest.mark.parametrize(
    ("configured", "expected"),
    [
        ("", "jupyter-asgard-pytorch-{hash}:no_exec"),
        ("my-env", "my-env:no_exec"),
        ("my-env:exec", "my-env:exec"),
        ("my-env:create", "my-env:create"),
    ],
)
def test_a_kernel_starts_a_container_of_its_own_unless_its_kernelspec_says_otherwise(
    configured: str, expected: str
) -> None:
    """Pyxis's default (auto) attaches to a running container of that name: another notebook's kernel."""
    name = container_name(
        config(container_name=configured), "jupyter-{kernel_name}-{image_hash}", "asgard-pytorch", "7"
    )
    assert name == expected.format(hash=name.split("-")[-1].split(":")[0])
    assert container_base_name(name) == name.split(":")[0]


@pytest.mark.parametrize("workdir", ["/n/p,x", "/n/p:x", '/n/p"x', "/n/p$x", "/n/p`x"])
def test_a_workdir_pyxis_cannot_mount_is_a_problem_only_where_it_would_be_mounted(workdir: str) -> None:
    assert "cannot be mounted into the container" in workdir_problems(config(), workdir, True)[0]
    assert workdir_problems(config(mounts=["/n:/n"]), workdir, True) == []  # a mount covers it
    assert workdir_problems(config(), workdir, False) == []
    assert workdir_problems(config(workdir="/w"), workdir, True) == []


def test_a_workdir_with_spaces_is_mounted_at_its_own_path() -> None:
    assert workdir_problems(config(), "/n/my project", True) == []
    assert [mount.render() for mount in step_mounts(config(), "/n/my project", True)] == ["/n/my project:/n/my project"]


async def test_first_starts_of_a_container_on_a_node_wait_for_each_other_later_ones_do_not(tmp_path: Path) -> None:
    starts = ContainerStarts(lambda: tmp_path)
    running: list[str] = []
    overlaps: list[int] = []

    async def start(node: str, name: str, fail: bool = False) -> None:
        async with starts.starting(node, name):
            running.append(name)
            overlaps.append(len(running))
            await asyncio.sleep(0.05)
            running.remove(name)
            if fail:
                raise RuntimeError("the container did not start")

    with pytest.raises(RuntimeError):
        await start("gpu01", "env", fail=True)  # a failed first start is no first start
    await asyncio.gather(*(start("gpu01", "env") for _ in range(3)))
    assert overlaps == [1, 1, 1, 2]  # the failed start; the first start alone; then the other two together
    overlaps.clear()
    await asyncio.gather(start("gpu01", "env"), start("gpu01", "env"), start("gpu02", "env"))
    assert max(overlaps) == 3  # known on gpu01: side by side; gpu02's first start needs no wait either


async def test_first_starts_in_two_processes_of_the_user_wait_for_each_other(tmp_path: Path) -> None:
    """JupyterLab and a papermill run of the same kernelspec: two servers, one lock directory."""
    servers = [ContainerStarts(lambda: tmp_path), ContainerStarts(lambda: tmp_path)]
    inside: list[int] = []
    overlaps: list[int] = []

    async def start(starts: ContainerStarts) -> None:
        async with starts.starting("gpu01", "env"):
            inside.append(1)
            overlaps.append(len(inside))
            await asyncio.sleep(0.3)
            inside.pop()

    await asyncio.gather(*(start(starts) for starts in servers))
    assert overlaps == [1, 1]
    assert [path.stat().st_mode & 0o777 for path in tmp_path.iterdir()] == [0o600]


REAL_PYXIS_FAILURE = """\
slurmstepd-gpu01: error: pyxis: --container-mounts: source path does not exist: /netscratch/alice/gone
slurmstepd-gpu01: error: pyxis: couldn't create enroot start configuration script
slurmstepd-gpu01: error: pyxis: printing enroot log file:
slurmstepd-gpu01: error: pyxis:     [INFO] Extracting squashfs filesystem...
slurmstepd-gpu01: error: pyxis:     Parallel unsquashfs: Using 2 processors
slurmstepd-gpu01: error: pyxis:     11991 inodes (11883 blocks) to write
slurmstepd-gpu01: error: pyxis:     
slurmstepd-gpu01: error: pyxis:     created 11101 files
slurmstepd-gpu01: error: pyxis:     created 1161 directories
slurmstepd-gpu01: error: pyxis:     created 880 symlinks
slurmstepd-gpu01: error: pyxis:     created 8 devices
slurmstepd-gpu01: error: pyxis: container was not started successfully by another task
slurmstepd-gpu01: error: spank: required plugin spank_pyxis.so: task_init() failed with rc=-1
slurmstepd-gpu01: error: Failed to invoke spank plugin stack
srun: error: gpu01: task 0: Exited with exit code 1"""  # noqa: W291 - enroot's log as Pyxis relays it


def test_a_failed_container_start_is_summed_up_by_pyxis_words_without_enroots_progress() -> None:
    """Real Pyxis relays enroot's whole log; the cause is its first line, not the unpacking statistics."""
    text, hint = summarize(REAL_PYXIS_FAILURE.splitlines())
    assert text.splitlines()[0].endswith(
        "pyxis: --container-mounts: source path does not exist: /netscratch/alice/gone"
    )
    assert "created" not in text and "spank:" not in text
    assert hint == "check the mounts: every source must exist on the compute node"


def test_without_containers_the_step_runs_on_the_node_in_the_workdir() -> None:
    """A cluster without Pyxis (c.PyxisProvisioner.containers = False): no Pyxis option, srun's --chdir."""
    argv = kernel_step_argv(
        config(mounts=["/ds:/ds:ro"]),
        job_id="7",
        workdir="/home/alice/nb",
        mount_workdir=True,
        name_template="jupyter-{kernel_name}",
        kernel_name="k",
        kernelspec_env=["X"],
        command=["python3"],
        containers=False,
    )
    assert [arg for arg in argv if arg.startswith("--container")] == []
    assert "--chdir=/home/alice/nb" in argv and argv[-1] == "python3"


async def test_poll_and_wait_agree_before_a_step_and_after_the_job_ended() -> None:
    """jupyter_client reads either: a kernel without a step is not running (0), one whose job ended exited (1)."""
    from jupyter_asgard.kernel.provisioner import PyxisProvisioner

    provisioner = PyxisProvisioner(kernel_id="k1", kernel_spec=None)
    assert (await provisioner.poll(), await provisioner.wait()) == (0, 0)
    provisioner.exited = True
    assert (await provisioner.poll(), await provisioner.wait()) == (1, 1)


async def test_provisioner_info_round_trips_into_another_provisioner() -> None:
    """jupyter_client's persistence pair: what one provisioner saves, another (another process) loads."""
    from jupyter_asgard.kernel.provisioner import PyxisProvisioner

    first = PyxisProvisioner(kernel_id="k1", kernel_spec=None)
    first.node, first.lost_nodes = "gpu02", ["gpu01"]
    first._ports = {"shell_port": 40001, "hb_port": 40005}
    info = await first.get_provisioner_info()
    second = PyxisProvisioner(kernel_id="other", kernel_spec=None)
    await second.load_provisioner_info(info)
    assert (second.kernel_id, second.node, second.lost_nodes) == ("k1", "gpu02", ["gpu01"])
    assert second._ports == first._ports
    assert await second.get_provisioner_info() == info
