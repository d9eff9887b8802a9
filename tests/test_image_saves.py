"""The files of a save, without Slurm: where Pyxis may write, and how a finished image takes its name."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from jupyter_asgard.containers.image_dir import private_staging, publish
from jupyter_asgard.errors import ImageRefused


def test_pyxis_writes_in_a_private_directory_the_server_makes_in_the_image_directory(tmp_path: Path) -> None:
    images = tmp_path / "netscratch" / "ada" / "images"
    staging = Path(private_staging(str(images), str(images / "env.sqsh"), "saved_images_dir", ".saving-"))
    info = staging.stat()
    assert staging.parent == images and staging.name.startswith(".saving-")
    assert (stat.S_IMODE(info.st_mode), info.st_uid) == (0o700, os.geteuid())
    assert stat.S_IMODE(images.stat().st_mode) == 0o700  # made by the first save, the user's alone


def test_a_directory_others_can_write_is_refused_before_anything_is_made_in_it(tmp_path: Path) -> None:
    tmp_path.chmod(0o777)
    with pytest.raises(ImageRefused) as refused:
        private_staging(str(tmp_path), str(tmp_path / "env.sqsh"), "saved_images_dir", ".saving-")
    assert refused.value.status == 400
    assert refused.value.message.startswith(
        f"the image directory {tmp_path} is not safe to write images in: {tmp_path} can"
    )
    assert list(tmp_path.iterdir()) == []


def test_a_link_at_the_images_name_is_a_name_taken(tmp_path: Path) -> None:
    (tmp_path / "env.sqsh").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ImageRefused) as refused:
        private_staging(str(tmp_path), str(tmp_path / "env.sqsh"), "saved_images_dir", ".saving-")
    assert refused.value.status == 409 and "exists already" in refused.value.message


def test_the_finished_image_and_its_manifest_are_moved_into_place_and_the_private_directory_goes(
    tmp_path: Path,
) -> None:
    staging = Path(private_staging(str(tmp_path), str(tmp_path / "env.sqsh"), "saved_images_dir", ".saving-"))
    (staging / "env.sqsh").write_bytes(b"hsqs")
    (staging / "env.sqsh.json").write_text("{}")
    publish(str(staging / "env.sqsh"), str(tmp_path / "env.sqsh"))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["env.sqsh", "env.sqsh.json"]
    assert (tmp_path / "env.sqsh").read_bytes() == b"hsqs"


def test_a_file_that_took_the_name_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    staging = Path(private_staging(str(tmp_path), str(tmp_path / "env.sqsh"), "saved_images_dir", ".saving-"))
    (staging / "env.sqsh").write_bytes(b"hsqs")
    (staging / "env.sqsh.json").write_text("{}")
    (tmp_path / "env.sqsh").write_text("made meanwhile")
    with pytest.raises(FileExistsError, match="was made while the image was being written"):
        publish(str(staging / "env.sqsh"), str(tmp_path / "env.sqsh"))
    assert (tmp_path / "env.sqsh").read_text() == "made meanwhile"
