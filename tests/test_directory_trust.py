"""Which image directories are the user's alone (directory_trust): a directory another user owns or can write,
or one below such a directory, is refused; the user's own and root's read-only site directories are not."""

from __future__ import annotations

import os
from pathlib import Path

from jupyter_asgard.containers.directory_trust import directory_problem

OTHER_UID = 4242  # owns what "another user" owns here: only the number matters to the check


def own_dir(path: Path, mode: int = 0o755) -> Path:
    path.mkdir()
    path.chmod(mode)
    return path


def test_a_directory_of_the_users_own_is_trusted(tmp_path: Path) -> None:
    images = own_dir(tmp_path / "images", 0o700)
    assert directory_problem(str(images), os.geteuid()) == ""


def test_roots_read_only_site_directory_is_trusted_for_any_user(tmp_path: Path) -> None:
    """tmp_path and everything above it belong to root when the tests run as root (CI), like /enroot."""
    site = own_dir(tmp_path / "enroot")
    assert os.stat(site).st_uid == 0, "run as root: the site directory must be root's"
    assert directory_problem(str(site), OTHER_UID + 1) == ""


def test_a_directory_another_user_owns_is_refused_naming_it_and_the_fix(tmp_path: Path) -> None:
    theirs = own_dir(tmp_path / "theirs", 0o700)
    os.chown(theirs, OTHER_UID, OTHER_UID)
    problem = directory_problem(str(theirs), os.geteuid())
    assert problem.startswith(f"{theirs} belongs to another user (uid {OTHER_UID})")
    assert "use a directory of your own" in problem


def test_a_directory_others_can_write_is_refused_even_if_sticky(tmp_path: Path) -> None:
    for mode in (0o775, 0o757, 0o1777):
        shared = tmp_path / f"shared-{mode:o}"
        own_dir(shared, mode)
        problem = directory_problem(str(shared), os.geteuid())
        assert problem.startswith(f"{shared} can be written by other users"), (mode, problem)
        assert f"chmod go-w {shared}" in problem


def test_a_directory_below_one_another_user_controls_is_refused(tmp_path: Path) -> None:
    """Who can rename what holds the images can put a directory of theirs in its place."""
    parent = own_dir(tmp_path / "netscratch-ada")
    os.chown(parent, OTHER_UID, OTHER_UID)
    images = own_dir(parent / "images", 0o700)
    assert directory_problem(str(images), os.geteuid()).startswith(f"{parent} belongs to another user")
    os.chown(parent, os.geteuid(), os.getegid())
    parent.chmod(0o777)
    assert directory_problem(str(images), os.geteuid()).startswith(f"{parent} can be written by other users")


def test_a_sticky_shared_parent_is_fine_as_nobody_can_rename_what_is_not_theirs(tmp_path: Path) -> None:
    netscratch = own_dir(tmp_path / "netscratch", 0o1777)
    images = own_dir(netscratch / "ada", 0o700)
    assert directory_problem(str(images), os.geteuid()) == ""


def test_a_link_to_a_directory_others_can_write_is_refused_by_its_target(tmp_path: Path) -> None:
    shared = own_dir(tmp_path / "shared", 0o777)
    link = tmp_path / "images"
    link.symlink_to(shared)
    assert directory_problem(str(link), os.geteuid()).startswith(f"{shared} can be written by other users")


def test_a_link_placed_in_a_directory_others_can_write_is_refused(tmp_path: Path) -> None:
    """The target is the user's own, but anyone may point the link elsewhere."""
    mine = own_dir(tmp_path / "mine", 0o700)
    shared = own_dir(tmp_path / "shared", 0o777)
    (shared / "images").symlink_to(mine)
    assert directory_problem(str(shared / "images"), os.geteuid()).startswith(f"{shared} can be written")
