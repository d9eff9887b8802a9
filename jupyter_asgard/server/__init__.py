"""The Jupyter server extension: thin REST handlers (every error turned into JSON in one place), and the modules
that reach into jupyter_server's internals: pending kernels made right for a queue, the culler, terminals in
a kernel's container, the kernel rows with their notebooks. Imports kernel/ and everything below."""
