"""jupyter-asgard: Jupyter kernels on Slurm GPU nodes inside Pyxis containers."""

__version__ = "0.1.0"
