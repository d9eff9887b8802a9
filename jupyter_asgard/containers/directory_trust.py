"""Whether a directory of images is the user's alone: nobody else can put, replace or redirect a file in it.

A save writes the user's container there, and the panel offers every image listed there as something to run,
so a directory another user owns or can write (or one on a path another user can change) would let them plant
a symlink where enroot writes (it follows links), or swap a saved image for a trojan. A directory counts as
the user's when it and every directory above it belong to the user or to root and only their owner can write
them; a directory above it may also be writable by all if it is sticky (/tmp, a shared /netscratch), as then
nobody removes or renames what is not theirs. Root's read-only site directories (/enroot) count as trusted.
"""

from __future__ import annotations

import os
import stat

OTHERS_WRITE = stat.S_IWGRP | stat.S_IWOTH


def component_problem(path: str, info: os.stat_result, uid: int, innermost: bool) -> str:
    """Why the directory path (its lstat info) lets someone other than uid and root change what lies below it
    ("" when it does not). innermost: path is the image directory itself, where a sticky bit does not help
    (others could still add a file at a free image name)."""
    if not stat.S_ISDIR(info.st_mode):
        return f"{path} is not a directory"
    if info.st_uid not in (uid, 0):
        return (
            f"{path} belongs to another user (uid {info.st_uid}), who can replace what is in it: use a directory "
            "of your own (the site sets it), or have that user hand it over to you"
        )
    sticky = info.st_mode & stat.S_ISVTX and not innermost
    if info.st_mode & OTHERS_WRITE and not sticky:
        return (
            f"{path} can be written by other users (mode {stat.filemode(info.st_mode)}): make it yours alone "
            f"(chmod go-w {path}), or use a directory of your own"
        )
    return ""


def directory_problem(directory: str, uid: int) -> str:
    """Blocking (lstat of each directory on the way): why directory cannot be trusted with uid's images and
    how to fix that ("" when it can). Both the path as written and where its symbolic links lead are checked."""
    real = os.path.realpath(directory)
    for path in dict.fromkeys([*_ancestry(os.path.abspath(directory)), *_ancestry(real)]):
        try:
            info = os.lstat(path)
        except OSError as error:
            return f"{path} cannot be checked: {error.strerror}"
        if stat.S_ISLNK(info.st_mode):
            continue  # its target is in the real path's ancestry; its own directory is checked above
        if problem := component_problem(path, info, uid, innermost=path == real):
            return problem
    return ""


def _ancestry(path: str) -> list[str]:
    """path and every directory above it, from / down."""
    parents = [path]
    while (parent := os.path.dirname(parents[-1])) != parents[-1]:
        parents.append(parent)
    return parents[::-1]
