"""The container panel driven through its widget state, as a notebook user would, without a browser."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager
from traitlets.config import Config

from jupyter_asgard.containers.image_imports import ImageImport
from jupyter_asgard.errors import KernelspecStoreError
from jupyter_asgard.kernel.kernelspec_store import KernelspecStore
from jupyter_asgard.launch.launch_config import LaunchConfig
from jupyter_asgard.site.site import AsgardSite
from jupyter_asgard.slurm.slurm_client import SlurmClient
from jupyter_asgard.widgets import ContainerPanel
from jupyter_asgard.widgets.image import ImagePicker
from jupyter_asgard.widgets.mounts import ERROR_STYLE
from tests.cluster import LocalCluster


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    images = tmp_path / "enroot"
    images.mkdir()
    (images / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh").write_bytes(b"\0" * 2048)
    (images / "nvidia+pytorch+24.05-py3.sqsh").write_bytes(b"")
    return images


@pytest.fixture
def store(tmp_path: Path) -> KernelspecStore:
    kernels = tmp_path / "kernels"
    kernels.mkdir()
    return KernelspecStore(KernelSpecManager(kernel_dirs=[str(kernels)]), kernels)


def make_panel(
    image_dir: Path, store: KernelspecStore, workdir: Path, policy: dict[str, object] | None = None, **site: object
) -> ContainerPanel:
    """A panel on a site with these images (AsgardSite settings site, c.PyxisProvisioner settings policy)."""
    config = Config({"AsgardSite": {"image_dirs": [str(image_dir)], **site}, "PyxisProvisioner": policy or {}})
    return ContainerPanel(AsgardSite(config=config, client=SlurmClient(timeout=5)), store, str(workdir), autoload=False)


def preview_text(panel: ContainerPanel) -> str:
    return panel.preview.value.replace("&#x27;", "'")


async def test_panel_shows_site_mounts_images_and_a_live_preview(
    slurm_cluster: LocalCluster, image_dir: Path, store: KernelspecStore, tmp_path: Path
) -> None:
    panel = make_panel(image_dir, store, tmp_path)
    assert panel.mounts.entries() == ["/netscratch/$USER:/netscratch/$USER", "/ds:/ds:ro"]
    assert "Choose an image" in panel.preview.value
    await panel.refresh()
    labels = list(panel.image.choice.options)
    assert labels[0].startswith("nvcr.io/nvidia/pytorch:23.12-py3 · 2.0 KB · ")
    assert "2 partitions" in panel.status.value
    panel.image.choice.value = labels[0]
    assert panel.image.value == str(image_dir / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh")
    assert f"--container-image={image_dir}/nvcr.io_nvidia_pytorch_23.12-py3.sqsh" in preview_text(panel)
    assert "--container-mounts=/netscratch/root:/netscratch/root,/ds:/ds:ro," in preview_text(panel)
    gpu_option = next(label for label, value in panel.resources.partition.options if value == "gpu")
    assert gpu_option == "gpu (default): 4 of 4 H100 free, no time limit"
    panel.resources.partition.value = "debug"
    panel.resources.gpus.value = 2
    panel.resources.gpu_type.value = "h100"
    assert "--partition=debug" in preview_text(panel) and "--gpus=h100:2" in preview_text(panel)
    panel.image.choice.value = "docker://nvcr.io#nvidia/pytorch:24.05-py3"
    assert panel.image.value == "docker://nvcr.io#nvidia/pytorch:24.05-py3"
    assert "registry image" in panel.image.details.value


def test_a_bad_mount_row_says_why_and_stays_out_of_the_preview(
    image_dir: Path, store: KernelspecStore, tmp_path: Path
) -> None:
    panel = make_panel(image_dir, store, tmp_path)
    panel.image.choice.value = "/enroot/x.sqsh"
    row = panel.mounts.append("")
    row.source.value = "data"
    row.target.value = "/data"
    assert "the source must be an absolute path" in row.error.value
    assert "data:/data" not in preview_text(panel)
    row.source.value = "/srv/data"
    row.read_only.value = True
    assert row.error.value == ""
    assert "/srv/data:/data:ro" in preview_text(panel)
    panel.mounts.rows[0].remove.click()
    assert panel.mounts.entries() == ["/ds:/ds:ro", "/srv/data:/data:ro"]


async def test_save_load_and_delete_a_kernel(
    slurm_cluster: LocalCluster, image_dir: Path, store: KernelspecStore, tmp_path: Path
) -> None:
    panel = make_panel(image_dir, store, tmp_path)
    await panel.refresh()
    panel.image.value = str(image_dir / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh")
    panel.mounts.set_entries([f"{slurm_cluster.datasets}:/ds:ro"])
    panel.container_name.value = "my-env"
    panel.resources.time.value = "4:00:00"
    panel.display_name.value = "PyTorch on 1 GPU"
    assert panel.kernel_name.value == "pytorch-on-1-gpu"
    assert await panel.save() is True
    assert "Saved kernel" in panel.messages.value
    spec = json.loads((store.kernels_dir / "pytorch-on-1-gpu" / "kernel.json").read_text())
    assert spec["metadata"]["supported_encryption"] == ["curve"]  # encrypted, as every Asgard kernel
    config = spec["metadata"]["kernel_provisioner"]["config"]
    assert config == {
        "image": str(image_dir / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh"),
        "mounts": [f"{slurm_cluster.datasets}:/ds:ro"],
        "container_name": "my-env",
        "container_writable": True,
        "gpus": 1,
        "time": "4:00:00",
    }
    assert ("PyTorch on 1 GPU (pytorch-on-1-gpu)", "pytorch-on-1-gpu") in panel.existing.options

    fresh = make_panel(image_dir, store, tmp_path)
    await fresh.refresh()
    await fresh.load("pytorch-on-1-gpu")
    assert fresh.values() == panel.values()
    assert fresh.display_name.value == "PyTorch on 1 GPU"
    await fresh.delete("pytorch-on-1-gpu")
    assert not (store.kernels_dir / "pytorch-on-1-gpu").exists()
    assert "Deleted" in fresh.messages.value


async def test_save_shows_every_problem_in_the_panel(
    slurm_cluster: LocalCluster, image_dir: Path, store: KernelspecStore, tmp_path: Path
) -> None:
    panel = make_panel(image_dir, store, tmp_path)
    panel.image.choice.value = "/enroot/missing.sqsh"
    panel.mounts.set_entries(["/no/such/dir:/data", "relative:/x"])
    panel.resources.gpus.value = 8
    assert await panel.save() is False
    text = panel.messages.value
    for problem in (
        "image /enroot/missing.sqsh does not exist",
        "mount source /no/such/dir does not exist",
        "the source must be an absolute path",
        "8 can never be granted",
        "give the kernel a name",
    ):
        assert problem in text, text
    assert list(store.kernels_dir.iterdir()) == []


async def test_without_slurm_the_panel_shows_what_it_can(
    image_dir: Path, store: KernelspecStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no sinfo anywhere
    panel = make_panel(image_dir, store, tmp_path)
    await panel.refresh()
    assert len(panel.image.choice.options) == 2
    assert "Slurm is not reachable" in panel.status.value
    assert "sinfo" in panel.status.value


async def test_foreign_kernelspecs_are_listed_read_only_and_never_overwritten(
    image_dir: Path, store: KernelspecStore, tmp_path: Path
) -> None:
    foreign = store.kernels_dir / "site-pytorch"
    foreign.mkdir()
    (foreign / "kernel.json").write_text(
        json.dumps(
            {
                "argv": ["python3"],
                "display_name": "Site PyTorch",
                "language": "python",
                "metadata": {
                    "kernel_provisioner": {"provisioner_name": "pyxis-provisioner", "config": {"image": "/x"}}
                },
            }
        )
    )
    panel = make_panel(image_dir, store, tmp_path)
    await panel._list_kernels()
    assert ("Site PyTorch (site-pytorch), read-only", "site-pytorch") in panel.existing.options
    await panel.delete("site-pytorch")
    assert "was not created by jupyter-asgard" in panel.messages.value
    assert foreign.exists()


def test_deleting_a_kernel_found_outside_the_users_own_kernels_leaves_it_alone(tmp_path: Path) -> None:
    """An Asgard kernelspec of the same name in another directory of Jupyter's path (a site's, an environment's)
    is found by the lookup, but is not the user's to delete."""
    own, site = tmp_path / "own", tmp_path / "site"
    KernelspecStore(KernelSpecManager(kernel_dirs=[str(site)]), kernels_dir=site).write(
        "shared", "Shared", {"image": "/enroot/x.sqsh"}
    )
    store = KernelspecStore(KernelSpecManager(kernel_dirs=[str(own), str(site)]), kernels_dir=own)
    with pytest.raises(KernelspecStoreError, match="outside your own kernels"):
        store.delete("shared")
    assert (site / "shared" / "kernel.json").exists()


