"""The example notebooks run as users would run them: on the test cluster, with nbclient."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.cluster import NODES, LocalCluster
from tests.kernels import KernelSpecs

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
pytestmark = pytest.mark.usefixtures("no_kernel_jobs_left")


def test_hello_asgard_reads_datasets_and_writes_to_netscratch(
    slurm_cluster: LocalCluster, kernelspecs: KernelSpecs, tmp_path: Path
) -> None:
    scratch = slurm_cluster.netscratch / "root"
    kernel = kernelspecs.make(
        "asgard-example", env={"DATASETS_DIR": str(slurm_cluster.datasets), "NETSCRATCH_DIR": str(scratch)}
    )
    shutil.rmtree(scratch / "asgard-example", ignore_errors=True)
    notebook = nbformat.read(EXAMPLES / "hello-asgard.ipynb", as_version=4)
    NotebookClient(notebook, kernel_name=kernel, timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = ["".join(output.get("text", "") for output in cell.get("outputs", [])) for cell in notebook.cells]
    where = next(block for block in text if block.startswith("node:"))
    assert where.split()[1] in NODES
    assert "datasets mount is read-only: Read-only file system" in "".join(text)
    with open(scratch / "asgard-example" / "petal_length_by_species.csv") as handle:
        assert list(csv.reader(handle)) == [
            ["species", "mean_petal_length"],
            ["setosa", "1.4"],
            ["versicolor", "4.7"],
            ["virginica", "6.0"],
        ]


def test_container_panel_notebook_shows_the_panel(
    slurm_cluster: LocalCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.json").write_text(
        json.dumps({"AsgardSite": {"image_dirs": [str(slurm_cluster.images_dir)]}})
    )
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(config_dir))
    notebook = nbformat.read(EXAMPLES / "container-panel.ipynb", as_version=4)
    NotebookClient(
        notebook, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    views = [
        output
        for output in notebook.cells[1].outputs
        if "application/vnd.jupyter.widget-view+json" in output.get("data", {})
    ]
    assert len(views) == 1
    printed = "".join(output.get("text", "") for output in notebook.cells[3].outputs)
    assert printed.startswith("4 images; 2 partitions")
