"""What runs on the compute node, inside the kernel's container: the bootstrap (ports, handshake, the kernel's
life) and the Curve proxy. Each file here runs with the image's own python3, which may be 3.8, as ``python3 -I
-S -c SOURCE``: standard library only (the proxy may import pyzmq), no relative imports, nothing of the rest of
the package; dev/check-bootstrap checks every file of this folder. Nothing here imports the package, and the
package reads these files' source to ship them."""
