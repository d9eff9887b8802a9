"""ContainerPanel: one tidy panel to choose where a kernel runs and save it as a kernel.

It runs in a notebook kernel on the Jupyter server's host and reads the same
configuration as the server (AsgardSite), so it offers what the REST API
offers.  Everything slow (Slurm, the filesystem) runs as asyncio tasks on the
kernel's own event loop: the kernel stays responsive, and with no cluster
reachable the panel shows what it can and says what is missing.
"""

from __future__ import annotations

import asyncio
import html
import os
import re
from typing import Any

import ipywidgets as w

from ..containers.image_imports import ImageImport, ImageImports
from ..containers.launch_plan import preview
from ..errors import KernelspecStoreError, SlurmError
from ..kernel.kernel_env import import_environment
from ..kernel.kernelspec_store import KERNEL_ARGV, KernelspecStore
from ..kernel.kernelspecs import DEFAULT_KERNEL, bundled_kernelspec_dir, load_kernelspec, provisioner_config
from ..launch.launch_config import LaunchConfig
from ..site.site import AsgardSite, server_config
from ..slurm.slurm_client import SlurmClient
from .estimate import EstimateBox
from .flags import PyxisFlag
from .image import ImagePicker
from .image_import import ImageImportBox
from .mounts import ERROR_STYLE, MountList
from .resources import ResourcesBox

NAMED_CONTAINER_NOTE = (
    "A named container keeps what you install in it (pip install ...) across kernel restarts "
    "and later kernels on the same node; leave empty for one per kernel and image."
)
SLURM_TIMEOUT = 10.0


def slug(text: str) -> str:
    """A kernelspec name from a display name: what Jupyter allows in a kernel's name."""
    return re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-.")[:64] or "asgard-kernel"


def _message(text: str, ok: bool = True) -> str:
    style = "color: var(--jp-success-color1, #2e7d32)" if ok else ERROR_STYLE
    return f'<div style="{style}">{text}</div>'


