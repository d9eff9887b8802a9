"""Start and stop the test cluster by hand: python -m tests.cluster up|down|status."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .cluster import ClusterUnavailable, LocalCluster

DEFAULT_ROOT = Path(os.environ.get("ASGARD_CLUSTER_DIR", "/tmp/asgard-cluster"))


def up(root: Path, containers: bool = True) -> int:
    if (root / "state.json").exists():
        print(f"a cluster already runs in {root}; `python -m tests.cluster down` stops it", file=sys.stderr)
        return 1
    try:
        cluster = LocalCluster(root, containers=containers).start()
    except ClusterUnavailable as error:
        print(f"cannot start the test cluster: {error}", file=sys.stderr)
        return 1
    print(
        f"Slurm test cluster up in {root} (nodes gpu01={cluster.node_addr('gpu01')}, "
        f"gpu02={cluster.node_addr('gpu02')}; "
        f"{'real Pyxis and enroot' if containers else 'no containers: jobs run on the nodes as they are'})."
    )
    print(f"images: {cluster.images_dir}  netscratch: {cluster.netscratch}  datasets: {cluster.datasets}")
    if cluster.has_registry:
        user, password = cluster.registry_credentials
        print(
            f"registry: {cluster.registry_address} (token authentication: user {user}, password {password}; "
            f"images such as {cluster.pytorch_registry_image()}; log {cluster.registry_log})"
        )
    print("Use it with:")
    print(f"  export SLURM_CONF={cluster.slurm_conf}")
    return 0


def down(root: Path) -> int:
    if not (root / "state.json").exists():
        print(f"no cluster runs in {root}")
        return 0
    LocalCluster.attach(root).stop()
    print(f"stopped the cluster in {root}")
    return 0


def status(root: Path) -> int:
    if not (root / "state.json").exists():
        print(f"no cluster runs in {root}")
        return 1
    cluster = LocalCluster.attach(root)
    env = {**os.environ, **cluster.env}
    return subprocess.run(["sinfo", "-N", "-o", "%N %P %T %G"], env=env).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cluster", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="directory holding all cluster state")
    parser.add_argument(
        "--no-containers", action="store_true", help="up: without Pyxis, where enroot cannot run (no user namespaces)"
    )
    args = parser.parse_args(argv)
    if args.command == "up":
        return up(args.root, containers=not args.no_containers)
    return {"down": down, "status": status}[args.command](args.root)


if __name__ == "__main__":
    sys.exit(main())
