"""Whether an Asgard kernel's traffic is encrypted with CurveZMQ, decided once for the provisioner.

A kernel listens on the compute node's address, where every user of the cluster
can connect: the HMAC key proves who sent a message but hides nothing, and
anyone may subscribe to IOPub. jupyter_client 8.10 provisions CurveZMQ keys for
kernelspecs that declare ``metadata.supported_encryption: ["curve"]``, by its
``KernelManager.transport_encryption`` policy. Asgard kernels follow that policy
or the site's ``c.PyxisProvisioner.transport_encryption``, whichever is
stricter; the site's is "auto" unless a site turns it down, so Asgard kernels are
encrypted where jupyter_client's own default would leave them in the clear.
"""

from __future__ import annotations

from typing import Any

POLICIES = ("disabled", "auto", "required")
# How a kernel's traffic went, as the bootstrap reports it: the kernel's own Curve sockets, the proxy in
# front of a kernel that cannot encrypt, or in the clear.
MODES = ("curve", "curve-proxy", "none")


def stricter(*policies: str) -> str:
    """The strictest of the policies given ("required" over "auto" over "disabled")."""
    return max((policy.lower() for policy in policies), key=POLICIES.index)


def declares_curve(kernel_spec: Any) -> bool:
    """Whether the kernelspec declares Curve support, read as jupyter_client reads it."""
    declared = (getattr(kernel_spec, "metadata", None) or {}).get("supported_encryption")
    if isinstance(declared, str):
        declared = [declared]
    return isinstance(declared, (list, tuple, set)) and "curve" in {str(item).strip().lower() for item in declared}


def encryption_problem(policy: str, kernel_spec: Any, kernel_name: str) -> str:
    """Why the policy refuses this kernelspec, or "" where it does not."""
    if policy != "required" or declares_curve(kernel_spec):
        return ""
    return (
        "this site requires encrypted kernel traffic (transport_encryption = 'required'), but the kernelspec "
        f'{kernel_name!r} does not declare CurveZMQ support: add "supported_encryption": ["curve"] to its '
        "metadata in kernel.json (`jupyter asgard install` and the Asgard panel write it)"
    )


def wants_curve(policy: str, kernel_spec: Any) -> bool:
    """Whether to provision Curve keys: the policy asks for encryption and the kernelspec supports it."""
    return policy != "disabled" and declares_curve(kernel_spec)
