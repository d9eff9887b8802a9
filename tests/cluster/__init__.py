"""The local Slurm test cluster (see cluster.py)."""

from .cluster import ClusterUnavailable, LocalCluster, NODES, check_prerequisites

__all__ = ["ClusterUnavailable", "LocalCluster", "NODES", "check_prerequisites"]
