"""The environment srun hands to the kernel step: the server's own Python and Jupyter must not leak in."""

from __future__ import annotations

import os
import sys

import pytest
from jupyter_client.kernelspec import KernelSpec
from traitlets.config import Config

from jupyter_asgard.kernel.kernel_env import clean_path, server_prefixes, steering_names, step_environment

SERVER_PREFIX = "/opt/jupyterhub"  # where the Jupyter server's Python is installed (sys.prefix)


@pytest.fixture(autouse=True)
def server_python(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the server runs from SERVER_PREFIX, whatever Python runs the tests."""
    monkeypatch.setattr(sys, "prefix", SERVER_PREFIX)
    monkeypatch.setattr(sys, "exec_prefix", SERVER_PREFIX)


def path(*entries: str) -> str:
    return os.pathsep.join(entries)


SERVER_ENV = {
    "HOME": "/home/alice",
    "USER": "alice",
    "LANG": "C.UTF-8",
    "SLURM_CONF": "/etc/slurm/slurm.conf",
    "SLURM_JOB_ID": "5",
    "SLURM_JOBID": "5",
    "SLURM_CPUS_ON_NODE": "4",
    "SRUN_DEBUG": "3",
    "SALLOC_PARTITION": "cpu",
    "SBATCH_ACCOUNT": "x",
    "PYTHONPATH": "/opt/jupyterhub/site",
    "PYTHONHOME": "/opt/jupyterhub",
    "PYTHONSTARTUP": "/home/alice/.pythonrc",
    "PYTHONUSERBASE": "/home/alice/.local",
    "VIRTUAL_ENV": "/home/alice/venvs/jupyter",
    "VIRTUAL_ENV_PROMPT": "(jupyter)",
    "IPYTHONDIR": "/home/alice/.ipython",
    "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    "LD_PRELOAD": "/usr/lib/libfoo.so",
    "JUPYTER_PATH": "/opt/jupyterhub/share/jupyter",
    "JUPYTER_CONFIG_DIR": "/home/alice/.jupyter",
    "JUPYTERHUB_API_TOKEN": "secret",
    "JPY_PARENT_PID": "1",
    "JPY_SESSION_NAME": "x.ipynb",
    "CONDA_PREFIX": "/opt/conda/envs/jlab",
    "CONDA_DEFAULT_ENV": "jlab",
    "PYXIS_CONTAINER_IMAGE": "/enroot/other.sqsh",
    "PYXIS_CONTAINER_MOUNTS": "/a:/a",
    "ASGARD_KERNEL_KEY": "stale",
    "PIXI_PROJECT_ROOT": "/p",
    "UV_CACHE_DIR": "/c",
    "CUDA_VISIBLE_DEVICES": "0",
    "PATH": path(
        "/home/alice/venvs/jupyter/bin",
        "/opt/conda/envs/jlab/bin",
        "/opt/jupyterhub/bin",
        "/usr/local/bin",
        "/usr/bin",
        "/bin",
        "/opt/slurm/bin",
        "/home/alice/.local/bin",
    ),
}


def test_step_environment_drops_the_servers_python_jupyter_and_slurm() -> None:
    env = step_environment(SERVER_ENV, {}, {})
    assert env == {
        "HOME": "/home/alice",
        "USER": "alice",
        "LANG": "C.UTF-8",
        "SLURM_CONF": "/etc/slurm/slurm.conf",
        "CUDA_VISIBLE_DEVICES": "0",
        "PATH": path("/usr/local/bin", "/usr/bin", "/bin", "/opt/slurm/bin", "/home/alice/.local/bin"),
    }


@pytest.mark.parametrize(
    "name",
    [
        "PYTHONPATH",
        "VIRTUAL_ENV",
        "JUPYTER_PATH",
        "JUPYTER_RUNTIME_DIR",
        "JUPYTERHUB_USER",
        "JPY_SESSION_NAME",
        "CONDA_PREFIX",
        "CONDA_SHLVL",
        "PYXIS_CONTAINER_IMAGE",
        "PYXIS_CONTAINER_WORKDIR",
        "PYXIS_CONTAINER_NAME",
        "SLURM_JOB_ID",
        "SLURM_NODELIST",
        "SLURM_STEP_ID",
        "ASGARD_KERNEL_KEY",
        "ENROOT_ROOTFS_WRITABLE",
        "ENROOT_MOUNT_HOME",
        "ENROOT_REMAP_ROOT",
        "ENROOT_DATA_PATH",
    ],
)
def test_each_leaking_variable_is_dropped(name: str) -> None:
    assert step_environment({name: "x", "KEEP": "y"}, {}, {}) == {"KEEP": "y"}


@pytest.mark.parametrize(
    "name",
    [
        "SLURM_CONF",
        "HOME",
        "LANG",
        "TERM",
        "MY_SLURM_THING",
        "XPYXIS_CONTAINER_IMAGE",
        "OMP_NUM_THREADS",
        "NVIDIA_VISIBLE_DEVICES",
    ],
)
def test_other_variables_are_kept(name: str) -> None:
    assert step_environment({name: "v"}, {}, {}) == {name: "v"}


def test_kernelspec_env_and_asgard_values_pass_through_and_win() -> None:
    server = {"HOME": "/home/alice", "OMP_NUM_THREADS": "64", "ASGARD_KERNEL_KEY": "stale", "PYTHONPATH": "/server"}
    kernelspec = {
        "OMP_NUM_THREADS": "8",
        "HF_HOME": "/netscratch/alice/hf",
        "PYTHONPATH": "/workspace/src",
        "SLURM_CPU_BIND": "none",
    }
    asgard = {"ASGARD_KERNEL_KEY": "fresh", "ASGARD_KERNEL_PORTS": '{"shell_port": 1}'}
    assert step_environment(server, kernelspec, asgard) == {
        "HOME": "/home/alice",
        "OMP_NUM_THREADS": "8",
        "HF_HOME": "/netscratch/alice/hf",
        "PYTHONPATH": "/workspace/src",  # asked for by the kernelspec: not the server's leak
        "ASGARD_KERNEL_KEY": "fresh",
        "ASGARD_KERNEL_PORTS": '{"shell_port": 1}',
    }


@pytest.mark.parametrize(
    "name",
    [
        "SLURM_STEP_GRES",
        "SLURM_CONF",
        "SALLOC_GPUS",
        "SRUN_CPUS_PER_TASK",
        "SBATCH_QOS",
        "PYXIS_CONTAINER_IMAGE",
        "ENROOT_ROOTFS_WRITABLE",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "LD_AUDIT",
    ],
)
def test_a_kernelspec_cannot_steer_slurm_pyxis_or_enroot_through_its_env(name: str) -> None:
    assert steering_names(["OMP_NUM_THREADS", name]) == [name]
    assert step_environment({"SLURM_CONF": "/etc/slurm/slurm.conf"}, {name: "x"}, {}).get(name) in (
        None,
        "/etc/slurm/slurm.conf",
    )


def test_asgard_values_win_over_the_kernelspec() -> None:
    assert step_environment({}, {"ASGARD_KERNEL_NAME": "spec"}, {"ASGARD_KERNEL_NAME": "asgard"}) == {
        "ASGARD_KERNEL_NAME": "asgard"
    }


def test_kernelspec_path_is_not_cleaned() -> None:
    env = step_environment({"PATH": path("/opt/jupyterhub/bin", "/usr/bin")}, {"PATH": "/opt/jupyterhub/bin"}, {})
    assert env["PATH"] == "/opt/jupyterhub/bin"


def test_inputs_are_not_modified() -> None:
    server = dict(SERVER_ENV)
    step_environment(server, {"A": "1"}, {"ASGARD_X": "2"})
    assert server == SERVER_ENV


def test_no_path_stays_no_path() -> None:
    assert "PATH" not in step_environment({"HOME": "/h"}, {}, {})


# --- PATH cleaning ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "kept"),
    [
        # the server's own prefix (sys.prefix), its bin directory and anything below it
        (["/opt/jupyterhub/bin", "/usr/bin"], ["/usr/bin"]),
        (["/opt/jupyterhub", "/usr/bin"], ["/usr/bin"]),
        (["/opt/jupyterhub/lib/node_modules/.bin", "/usr/bin"], ["/usr/bin"]),
        # normalised before comparing
        (["/opt/jupyterhub/bin/", "/opt//jupyterhub/bin", "/opt/x/../jupyterhub/bin", "/usr/bin"], ["/usr/bin"]),
        # a sibling with the same name prefix is another directory
        (["/opt/jupyterhub-tools/bin", "/opt/jupyterhub2/bin"], ["/opt/jupyterhub-tools/bin", "/opt/jupyterhub2/bin"]),
        # empty entries are dropped
        (["", "/usr/bin", "", "/bin"], ["/usr/bin", "/bin"]),
        # order is kept
        (["/b", "/a", "/c"], ["/b", "/a", "/c"]),
    ],
)
def test_path_entries_inside_the_server_prefix_are_removed(entries: list[str], kept: list[str]) -> None:
    env = step_environment({"PATH": path(*entries)}, {}, {})
    assert env["PATH"] == path(*kept)


def test_virtual_env_and_conda_prefix_from_the_server_environment_are_removed() -> None:
    server = {
        "VIRTUAL_ENV": "/home/alice/venvs/jupyter",
        "CONDA_PREFIX": "/opt/conda",
        "PATH": path(
            "/home/alice/venvs/jupyter/bin",
            "/opt/conda/bin",
            "/opt/conda/condabin",
            "/home/alice/venvs/jupyter2/bin",
            "/usr/bin",
        ),
    }
    assert step_environment(server, {}, {}) == {"PATH": path("/home/alice/venvs/jupyter2/bin", "/usr/bin")}


def test_server_prefixes() -> None:
    assert server_prefixes({}) == [SERVER_PREFIX]
    assert server_prefixes({"VIRTUAL_ENV": "/v/", "CONDA_PREFIX": "/c", "OTHER": "/o"}) == ["/c", SERVER_PREFIX, "/v"]
    assert server_prefixes({"VIRTUAL_ENV": "", "CONDA_PREFIX": ""}) == [SERVER_PREFIX]


def test_clean_path() -> None:
    assert clean_path(path("/p/bin", "/usr/bin", "/q/x", "/pq"), ["/p", "/q"]) == path("/usr/bin", "/pq")
    assert clean_path("", ["/p"]) == ""


def test_system_python_prefix_keeps_system_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "prefix", "/usr")
    monkeypatch.setattr(sys, "exec_prefix", "/usr")
    monkeypatch.setattr(sys, "base_prefix", "/usr")
    env = step_environment({"PATH": path("/usr/local/bin", "/usr/bin", "/bin")}, {}, {})
    assert env["PATH"] == path("/usr/local/bin", "/usr/bin", "/bin")


async def test_the_provisioner_refuses_ld_variables_and_unlisted_ones_before_submitting() -> None:
    """srun runs on this host as the user: LD_PRELOAD from a kernelspec would run its library there. And only
    the variables the site lists (besides $USER and $HOME) expand in the kernel's settings."""
    from jupyter_asgard.errors import KernelStartError
    from jupyter_asgard.kernel.provisioner import PyxisProvisioner

    spec = KernelSpec(argv=["python3"], env={"LD_PRELOAD": "/tmp/evil.so", "LD_LIBRARY_PATH": "/tmp"})
    site = Config({"PyxisProvisioner": {"expandable_variables": ["PROJECT"], "check_paths": False}})
    provisioner = PyxisProvisioner(
        kernel_id="k1", kernel_spec=spec, config=site, image="/enroot/x.sqsh", workdir="/w/$PROJECT/$SECRET_TOKEN"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PROJECT", "vision")
        patch.setenv("SECRET_TOKEN", "s3cret")
        with pytest.raises(KernelStartError) as refused:
            await provisioner._checked_config()
    message = str(refused.value)
    assert "$SECRET_TOKEN is not a variable kernel settings may use" in message
    assert "PROJECT" not in message and "s3cret" not in message
    provisioner = PyxisProvisioner(kernel_id="k2", kernel_spec=spec, config=site, image="/enroot/x.sqsh")
    with pytest.raises(KernelStartError) as refused:
        await provisioner._checked_config()
    assert "the kernelspec's env sets LD_LIBRARY_PATH, LD_PRELOAD: " in str(refused.value)
