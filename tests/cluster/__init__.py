"""The local Slurm test cluster (see cluster.py)."""

from .cluster import NODES, ClusterUnavailable, LocalCluster, check_prerequisites

__all__ = ["NODES", "ClusterUnavailable", "LocalCluster", "check_prerequisites"]