class ContainerPanel(w.VBox):  # type: ignore[misc]  # ipywidgets is untyped: its classes are Any to mypy
    """ContainerPanel() in a notebook: image, mounts, workdir, container, resources, preview, save."""

    def __init__(
        self,
        site: AsgardSite | None = None,
        store: KernelspecStore | None = None,
        workdir: str | None = None,
        autoload: bool = True,
    ) -> None:
        self._built = False  # controls report changes while being built; the preview waits for all of them
        self.kept: dict[str, Any] = {}  # loaded launch settings the panel shows no control for
        self._tasks: set[asyncio.Task[Any]] = set()  # the loop keeps only weak references to its tasks
        self.site = site or AsgardSite(config=server_config(), client=SlurmClient(timeout=SLURM_TIMEOUT))
        self.store = store or KernelspecStore()
        policy = self.site.policy
        self.policy = policy
        self.launch_dir = workdir or os.getcwd()
        self.status = w.HTML("<small>Loading images and partitions…</small>")
        self.image = ImagePicker(self._changed)
        # Its own imports (a job each, on the kernel's loop): the Jupyter server's side panel does not show them.
        self.imports = ImageImports(self.site.client, policy, self.site.forget_images, import_environment(os.environ))
        self.importer = ImageImportBox(self.imports, self._imported, self._spawn)
        self.mounts = MountList(self._default_mounts(), self._changed)
        self.workdir = w.Text(
            placeholder=f"default: the notebook's directory ({self.launch_dir})",
            description="Workdir",
            layout=w.Layout(width="100%"),
        )
        self.container_name = w.Text(placeholder="automatic", description="Container", layout=w.Layout(width="60%"))
        self.writable = PyxisFlag("writable (pip install works)", True)
        self.remap_root = PyxisFlag("appear as root inside")
        self.mount_home = PyxisFlag("home directory mounted")
        self.detachable = w.Checkbox(
            False,
            description="keep running when the Jupyter server stops (your next server takes it over)",
            indent=False,
            layout=w.Layout(width="auto", display="" if policy.detach == "allowed" else "none"),
        )
        self.resources = ResourcesBox(policy.max_gpus, self._changed)
        self.preview = w.HTML()
        self.estimate = EstimateBox(self.site.client, policy)
        self.display_name = w.Text(
            placeholder="e.g. PyTorch 24.05 on 2 GPUs", description="Name", layout=w.Layout(width="50%")
        )
        self.kernel_name = w.Text(placeholder="kernel name", layout=w.Layout(width="30%"))
        self.save_button = w.Button(description="Save as kernel", icon="save", button_style="primary")
        self.existing = w.Dropdown(options=[("(your Asgard kernels)", "")], layout=w.Layout(width="50%"))
        self.load_button = w.Button(description="Load", icon="folder-open")
        self.delete_button = w.Button(description="Delete", icon="trash", button_style="danger")
        self.messages = w.HTML()
        self._wire()
        super().__init__(self._sections(), layout=w.Layout(max_width="960px"))
        self._built = True
        self._changed()
        if autoload:
            self.refresh_soon()

    # --- layout ---------------------------------------------------------------------------

    def _sections(self) -> list[w.Widget]:
        def heading(text: str) -> w.HTML:
            return w.HTML(f"<b>{text}</b>")

        return [
            w.HTML("<h3 style='margin: 0'>Asgard container</h3>"),
            self.status,
            heading("Image"),
            self.image,
            w.HTML("<small>Or import a registry image into your image directory (a Slurm job):</small>"),
            self.importer,
            heading("Mounts"),
            self.mounts,
            heading("Container"),
            self.workdir,
            self.container_name,
            w.HTML(f"<small>{NAMED_CONTAINER_NOTE}</small>"),
            w.HBox([self.writable, self.remap_root, self.mount_home]),
            self.detachable,
            heading("Resources"),
            self.resources,
            heading("When it would start"),
            self.estimate,
            heading("The kernel will run"),
            self.preview,
            heading("Save"),
            w.HBox([self.display_name, self.kernel_name, self.save_button]),
            w.HBox([self.existing, self.load_button, self.delete_button]),
            self.messages,
        ]

    def _wire(self) -> None:
        for control in (
            self.workdir,
            self.container_name,
            self.writable,
            self.remap_root,
            self.mount_home,
            self.detachable,
            self.kernel_name,
        ):
            control.observe(lambda _: self._changed(), "value")
        self.display_name.observe(self._name_typed, "value")
        self.save_button.on_click(lambda _: self._spawn(self.save()))
        self.load_button.on_click(lambda _: self._spawn(self.load(self.existing.value)))
        self.delete_button.on_click(lambda _: self._spawn(self.delete(self.existing.value)))

    # --- values ---------------------------------------------------------------------------

    def values(self) -> dict[str, Any]:
        """The launch configuration as typed ($USER stays for the provisioner to expand at start), with the
        settings the panel has no control for (account, qos, container_env, srun_args, ...) as they were
        loaded: saving a loaded kernel again keeps every key of its LaunchConfig."""
        return {**self.kept, **self._shown_values()}

    def _shown_values(self) -> dict[str, Any]:
        return {
            "image": self.image.value,
            "mounts": self.mounts.entries(),
            "workdir": self.workdir.value.strip(),
            "container_name": self.container_name.value.strip(),
            "container_writable": self.writable.flag,
            "container_remap_root": self.remap_root.flag,
            "container_mount_home": self.mount_home.flag,
            "detachable": True if self.detachable.value else None,  # unchecked: not pinned, as the others
            **self.resources.values(),
        }

    def set_values(self, config: dict[str, Any]) -> None:
        shown = self._shown_values()
        self.kept = {key: config[key] for key in LaunchConfig.keys() if key in config and key not in shown}
        self.image.value = config.get("image", "")
        self.mounts.set_entries(list(config.get("mounts", [])))
        self.workdir.value = config.get("workdir", "")
        self.container_name.value = config.get("container_name", "")
        self.writable.flag = config.get("container_writable")
        self.remap_root.flag = config.get("container_remap_root")
        self.mount_home.flag = config.get("container_mount_home")
        self.detachable.value = bool(config.get("detachable"))
        self.resources.set_values(config)

    def _default_mounts(self) -> list[str]:
        """The site's default mounts if it set any, else those of the bundled Asgard PyTorch kernel."""
        configured = list(self.policy.mounts or [])
        if configured:
            return configured
        bundled = provisioner_config(load_kernelspec(bundled_kernelspec_dir(DEFAULT_KERNEL))) or {}
        return list(bundled.get("mounts", []))

    # --- reactions --------------------------------------------------------------------------

    def _name_typed(self, change: dict[str, Any]) -> None:
        if not self.kernel_name.value or self.kernel_name.value == slug(change["old"] or ""):
            self.kernel_name.value = slug(change["new"])

    def _changed(self) -> None:
        if not self._built:
            return
        values = {**self.values(), "mounts": self.mounts.valid_entries()}
        config, problems = LaunchConfig.check(
            {key: value for key, value in values.items() if value not in ("", None)},
            variables=self.policy.expandable_variables,
        )
        self.estimate.update(None if problems or not config.image else config)
        if not config.image:
            self.preview.value = "<small>Choose an image to see the exact commands.</small>"
            return
        try:
            text = preview(
                config,
                kernel_name=self.kernel_name.value or "asgard-kernel",
                workdir=self.launch_dir,
                mount_workdir=self.policy.mount_workdir,
                name_template=self.policy.container_name_template,
                kernel_argv=KERNEL_ARGV,
                bootstrap_python=self.policy.bootstrap_python,
                progress=self.policy.container_progress,
            )
        except ValueError as error:
            text = f"(not yet: {error})"
        self.preview.value = (
            f"<pre style='user-select: text; white-space: pre-wrap; padding: 6px; "
            f"background: var(--jp-layout-color2, #eee)'>{html.escape(text)}</pre>"
        )

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def refresh_soon(self) -> None:
        """Load in the background when a loop runs (in a kernel it does); never block the cell."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self.status.value = "<small>Call <code>await panel.refresh()</code> to load images and partitions."
            return
        self._spawn(self.refresh())

    # --- actions (async: they ask Slurm and the filesystem) -----------------------------

    async def refresh(self) -> None:
        """Images, partitions and saved kernels; whatever cannot be had is said, the rest shown."""
        notes = []
        images = await self._list_images()
        notes += images["notes"]
        try:
            self.resources.set_partitions((await self.site.resources())["partitions"])
        except SlurmError as error:
            notes.append(f"Slurm is not reachable, so partitions and free GPUs are unknown: {error}")
        await self._list_kernels()
        found = f"{len(images['images'])} images, {len(self.resources.partitions)} partitions"
        self.status.value = "<small>" + html.escape("; ".join([found, *notes])) + "</small>"

    async def _imported(self, found: ImageImport) -> None:
        """An import ended with its image in place: list the images again, and choose the new one."""
        await self._list_images()
        self.image.value = found.path

    async def _list_images(self) -> dict[str, Any]:
        """The site's images, offered by the picker; the listing, with its notes."""
        images = await self.site.images()
        self.image.set_images(images["images"])
        return images

    async def _list_kernels(self) -> None:
        kernels = await asyncio.to_thread(self.store.list)
        self.existing.options = [("(your Asgard kernels)", "")] + [
            (f"{k['display_name']} ({k['name']})" + ("" if k["managed"] else ", read-only"), k["name"]) for k in kernels
        ]

    async def save(self) -> bool:
        """Validate everything (paths, partition, GPUs), then write the kernelspec; problems stay in the panel."""
        name, display_name = self.kernel_name.value.strip(), self.display_name.value.strip()
        values = {key: value for key, value in self.values().items() if value not in ("", None, [])}
        _, problems = await self.site.validate(values)
        problems = self.mounts.problems() + problems
        if not display_name:
            problems.append("give the kernel a name (it is shown in JupyterLab's kernel picker)")
        if problems:
            self.messages.value = _message("Not saved: " + "<br>".join(map(html.escape, problems)), ok=False)
            return False
        try:
            saved = await asyncio.to_thread(self.store.write, name, display_name, values)
        except KernelspecStoreError as error:
            self.messages.value = _message(f"Not saved: {html.escape(str(error))}", ok=False)
            return False
        await self._list_kernels()
        self.messages.value = _message(
            f"Saved kernel <b>{html.escape(saved['display_name'])}</b> ({html.escape(name)}): pick it in the "
            "Launcher or with Kernel › Change Kernel."
        )
        return True

    async def load(self, name: str) -> None:
        if not name:
            self.messages.value = _message("Choose one of your Asgard kernels to load.", ok=False)
            return
        try:
            spec = await asyncio.to_thread(self.store.read, name)
        except KernelspecStoreError as error:
            self.messages.value = _message(html.escape(str(error)), ok=False)
            return
        self.set_values(spec["config"] or {})
        self.display_name.value = spec["display_name"]
        self.kernel_name.value = name
        self.messages.value = _message(f"Loaded <b>{html.escape(spec['display_name'])}</b>.")

    async def delete(self, name: str) -> None:
        if not name:
            self.messages.value = _message("Choose one of your Asgard kernels to delete.", ok=False)
            return
        try:
            await asyncio.to_thread(self.store.delete, name)
        except KernelspecStoreError as error:
            self.messages.value = _message(html.escape(str(error)), ok=False)
            return
        await self._list_kernels()
        self.messages.value = _message(f"Deleted kernel {html.escape(name)}.")
