"""``jupyter asgard install`` and ``kernelspecs``: what lands on disk is what Jupyter and the provisioner read.

No Slurm here: installing a kernelspec only writes files, so these tests
check them with jupyter_client's own KernelSpecManager.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from jupyter_asgard.cli.cli import main
from jupyter_asgard.kernel.kernelspecs import bundled_kernelspec_dir
from jupyter_asgard.site.site_check import SlurmSite, findings, parse_config, parse_partitions, parse_qos_gpu_caps
from tests.cluster import LocalCluster

BUNDLED_IMAGE = "/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh"
LOGOS = ("logo-32x32.png", "logo-64x64.png", "logo-svg.svg")


@pytest.fixture(autouse=True)
def isolated_jupyter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep --user installs and kernelspec discovery away from the real home and environment."""
    data_dir = tmp_path / "jupyter-data"
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(data_dir))
    monkeypatch.delenv("JUPYTER_PATH", raising=False)
    return data_dir


def kernels_dir(prefix: Path) -> Path:
    return prefix / "share" / "jupyter" / "kernels"


def installed_spec(prefix: Path, name: str = "asgard-pytorch") -> tuple[dict[str, Any], Path]:
    """The spec as Jupyter reads it, and its resource directory."""
    spec = KernelSpecManager(kernel_dirs=[str(kernels_dir(prefix))]).get_kernel_spec(name)
    return spec.to_dict(), Path(spec.resource_dir)


def launch_config(spec: dict[str, Any]) -> dict[str, Any]:
    return spec["metadata"]["kernel_provisioner"]["config"]


def jupyter(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The command users type: exercises Jupyter's subcommand discovery and the console script."""
    return subprocess.run(
        [shutil.which("jupyter") or "jupyter", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_install_without_options_copies_the_bundled_spec_for_the_user(
    isolated_jupyter: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["install"]) == 0

    destination = isolated_jupyter / "kernels" / "asgard-pytorch"
    written = json.loads((destination / "kernel.json").read_text())
    assert written == json.loads((bundled_kernelspec_dir() / "kernel.json").read_text())
    assert written["metadata"]["supported_encryption"] == ["curve"]  # jupyter_client provisions Curve keys for it
    assert all((destination / logo).is_file() for logo in LOGOS)
    out = capsys.readouterr().out
    assert str(destination) in out and '"Asgard PyTorch"' in out
    assert "JUPYTER_PATH" not in out, "the user directory is on Jupyter's path already"


def test_install_applies_site_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = tmp_path / "prefix"
    status = main(
        [
            "install",
            "--prefix",
            str(prefix),
            "--image-dir",
            "/site/images/",
            "--partition",
            "gpu-a100",
            "--mount",
            "/data/$USER:/data",
            "--mount",
            "/ds:/ds:ro+rprivate",
            "--gpus",
            "2",
            "--name",
            "asgard-site",
            "--display-name",
            "Asgard Site",
        ]
    )

    assert status == 0
    spec, resource_dir = installed_spec(prefix, "asgard-site")
    assert spec["display_name"] == "Asgard Site"
    assert spec["metadata"]["kernel_provisioner"]["provisioner_name"] == "pyxis-provisioner"
    assert launch_config(spec) == {
        "image": "/site/images/nvcr.io_nvidia_pytorch_23.12-py3.sqsh",
        "mounts": ["/data/$USER:/data", "/ds:/ds:ro+rprivate"],
        "gpus": 2,
        "partition": "gpu-a100",
        "container_writable": True,
    }
    assert all((resource_dir / logo).is_file() for logo in LOGOS)
    assert f"JUPYTER_PATH={prefix / 'share' / 'jupyter'}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "image", "gpus"),
    [
        (["--image", "docker://nvcr.io#nvidia/pytorch:24.05-py3"], "docker://nvcr.io#nvidia/pytorch:24.05-py3", 1),
        (["--image", "pytorch_24.05.sqsh", "--image-dir", "/site"], "/site/pytorch_24.05.sqsh", 1),
        (["--gpus", "h100:4"], BUNDLED_IMAGE, "h100:4"),
    ],
)
def test_install_image_and_gpu_forms(tmp_path: Path, options: list[str], image: str, gpus: int | str) -> None:
    assert main(["install", "--prefix", str(tmp_path), *options]) == 0

    config = launch_config(installed_spec(tmp_path)[0])
    assert (config["image"], config["gpus"]) == (image, gpus)


def test_install_replaces_an_earlier_install(tmp_path: Path) -> None:
    assert main(["install", "--prefix", str(tmp_path), "--partition", "old"]) == 0
    assert main(["install", "--prefix", str(tmp_path), "--partition", "new"]) == 0

    assert launch_config(installed_spec(tmp_path)[0])["partition"] == "new"


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--mount", "data:/data"], "'data:/data'"),
        (["--mount", "/a:/b:readonly"], "'readonly'"),
        (["--gpus", "lots"], "gpus 'lots'"),
        (["--partition", "gpu a100"], "partition 'gpu a100'"),
        (["--image", "pytorch.sqsh"], "image 'pytorch.sqsh'"),
        (["--image", "docker://nvcr.io#nvidia/pytorch:24.05-py3", "--image-dir", "/site"], "image_dir '/site'"),
        (["--name", "my kernel"], "kernel name 'my kernel'"),
        (["--name", "\u212aernel"], "kernel name '\u212aernel'"),  # the Kelvin sign, which IGNORECASE folds onto k
        (["--user"], "--user"),
        (["--frobnicate"], "--frobnicate"),
    ],
)
def test_bad_input_exits_2_with_one_line_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str], named: str
) -> None:
    assert main(["install", "--prefix", str(tmp_path), *options]) == 2

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "error:" in captured.err
    assert named in captured.err
    assert not kernels_dir(tmp_path).exists(), "nothing is installed when the input is wrong"


