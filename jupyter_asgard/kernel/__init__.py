"""A kernel: the pyxis-provisioner (its life cycle in jupyter_client's terms), its srun step, its environment and
address, its row as the UIs show it, the Asgard kernelspecs. Imports site/ and everything below; nothing of
jupyter_server but what jupyter_client hands a provisioner."""
