"""Slurm: its commands built as pure functions (slurm_commands), run through one async client (slurm_client),
the one monitor polling squeue for the whole server, a kernel's allocation (salloc and its lease) and the
cluster's partitions. Imports launch/ (what a job asks for) and errors, nothing above."""