@pytest.mark.parametrize(
    "mount",
    [
        "/data",  # Pyxis mounts SRC at the same path when DST is left out
        "$SCRATCH:/scratch",  # set on the server, maybe not where the installer runs
        "~/data:/data",
    ],
)
def test_mounts_are_kept_as_written(tmp_path: Path, mount: str) -> None:
    assert main(["install", "--prefix", str(tmp_path), "--mount", mount]) == 0

    assert launch_config(installed_spec(tmp_path)[0])["mounts"] == [mount]


def test_missing_subcommand_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


def test_kernelspecs_lists_only_pyxis_kernels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["install", "--prefix", str(tmp_path), "--name", "asgard-b", "--image", "/images/b.sqsh"]) == 0
    assert main(["install", "--prefix", str(tmp_path), "--name", "asgard-a", "--display-name", "Asgard A"]) == 0
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "share" / "jupyter"))
    capsys.readouterr()

    assert main(["kernelspecs"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == ["NAME", "asgard-a", "asgard-b"], "python3 is not an Asgard kernel"
    assert "Asgard A" in lines[1] and lines[1].endswith(BUNDLED_IMAGE)
    assert lines[2].endswith("/images/b.sqsh")


def test_kernelspecs_says_how_to_install_when_none_is(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kernelspecs"]) == 0
    assert "jupyter asgard install" in capsys.readouterr().out


def test_jupyter_asgard_install_command(tmp_path: Path, isolated_jupyter: Path) -> None:
    prefix = tmp_path / "prefix"
    env = {"JUPYTER_DATA_DIR": str(isolated_jupyter), "JUPYTER_PATH": str(prefix / "share" / "jupyter")}

    installed = jupyter("asgard", "install", "--prefix", str(prefix), "--partition", "gpu", "--gpus", "2", env=env)

    assert installed.returncode == 0, installed.stderr
    spec, resource_dir = installed_spec(prefix)
    assert launch_config(spec)["partition"] == "gpu" and launch_config(spec)["gpus"] == 2
    assert "/netscratch/$USER:/netscratch/$USER" in (resource_dir / "kernel.json").read_text(), (
        "$USER is expanded at kernel start, on the server, not at install time"
    )
    assert all((resource_dir / logo).stat().st_size > 0 for logo in LOGOS)
    listed = jupyter("asgard", "kernelspecs", env=env)
    assert listed.returncode == 0 and "asgard-pytorch" in listed.stdout


def test_jupyter_asgard_install_command_rejects_a_bad_mount(tmp_path: Path, isolated_jupyter: Path) -> None:
    result = jupyter(
        "asgard",
        "install",
        "--prefix",
        str(tmp_path),
        "--mount",
        "scratch:/scratch",
        env={"JUPYTER_DATA_DIR": str(isolated_jupyter)},
    )

    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "invalid mount 'scratch:/scratch'" in result.stderr
    assert not kernels_dir(tmp_path).exists()


def test_site_check_says_which_limits_slurm_enforces(slurm_cluster: LocalCluster, tmp_path: Path) -> None:
    """The test cluster has no accounting (so no QOS limit) and no job_submit plugin: only a partition closed to
    users holds against a user who lifts the site's limits in a configuration of their own."""
    (tmp_path / "jupyter_server_config.json").write_text(
        json.dumps({"PyxisProvisioner": {"max_gpus": 1, "allowed_partitions": ["gpu"]}})
    )
    subprocess.run(["scontrol", "update", "PartitionName=debug", "AllowGroups=root"], check=True)
    try:
        checked = jupyter("asgard", "site-check", env={"JUPYTER_CONFIG_DIR": str(tmp_path)})
    finally:
        subprocess.run(["scontrol", "update", "PartitionName=debug", "AllowGroups=ALL"], check=True)
    assert checked.returncode == 0, checked.stderr
    lines = [" ".join(line.split()) for line in checked.stdout.splitlines()]
    assert (
        "max_gpus = 1 partition gpu NOT enforced by Slurm: no QOS on the partition caps GPUs per job (QoS=N/A)" in lines
    )
    assert "allowed_partitions partition debug enforced by Slurm: open only to AllowGroups=root" in lines
    assert any(line.startswith("note: sacctmgr:") for line in lines)
    assert lines[-1].startswith("To enforce them: a QOS per kernel partition")


def _site(**partitions: dict[str, str]) -> SlurmSite:
    return SlurmSite(
        {name: {"PartitionName": name, **fields} for name, fields in partitions.items()},
        {
            "AccountingStorageType": "accounting_storage/slurmdbd",
            "AccountingStorageEnforce": "associations,limits,qos",
            "JobSubmitPlugins": "(null)",
        },
        {"kernels": 2, "big": 16},
    )


def test_a_partition_qos_capping_gpus_enforces_max_gpus_where_accounting_enforces_limits() -> None:
    site = _site(gpu={"QoS": "kernels"}, long={"QoS": "big"}, cpu={"QoS": "N/A"})
    assert [(f.partition, f.enforced) for f in findings(site, 4, [])] == [
        ("gpu", True),
        ("long", False),
        ("cpu", False),
    ]
    unenforced = SlurmSite(
        site.partitions, {**site.config, "AccountingStorageEnforce": "associations"}, site.qos_gpu_caps
    )
    assert "does not enforce QOS limits" in findings(unenforced, 4, ["gpu"])[0].why


def test_a_job_submit_plugin_is_a_maybe_not_a_yes() -> None:
    site = _site(gpu={"QoS": "N/A"}, other={})
    lua = SlurmSite(site.partitions, {**site.config, "JobSubmitPlugins": "lua"}, {})
    assert [(f.limit, f.enforced) for f in findings(lua, 4, ["gpu"])] == [
        ("max_gpus = 4", None),
        ("allowed_partitions", None),
    ]


def test_partition_and_qos_output_is_read_as_slurm_prints_it() -> None:
    partitions = parse_partitions(
        "PartitionName=gpu AllowGroups=ALL QoS=kernels Nodes=gpu[01-02]\nPartitionName=x AllowGroups=staff QoS=N/A\n"
    )
    assert partitions["gpu"]["QoS"] == "kernels" and partitions["x"]["AllowGroups"] == "staff"
    assert parse_qos_gpu_caps("normal|\nkernels|cpu=64,gres/gpu=2\nbig|gres/gpu:h100=8\n") == {"kernels": 2, "big": 8}
    assert parse_config("JobSubmitPlugins        = lua\nX = a = b\n") == {"JobSubmitPlugins": "lua", "X": "a = b"}
