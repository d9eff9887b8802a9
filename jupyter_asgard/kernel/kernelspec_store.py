"""The user's own Asgard kernelspecs, as the panel and the REST API save them.

Only kernelspecs this store wrote (marked in their metadata) can be changed
or deleted through it: a site's or another tool's kernelspec with the same
name is refused, never overwritten.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from jupyter_core.paths import jupyter_data_dir

from ..errors import KernelspecStoreError
from ..launch.launch_config import LaunchConfig
from .kernelspecs import DEFAULT_KERNEL, KERNEL_NAME, PROVISIONER_NAME, bundled_kernelspec_dir, provisioner_config

MARKER = "jupyter_asgard"
KERNEL_ARGV = ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"]
MAX_DISPLAY_NAME = 128


def is_managed(spec: Mapping[str, Any]) -> bool:
    return bool(spec.get("metadata", {}).get(MARKER, {}).get("created_by") == "jupyter-asgard")


def build_kernelspec(display_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """kernel.json for a launch configuration (kept as given: $USER stays for the provisioner to expand)."""
    return {
        "argv": KERNEL_ARGV,
        "display_name": display_name,
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {
            "supported_encryption": ["curve"],  # every Asgard kernel is encrypted, an old ipykernel by the proxy
            "kernel_provisioner": {"provisioner_name": PROVISIONER_NAME, "config": dict(config)},
            MARKER: {"created_by": "jupyter-asgard"},
        },
    }


def check_name(name: str) -> None:
    if not KERNEL_NAME.match(name) or name.startswith(".") or len(name) > 64:
        raise KernelspecStoreError(
            f"kernelspec name {name!r} may contain only letters, digits, '-', '.' and '_' (at most 64, "
            "not starting with '.')"
        )


class KernelspecStore:
    """Reads every installed Asgard kernelspec; writes and deletes only its own, in the user's kernels dir."""

    def __init__(self, manager: KernelSpecManager | None = None, kernels_dir: Path | None = None) -> None:
        self.manager = manager or KernelSpecManager()
        self.kernels_dir = kernels_dir or Path(jupyter_data_dir()) / "kernels"

    def list(self) -> list[dict[str, Any]]:
        specs = self.manager.get_all_specs()
        return [
            self._describe(name, entry["resource_dir"], entry["spec"])
            for name, entry in sorted(specs.items())
            if provisioner_config(entry["spec"]) is not None
        ]

    def read(self, name: str) -> dict[str, Any]:
        check_name(name)
        try:
            resource_dir = self.manager.get_kernel_spec(name).resource_dir
        except NoSuchKernel:
            raise KernelspecStoreError(f"no kernelspec named {name!r}", 404) from None
        spec = json.loads((Path(resource_dir) / "kernel.json").read_text())
        if provisioner_config(spec) is None:
            raise KernelspecStoreError(f"kernelspec {name!r} is not an Asgard kernel", 404)
        return self._describe(name, resource_dir, spec)

    def write(self, name: str, display_name: str, config: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update; config must already be valid (LaunchConfig.parse raised nothing)."""
        check_name(name)
        display_name = display_name.strip()
        if not display_name or len(display_name) > MAX_DISPLAY_NAME:
            raise KernelspecStoreError(f"display name must be 1 to {MAX_DISPLAY_NAME} characters")
        self._refuse_foreign(name)
        destination = self.kernels_dir / name
        destination.mkdir(parents=True, exist_ok=True)
        for logo in bundled_kernelspec_dir(DEFAULT_KERNEL).glob("logo-*"):
            shutil.copyfile(logo, destination / logo.name)
        spec = build_kernelspec(display_name, _stored(config))
        staging = destination / "kernel.json.tmp"
        staging.write_text(json.dumps(spec, indent=2) + "\n")
        staging.replace(destination / "kernel.json")
        return self._describe(name, str(destination), spec)

    def delete(self, name: str) -> None:
        check_name(name)
        current = self.read(name)
        if not current["managed"]:
            raise KernelspecStoreError(f"kernelspec {name!r} was not created by jupyter-asgard; it is left alone", 403)
        # The lookup may find the name in a system or environment directory too: only the user's own is deleted.
        if Path(current["resource_dir"]).resolve() != (self.kernels_dir / name).resolve():
            raise KernelspecStoreError(
                f"kernelspec {name!r} is installed in {current['resource_dir']}, outside your "
                f"own kernels ({self.kernels_dir}); it is left alone",
                403,
            )
        shutil.rmtree(current["resource_dir"])

    def _refuse_foreign(self, name: str) -> None:
        try:
            current = self.read(name)
        except KernelspecStoreError as error:
            if error.status == 404 and not (self.kernels_dir / name).exists():
                return
            raise KernelspecStoreError(
                f"a kernelspec named {name!r} exists and is not an Asgard kernel made here; choose another name", 409
            ) from None
        if not current["managed"]:
            raise KernelspecStoreError(
                f"kernelspec {name!r} was not created by jupyter-asgard; choose another name", 409
            )

    @staticmethod
    def _describe(name: str, resource_dir: str, spec: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "name": name,
            "display_name": spec.get("display_name", name),
            "config": provisioner_config(spec),
            "managed": is_managed(spec),
            "resource_dir": str(resource_dir),
        }


def _stored(config: Mapping[str, Any]) -> dict[str, Any]:
    """Only the settings that differ from the defaults, so site defaults still apply to the rest."""
    defaults = LaunchConfig().to_json()
    return {key: value for key, value in config.items() if key in defaults and value != defaults[key]}
