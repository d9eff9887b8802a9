"""The container panel: pick image, mounts, workdir and resources in a notebook, save them as a kernel."""

from .panel import ContainerPanel

__all__ = ["ContainerPanel"]
