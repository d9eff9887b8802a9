"""Pyxis and enroot: the kernel step's plan (the srun command line), Pyxis's options and the steps that join a
running container (terminal, save), the phases of a container start, images on disk and in registries, why a
step failed. Imports slurm/, launch/ and node/'s constants, nothing above."""