def test_an_image_path_is_shown_as_text_in_the_panel(tmp_path: Path) -> None:
    """A file named like markup in a shared image directory must not become markup in everyone's panel."""
    picker = ImagePicker(on_change=lambda: None)
    picker.value = "/enroot/<img src=x onerror=alert(1)>.sqsh"
    assert "<img" not in picker.details.value and "&lt;img src=x" in picker.details.value


def test_a_kernel_name_with_a_trailing_newline_is_refused(store: KernelspecStore) -> None:
    with pytest.raises(KernelspecStoreError, match="may contain only letters"):
        store.write("mine\n", "Mine", {"image": "/enroot/x.sqsh"})
    assert list(store.kernels_dir.iterdir()) == []


@pytest.mark.parametrize(
    "flags", [{}, {"container_writable": False, "container_remap_root": True, "container_mount_home": False}]
)
async def test_loading_and_saving_a_kernel_keeps_its_container_flags_as_they_were(
    slurm_cluster: LocalCluster, image_dir: Path, store: KernelspecStore, tmp_path: Path, flags: dict[str, bool]
) -> None:
    """Each flag is yes, no, or unset (the site's default): a round trip through the panel changes none (the
    save checks the partition with Slurm: on the cluster, not on whatever SLURM_CONF an earlier test left)."""
    config = {"image": str(image_dir / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh"), **flags}
    store.write("flagged", "Flagged", config)
    panel = make_panel(image_dir, store, tmp_path)
    await panel.load("flagged")
    assert {name: panel.values()[name] for name in flags} == flags
    assert await panel.save() is True
    saved = json.loads((store.kernels_dir / "flagged" / "kernel.json").read_text())
    assert saved["metadata"]["kernel_provisioner"]["config"] == config


async def test_the_panel_and_the_rest_api_check_as_the_provisioner_does(slurm_cluster: LocalCluster) -> None:
    """Where the site checks no paths on the server's host (c.PyxisProvisioner.check_paths = False: login and
    compute nodes see different file systems), the provisioner starts such a kernel: so the site accepts it."""
    image = "/only/on/the/compute/nodes.sqsh"
    unchecked = AsgardSite(config=Config({"PyxisProvisioner": {"check_paths": False, "max_gpus": 1}}))
    config, problems = await unchecked.validate({"image": image})
    assert problems == [] and config is not None and config.image == image
    config, problems = await AsgardSite(config=Config()).validate({"image": image})
    assert config is None and problems == [
        f"image {image} does not exist on the Jupyter server's host: check the "
        "path (images are .sqsh files, e.g. in /enroot)"
    ]
    _, problems = await unchecked.validate({"image": image, "gpus": 2})
    assert problems == ["gpus: 2 GPUs requested but this site allows at most 1 per kernel; ask for 1 or fewer"]


async def test_the_panel_estimates_when_the_settings_rest_and_only_when_the_allocation_changes(
    slurm_cluster: LocalCluster, image_dir: Path, store: KernelspecStore, tmp_path: Path
) -> None:
    panel = make_panel(image_dir, store, tmp_path)
    calls = panel.site.client.calls
    panel.image.value = str(image_dir / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh")
    before = calls["srun"]
    for gpus in (1, 2, 1, 2):  # a burst of clicks: one estimate, once they rest
        panel.resources.gpus.value = gpus
    panel.resources.time.value = "2:00:00"
    await panel.estimate.settled()
    # as configured, one GPU instead of two, a shorter time: one srun --test-only each
    assert calls["srun"] - before == 3, panel.estimate.value
    shown = panel.estimate.value
    assert "starts now on gpu0" in shown and "or 1 GPU instead of 2: starts now on gpu0" in shown
    assert "or time limit 1:00:00: starts now" in shown
    asked = calls["srun"]
    panel.display_name.value = "PyTorch on 2 GPUs"  # nothing the allocation asks for
    panel.mounts.set_entries([f"{slurm_cluster.datasets}:/ds:ro"])
    await asyncio.sleep(1.5)
    await panel.estimate.settled()
    assert calls["srun"] == asked  # nothing while the allocation stays the same
    panel.resources.time.value = "soon"  # no time limit Slurm knows: nothing to ask, the box says why
    await panel.estimate.settled()
    assert calls["srun"] == asked and "Fix the settings above" in panel.estimate.value


def every_launch_setting(image_dir: Path) -> dict[str, object]:
    """A value for every LaunchConfig key, none of them its default."""
    config: dict[str, object] = {
        "image": str(image_dir / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh"),
        "mounts": ["/ds:/ds:ro"],
        "workdir": "/ds",
        "container_name": "my-env",
        "container_writable": True,
        "container_remap_root": False,
        "container_mount_home": False,
        "container_env": ["WANDB_API_KEY"],
        "partition": "debug",
        "gpus": "h100:1",
        "cpus_per_task": 2,
        "mem": "4G",
        "time": "0:20:00",
        "account": "lab",
        "qos": "normal",
        "reservation": "maint",
        "constraint": "h100",
        "detachable": True,
        "detach_grace": 300,
        "srun_args": ["--gpu-bind=closest"],
        "salloc_args": ["--nice=10"],
    }
    assert sorted(config) == sorted(LaunchConfig.keys())  # a new setting must be added here
    return config


def test_the_panel_keeps_every_launch_setting_it_loads_also_those_it_shows_no_control_for(
    image_dir: Path, store: KernelspecStore, tmp_path: Path
) -> None:
    config = every_launch_setting(image_dir)
    panel = make_panel(image_dir, store, tmp_path)
    panel.set_values(config)
    assert panel.values() == config
    panel.set_values({"image": config["image"]})  # another kernel loaded: nothing of the first stays
    assert {key: value for key, value in panel.values().items() if key in ("account", "srun_args")} == {}


async def test_loading_and_saving_a_kernel_in_the_panel_keeps_every_launch_setting(
    slurm_cluster: LocalCluster, image_dir: Path, store: KernelspecStore, tmp_path: Path
) -> None:
    datasets = str(slurm_cluster.datasets)  # paths the server's checks find
    config = {**every_launch_setting(image_dir), "mounts": [f"{datasets}:{datasets}:ro"], "workdir": datasets}
    store.write("full", "Every setting", config)
    panel = make_panel(image_dir, store, tmp_path, policy={"detach": "allowed"})  # detachable is a setting too
    await panel.load("full")
    assert await panel.save() is True, panel.messages.value
    assert store.read("full")["config"] == config


def test_the_detachable_box_shows_where_the_site_allows_it_and_sets_the_setting(
    image_dir: Path, store: KernelspecStore, tmp_path: Path
) -> None:
    assert make_panel(image_dir, store, tmp_path).detachable.layout.display == "none"
    panel = make_panel(image_dir, store, tmp_path, policy={"detach": "allowed"})
    assert panel.detachable.layout.display == "" and panel.values()["detachable"] is None
    panel.detachable.value = True
    assert panel.values()["detachable"] is True
    panel.set_values({"image": "/x.sqsh", "detachable": False})
    assert panel.detachable.value is False and panel.values()["detachable"] is None


class FakeImports:
    """ImageImports without Slurm: an import the test moves along by hand; once "imported", its image is in place.
    Everything else (refusals of bad URIs and names) is the real ImageImports' business, tested with it."""

    def __init__(self) -> None:
        self.found: ImageImport | None = None
        self.ended = asyncio.Event()
        self.cancelled: list[str] = []

    async def start(self, uri: str, name: str = "") -> tuple[ImageImport, bool]:
        self.found = ImageImport("imp1", uri, name, "")
        return self.found, True

    def move(self, state: str, done: int = 0, total: int = 0, **changes: object) -> None:
        assert self.found is not None
        self.found.state = state
        self.found.progress.layers_done, self.found.progress.layers_total = done, total
        for key, value in changes.items():
            setattr(self.found, key, value)
        if not self.found.running:
            if state == "imported":
                Path(self.found.path).write_bytes(b"\0" * 4096)
            self.ended.set()

    async def wait(self, import_id: str) -> ImageImport:
        await self.ended.wait()
        assert self.found is not None
        return self.found

    async def cancel(self, import_id: str) -> ImageImport:
        self.cancelled.append(import_id)
        self.move("cancelled", message="cancelled")
        assert self.found is not None
        return self.found


async def until(condition: Callable[[], bool], timeout: float = 5) -> None:
    """Let the panel's tasks run until condition holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the panel never got there"
        await asyncio.sleep(0.05)


@pytest.fixture
def import_panel(image_dir: Path, store: KernelspecStore, tmp_path: Path) -> tuple[ContainerPanel, FakeImports]:
    """A panel whose imports are moved along by the test, into its own image directory."""
    saved = tmp_path / "my-images"
    panel = make_panel(image_dir, store, tmp_path, policy={"saved_images_dir": str(saved)})
    fake = FakeImports()
    panel.importer.imports = fake
    return panel, fake


async def test_an_import_shows_its_status_and_layers_and_the_picker_then_offers_its_image(
    import_panel: tuple[ContainerPanel, FakeImports], tmp_path: Path
) -> None:
    panel, fake = import_panel
    box = panel.importer
    (tmp_path / "my-images").mkdir()
    box.uri.value, box.name.value = "docker://nvcr.io#nvidia/pytorch:24.05-py3", "pytorch-24.05"
    box.import_button.click()
    await until(lambda: fake.found is not None)
    assert fake.found is not None
    fake.found.path = str(tmp_path / "my-images" / "pytorch-24.05.sqsh")
    fake.found.job_id = "12"
    await until(lambda: "waiting in the Slurm queue (job 12)" in box.status.value)
    assert box.import_button.disabled and box.cancel_button.layout.display == ""
    assert box.progress.layout.display == "none"  # no layers known yet
    fake.move("importing", 2, 5)
    await until(lambda: box.progress.value == 2)
    assert (box.progress.max, box.progress.layout.display) == (5, "")
    fake.move("imported", 5, 5, size=4096)
    await until(lambda: panel.image.value == fake.found.path)  # type: ignore[union-attr]
    assert f"imported as {fake.found.path}" in box.status.value
    assert any(label.startswith("pytorch-24.05 · 4.0 KB") for label in panel.image.choice.options)
    assert not box.import_button.disabled and box.cancel_button.layout.display == "none"
    assert box.progress.layout.display == "none"


async def test_cancel_ends_the_import_and_a_failure_shows_its_message_and_hint(
    import_panel: tuple[ContainerPanel, FakeImports],
) -> None:
    panel, fake = import_panel
    box = panel.importer
    box.uri.value = "docker://nvcr.io#nvidia/pytorch:24.05-py3"
    following = asyncio.ensure_future(box.start())
    await until(lambda: box.cancel_button.layout.display == "")
    box.cancel_button.click()
    found = await asyncio.wait_for(following, 5)
    assert found is not None and found.state == "cancelled" and fake.cancelled == ["imp1"]
    assert "cancelled" in box.status.value and ERROR_STYLE not in box.status.value
    assert box.cancel_button.layout.display == "none" and not box.import_button.disabled

    fake.ended.clear()
    following = asyncio.ensure_future(box.start())
    await until(lambda: box.import_button.disabled)
    fake.move("failed", message="the registry has no tag 24.05-py3", hint="check the tag on the registry's page")
    await asyncio.wait_for(following, 5)
    assert ERROR_STYLE in box.status.value
    assert "Not imported: the registry has no tag 24.05-py3" in box.status.value
    assert "How to fix: check the tag on the registry&#x27;s page" in box.status.value
    assert panel.image.value == ""  # nothing chosen for a failed import


@pytest.mark.parametrize(
    ("uri", "name"), [("", ""), ("not an image", ""), ("docker://nvcr.io#nvidia/pytorch:24.05-py3", "../up")]
)
async def test_a_refused_import_says_why_in_the_panel_and_starts_nothing(
    image_dir: Path, store: KernelspecStore, tmp_path: Path, uri: str, name: str
) -> None:
    """The real ImageImports refuses before anything reaches Slurm."""
    panel = make_panel(image_dir, store, tmp_path, policy={"saved_images_dir": str(tmp_path / "my-images")})
    box = panel.importer
    box.uri.value, box.name.value = uri, name
    assert await box.start() is None
    assert ERROR_STYLE in box.status.value and "Not imported: " in box.status.value
    assert panel.imports.listing() == [] and not box.import_button.disabled
