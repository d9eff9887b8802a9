"""The site's policy for Asgard kernels, and the one check of a launch configuration against it.

Sites configure it as ``c.PyxisProvisioner`` (jupyter_server_config.py): launch
defaults (``mounts``, ``partition``, ...) and what only the site decides (limits,
timeouts, whether to check paths).  The provisioner is a SitePolicy; the REST API
and the container panel read a SitePolicy configured the same way, without a
provisioner's Slurm client and monitor, and all three check a configuration with
check_launch, so a kernel the panel accepts is a kernel that starts.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import fields
from typing import Any

from traitlets import Any as AnyTrait
from traitlets import Bool, CaselessStrEnum, Float, Int, List, Unicode
from traitlets.config import Configurable

from ..containers.launch_plan import workdir_problems
from ..launch.encryption import POLICIES
from ..launch.launch_config import (
    DETACH_MODES,
    LaunchConfig,
    detach_problems,
    path_problems,
    policy_problems,
    with_site_partition,
)

DEFAULT_DETACH_GRACE = 900  # seconds: the site's maximum where it sets none
CONFIG_SECTION = "PyxisProvisioner"  # where sites configure it, as the README and existing sites do


def launch_trait(name: str) -> AnyTrait:
    """The configurable trait of one launch setting, made from its LaunchConfig field (default, help): site
    config sets defaults, kernelspec config overrides.

    Declared loosely (Any) so that a wrong value reaches LaunchConfig.parse,
    which explains it, instead of failing in traitlets with a type error.
    """
    spec = next(spec for spec in fields(LaunchConfig) if spec.name == name)
    default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
    return AnyTrait(default, allow_none=True, help=spec.metadata["help"]).tag(config=True)


class LaunchSettings(Configurable):
    """One trait per LaunchConfig field, named one by one so that type checkers see every setting (a test
    holds the names to LaunchConfig's fields); what each is and its default come from the field."""

    image = launch_trait("image")
    mounts = launch_trait("mounts")
    workdir = launch_trait("workdir")
    container_name = launch_trait("container_name")
    container_writable = launch_trait("container_writable")
    container_remap_root = launch_trait("container_remap_root")
    container_mount_home = launch_trait("container_mount_home")
    container_env = launch_trait("container_env")
    partition = launch_trait("partition")
    gpus = launch_trait("gpus")
    cpus_per_task = launch_trait("cpus_per_task")
    mem = launch_trait("mem")
    time = launch_trait("time")
    account = launch_trait("account")
    qos = launch_trait("qos")
    reservation = launch_trait("reservation")
    constraint = launch_trait("constraint")
    detachable = launch_trait("detachable")
    detach_grace = launch_trait("detach_grace")
    srun_args = launch_trait("srun_args")
    salloc_args = launch_trait("salloc_args")


class SitePolicy(LaunchSettings):
    """Launch defaults and the site's own settings, read from the c.PyxisProvisioner section."""

    max_gpus = Int(8, help="Most GPUs one kernel may ask for.").tag(config=True)
    allowed_partitions = List(Unicode(), help="Partitions kernels may use (empty: any).").tag(config=True)
    queue_timeout = Float(3600.0, help="Seconds a kernel's job may wait in the queue before it is cancelled.").tag(
        config=True
    )
    start_timeout = Float(
        120.0,
        help="Seconds from the allocation's start until the kernel answers "
        "(container start included: large images take a while to unpack).",
    ).tag(config=True)
    expandable_variables = List(
        Unicode(),
        help="Variables of the Jupyter server's environment that a kernel's image, mounts and workdir may name "
        "($NAME or ${NAME}) besides $USER and $HOME, e.g. ['PROJECT']. No other is expanded: a kernelspec on a "
        "shared path could otherwise send the server's secrets (JUPYTERHUB_API_TOKEN) to a registry of its "
        "choosing or onto srun's command line, which every user of the node sees (ps, sacct).",
    ).tag(config=True)
    check_paths = Bool(
        True,
        help="Check image and mount paths on the Jupyter server's host before submitting "
        "(right where login and compute nodes share /enroot and /netscratch).",
    ).tag(config=True)
    mount_workdir = Bool(
        True, help="Mount the workdir at the same path when no mount covers it, as the site's srun example does."
    ).tag(config=True)
    container_name_template = Unicode(
        "jupyter-{kernel_name}-{image_hash}",
        help="Default --container-name: keyed to the kernelspec and image so restarts and later kernels reuse "
        "the container (and what was installed in it) without leaving one per kernel on the node. Fields: "
        "kernel_name, image_hash, user, job_id.",
    ).tag(config=True)
    container_placement = Bool(
        True,
        help="Start a kernel on the node where its named container already is (what the user installed in it "
        "lives in that node's enroot storage), when Slurm would start it there now (srun --test-only); "
        "otherwise it starts where Slurm puts it, and the user is told where their container is. False: Slurm "
        "alone chooses (the user is still told).",
    ).tag(config=True)
    container_placement_wait = Float(
        0.0,
        help="Seconds a kernel may wait for the node where its container is before it starts elsewhere: that "
        "node is asked for when Slurm expects it free within this time. 0: never wait for it.",
    ).tag(config=True)
    bootstrap_python = Unicode("python3", help="The image's Python (3.8+) that runs the bootstrap.").tag(config=True)
    containers = Bool(
        True,
        help="Run kernels in Pyxis containers. False only on a cluster without Pyxis (a "
        "demo cluster where enroot cannot run): kernels then run with the node's own python3 in "
        "the notebook's directory, and image, mounts and container settings have no effect.",
    ).tag(config=True)

    container_progress = Bool(
        True,
        help="Show Pyxis's container setup (creating the container filesystem, starting it) as the kernel's "
        "phase while it starts: the step runs with srun --slurmd-debug=1, which copies slurmstepd's info "
        "messages to the step's stderr. Turn off where Slurm refuses --slurmd-debug to users.",
    ).tag(config=True)
    transport_encryption = CaselessStrEnum(
        list(POLICIES),
        "auto",
        help="CurveZMQ encryption of Asgard kernels' traffic, as jupyter_client's "
        "c.KernelManager.transport_encryption (the stricter of the two applies): 'auto' encrypts every "
        "kernel whose kernelspec declares metadata.supported_encryption ['curve'] (Asgard's do), "
        "'required' refuses to start any other, 'disabled' leaves the kernel's ports in the clear.",
    ).tag(config=True)

    terminal_shell = List(
        Unicode(),
        ["bash", "-l"],
        help="The command a terminal in a kernel's container runs (the panel's 'Terminal in this container').",
    ).tag(config=True)
    saved_images_dir = Unicode(
        "/netscratch/$USER/images",
        help="Where 'Save environment as image' writes NAME.sqsh and its manifest NAME.sqsh.json: a directory "
        "the compute nodes can write and the server can read ($USER and ~ are expanded), and the user's alone: "
        "a save into one another user owns or can write (or below one) is refused. The panel lists "
        "its images with the site's.",
    ).tag(config=True)
    save_timeout = Float(1800.0, help="Seconds a save of a kernel's container may take before it is cancelled.").tag(
        config=True
    )

    import_registry_images = Bool(
        True,
        help="Import a kernel's docker:// image once: its first start imports it (enroot import on its node) into "
        "c.PyxisProvisioner.image_cache_dir under the registry's manifest digest, and later starts, with any "
        "container name on any node, start from that squashfs (the tag is looked up again at each start, so a "
        "moved tag is followed). False: Pyxis imports the image at each new container, as it does by itself.",
    ).tag(config=True)
    image_cache_dir = Unicode(
        "/netscratch/$USER/images/.registry-cache",
        help="Where a kernel's docker:// images are kept once imported, one squashfs per manifest digest "
        "(sha256-HEX.sqsh): a directory the compute nodes share and can write, and the user's alone (the kernels "
        "run what is in it). $USER and ~ are expanded. Remove files from it to reclaim the space.",
    ).tag(config=True)
    import_partition = Unicode(
        "", help="Partition of image import jobs ('Import image'); empty: Slurm's default partition."
    ).tag(config=True)
    import_cpus = Int(4, help="CPUs of an image import job (enroot unpacks and squashes with all of them).").tag(
        config=True
    )
    import_memory = Unicode(
        "8G", help="Memory of an image import job (srun --mem); empty: the partition's default."
    ).tag(config=True)
    import_time_limit = Unicode(
        "2:00:00", help="Time limit of an image import job (srun --time); an import still running then is ended."
    ).tag(config=True)

    detach = CaselessStrEnum(
        list(DETACH_MODES),
        "off",
        help="Whether kernels may be detachable (a kernelspec's or the panel's detachable: true): 'allowed' runs "
        "such a kernel as a batch job that outlives the Jupyter server, for the user's next server to take over. "
        "Needs batch jobs on the kernels' partitions and a home directory the login and compute nodes share.",
    ).tag(config=True)
    keeper_python = Unicode(
        "/usr/bin/env python3",
        help="The compute nodes' own Python 3 (3.8+, outside any container), which runs a detachable kernel's "
        "batch script (what follows #! in it) and image imports (enroot import, with its progress).",
    ).tag(config=True)

    @classmethod
    def section_names(cls) -> list[str]:
        """A SitePolicy of its own reads the provisioner's section; a PyxisProvisioner reads it anyway."""
        names = super().section_names()
        return names if CONFIG_SECTION in names else [*names, CONFIG_SECTION]


def check_allocation(
    config: LaunchConfig, policy: SitePolicy, site_partition: str, site_grace: int | None = None
) -> tuple[LaunchConfig, list[str]]:
    """What the site's limits refuse in the allocation a configuration asks for (GPUs, partition, detaching),
    with the site's partition filled in: all a start-time estimate needs checked. site_partition and
    site_grace: the site's own values of these settings, before a kernelspec's override them (default: the
    policy's)."""
    site_grace = max_detach_grace(policy.detach_grace if site_grace is None else site_grace)
    config = with_site_partition(config, site_partition, policy.allowed_partitions)
    problems = policy_problems(config, policy.max_gpus, policy.allowed_partitions)
    return config, problems + detach_problems(config, policy.detach, site_grace)


def max_detach_grace(site_value: Any) -> int:
    """The site's c.PyxisProvisioner.detach_grace is also the most a kernel may ask for (unset: the default)."""
    return int(site_value) if isinstance(site_value, int | float) and site_value > 0 else DEFAULT_DETACH_GRACE


async def check_launch(
    config: LaunchConfig,
    policy: SitePolicy,
    site_partition: str,
    workdir: str | None = None,
    site_grace: int | None = None,
) -> tuple[LaunchConfig, list[str]]:
    """The configuration as it will run (the site's partition filled in) and what the site's policy refuses
    in it: limits, a notebook directory Pyxis cannot mount (workdir: where the kernel starts, when known),
    paths that do not exist (where the site checks them, and only for containers)."""
    config, problems = check_allocation(config, policy, site_partition, site_grace)
    if workdir is not None:
        problems += workdir_problems(config, workdir, policy.mount_workdir)
    if policy.check_paths and policy.containers:
        problems += await asyncio.to_thread(path_problems, config, os.path.exists)
    return config, problems
