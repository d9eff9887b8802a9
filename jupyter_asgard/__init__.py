"""jupyter-asgard: Jupyter kernels on Slurm GPU nodes inside Pyxis containers."""

from typing import Any

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """Found by jupyter_server when the extension is enabled (jupyter-config/ enables it on install)."""
    from .server.extension import AsgardExtension

    return [{"module": "jupyter_asgard", "app": AsgardExtension}]
