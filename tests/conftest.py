"""Shared fixtures: the real Slurm test cluster every integration test runs on."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.cluster import ClusterUnavailable, LocalCluster, check_prerequisites


def _require_cluster_prerequisites() -> None:
    """Skip on a developer machine that cannot run the cluster; fail on CI, where it must."""
    try:
        check_prerequisites()
    except ClusterUnavailable as error:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the Slurm test cluster: {error}")
        pytest.skip(f"no Slurm test cluster: {error}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[LocalCluster]:
    """One cluster for the whole session; Slurm's clients find it through SLURM_CONF."""
    _require_cluster_prerequisites()
    cluster = LocalCluster().start()
    saved = {name: os.environ.get(name) for name in cluster.env}
    os.environ.update(cluster.env)
    try:
        yield cluster
    finally:
        cluster.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def fresh_cluster_prerequisites() -> None:
    """For tests that start clusters of their own."""
    _require_cluster_prerequisites()
