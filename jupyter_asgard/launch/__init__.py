"""What a kernel launch asks for, as data: LaunchConfig (the one source of the launch settings: the panel,
the provisioner's traits, the REST schema and the checks), mounts in Pyxis's form, extra Slurm arguments, the
transport encryption policy. Pure functions and dataclasses; imports nothing of the package but errors."""
