"""What runs on the compute node: inside the kernel's container the bootstrap (ports, handshake, the kernel's
life), the Curve proxy and the IOPub recorder; outside any container, with the node's own python3, the keeper
of a detachable kernel and the importer of registry images. Each file here runs with a python3 that may be 3.8,
as ``python3 -I -S -c SOURCE``: standard library only (the proxy and the recorder may import pyzmq), no relative
imports, nothing of the rest of the package; dev/check-bootstrap checks every file of this folder. Nothing here
imports the package, and the package reads these files' source to ship them."""
