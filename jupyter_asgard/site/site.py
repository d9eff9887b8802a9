"""What the site offers and allows: images, partitions and GPUs, defaults and limits.

One place where a site describes itself, in Jupyter's traitlets configuration
(jupyter_server_config.py): image directories and registry images here
(``c.AsgardSite``), default mounts and limits on the provisioner
(``c.PyxisProvisioner``), the poll interval on the monitor
(``c.SlurmMonitor``).  The server extension's REST API and the container
panel (which runs in a notebook kernel, reading the same configuration files)
both ask this class, so they can never disagree.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from jupyter_core.application import JupyterApp
from traitlets import Float, Instance, Int, List, Unicode
from traitlets.config import Config, LoggingConfigurable

from ..containers.images import registry_images, scan_image_dirs
from ..errors import SlurmError
from ..launch.launch_config import LaunchConfig, default_environ, expand_variables
from ..slurm.resources import parse_sinfo, sinfo_argv
from ..slurm.slurm_client import SlurmClient
from .estimate_service import EstimateService
from .site_policy import SitePolicy, check_launch
from .timed_cache import TimedCache


def server_config() -> Config:
    """The Jupyter server's configuration files, read from a process that is not the server (a kernel)."""
    app = JupyterApp(config_file_name="jupyter_server_config")
    app.load_config_file(suppress_errors=True)
    return app.config


class AsgardSite(LoggingConfigurable):
    """The site as users see it; configured like the server (parent=server app, or config=server_config())."""

    image_dirs = List(
        Unicode(),
        ["/enroot", "/netscratch/$USER"],
        help="Directories whose *.sqsh files are offered as images ($USER, $HOME and ${VAR} are expanded).",
    ).tag(config=True)
    registry_images = List(
        Unicode(),
        [],
        help="Registry images offered besides the files, as enroot URIs (docker://nvcr.io#nvidia/pytorch:24.05-py3).",
    ).tag(config=True)
    resources_cache_seconds = Float(
        10.0, help="How long one sinfo answer serves: partitions change slowly, users refresh often."
    ).tag(config=True)
    images_cache_seconds = Float(
        10.0,
        help="How long one scan of the image directories serves (0: every listing scans); a save or removal of an "
        "image by this server starts a new one at once.",
    ).tag(config=True)
    estimates_at_once = Int(
        4,
        help="Most `srun --test-only` the server runs at once for start-time estimates (each estimate takes up to "
        "four), and most estimate requests it answers at once: one more is refused with 429.",
    ).tag(config=True)
    estimate_cache_seconds = Float(
        10.0, help="How long the estimate of one launch configuration serves the same request again (0: never)."
    ).tag(config=True)
    max_terminals_per_kernel = Int(
        8, help="Most terminals open at once in one kernel's container; one more is refused with 429."
    ).tag(config=True)
    client = Instance(SlurmClient, args=())

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._resources: TimedCache[dict[str, Any]] = TimedCache(self.resources_cache_seconds)
        self._images: TimedCache[dict[str, Any]] = TimedCache(self.images_cache_seconds)
        # The site's defaults and limits, configured as the server's kernels' provisioners are.
        self.policy = SitePolicy(config=self.config)
        self.estimates = EstimateService(self.client, self.policy, self.estimates_at_once, self.estimate_cache_seconds)

    # --- data for the API -------------------------------------------------------------------

    async def images(self) -> dict[str, Any]:
        """The images offered, from one scan of the directories shared by all callers within the cache time."""
        return await self._images.get(None, self._scan_images)

    def forget_images(self) -> None:
        """This server saved or removed an image: the next listing scans anew."""
        self._images.forget()

    async def _scan_images(self) -> dict[str, Any]:
        environ = default_environ()
        notes: list[str] = []
        dirs = [expand_variables("image_dirs", path, environ, notes) for path in self.image_dirs]
        saved = expand_variables("saved_images_dir", self.policy.saved_images_dir, environ, notes)
        if await asyncio.to_thread(os.path.isdir, saved):  # made by the first save
            dirs.append(saved)
        found, missing = await asyncio.to_thread(scan_image_dirs, dirs)
        notes += missing
        return {
            "images": [image.to_json() for image in found] + registry_images(list(self.registry_images)),
            "directories": dirs,
            "notes": notes,
        }

    async def resources(self) -> dict[str, Any]:
        """Partitions and GPUs, from one sinfo call shared by all callers within the cache time."""
        return await self._resources.get(None, self._query_resources)

    async def _query_resources(self) -> dict[str, Any]:
        result = (await self.client.run(sinfo_argv())).checked()
        return {"partitions": [partition.to_json() for partition in parse_sinfo(result.stdout)]}

    async def validate(self, values: dict[str, Any]) -> tuple[LaunchConfig | None, list[str]]:
        """Every problem with a launch configuration that can be found without submitting it."""
        config, problems = LaunchConfig.check(values, variables=self.policy.expandable_variables)
        config, refused = await check_launch(config, self.policy, self.policy.partition)
        problems += refused + await self._resource_problems(config)
        return (None if problems else config), problems

    async def _resource_problems(self, config: LaunchConfig) -> list[str]:
        try:
            partitions = (await self.resources())["partitions"]
        except SlurmError as error:
            return [f"cannot check partition and GPUs: Slurm is unreachable ({error})"]
        by_name = {partition["name"]: partition for partition in partitions}
        name = config.partition or next((p["name"] for p in partitions if p["default"]), "")
        if config.partition and name not in by_name:
            return [f"partition {name!r} does not exist; choose one of {', '.join(sorted(by_name))}"]
        gpu_type, count = config.gpu_request()
        offered = by_name.get(name, {}).get("gpus", {})
        if gpu_type and gpu_type not in offered:
            return [
                f"partition {name!r} has no GPUs of type {gpu_type!r}; it has "
                f"{', '.join(sorted(t for t in offered if t)) or 'none'}"
            ]
        total = offered[gpu_type]["total"] if gpu_type else sum(entry["total"] for entry in offered.values())
        if count > total:
            return [
                f"partition {name!r} has {total} GPUs{' of type ' + gpu_type if gpu_type else ''} in all; "
                f"{count} can never be granted"
            ]
        return []
