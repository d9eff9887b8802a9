"""A test cluster of a benchmark's own, with a JUPYTER_PATH for the kernelspecs it writes and a JUPYTER_DATA_DIR
for what its kernels record (where their named containers are, which steers later kernels: not root's own)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cluster import LocalCluster
from tests.kernels import KernelSpecs


@contextmanager
def cluster_kernelspecs() -> Iterator[KernelSpecs]:
    """Started for the benchmark and stopped after it, however it ends (its cluster is specs.cluster)."""
    cluster = LocalCluster().start()
    try:
        os.environ.update(cluster.env)
        with tempfile.TemporaryDirectory() as jupyter_path, tempfile.TemporaryDirectory() as data_dir:
            os.environ["JUPYTER_PATH"] = jupyter_path
            os.environ["JUPYTER_DATA_DIR"] = data_dir
            yield KernelSpecs(Path(jupyter_path) / "kernels", cluster)
    finally:
        cluster.stop()
