"""``jupyter asgard``: install Asgard kernelspecs with a site's settings, list them, show running kernel jobs.

Jupyter runs ``jupyter-asgard`` for ``jupyter asgard``.  Each subcommand is
one entry in COMMANDS (help, arguments, handler), so adding one does not
touch the parsing and error handling below.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from jupyter_client.kernelspec import KernelSpecManager

from ..errors import AsgardError, KernelspecError, ServerRefused, SlurmError, UsageError
from ..kernel.kernelspecs import (
    DEFAULT_KERNEL,
    SiteOverrides,
    bundled_kernelspec_dir,
    install_kernelspec,
    installed_kernelspecs,
    load_kernelspec,
    provisioner_config,
)
from ..slurm.slurm_client import SlurmClient
from .status import TIMEOUT, collect, render

PROG = "jupyter asgard"
USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


@dataclass(frozen=True)
class Command:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _gpus(value: str) -> int | str:
    """A plain count is stored as a number, like the bundled spec; TYPE:COUNT stays text."""
    return int(value) if value.isdigit() else value


def _install_arguments(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user (the default)")
    where.add_argument("--sys-prefix", action="store_true", help="install into this Python environment")
    where.add_argument("--prefix", metavar="P", help="install into P/share/jupyter/kernels")
    parser.add_argument("--image-dir", metavar="DIR", help="directory holding the image's squashfs file")
    parser.add_argument("--image", metavar="PATH_OR_URI", help="squashfs file or enroot URI of the container image")
    parser.add_argument("--partition", metavar="P", help="Slurm partition for the kernel's allocation")
    parser.add_argument(
        "--mount",
        metavar="SRC:DST[:FLAGS]",
        action="append",
        dest="mounts",
        help="bind mount (repeatable; replaces the default mounts); single-quote '$USER' so it is "
        "expanded at kernel start",
    )
    parser.add_argument("--gpus", metavar="N", type=_gpus, help="GPUs per kernel: N or TYPE:N")
    parser.add_argument("--name", default=DEFAULT_KERNEL, help=f"kernelspec name (default: {DEFAULT_KERNEL})")
    parser.add_argument("--display-name", metavar="TEXT", help="name shown in JupyterLab's launcher")


def _install(args: argparse.Namespace) -> int:
    overrides = SiteOverrides(
        image=args.image or "",
        image_dir=args.image_dir or "",
        partition=args.partition or "",
        mounts=tuple(args.mounts) if args.mounts else None,
        gpus=args.gpus,
        display_name=args.display_name or "",
    )
    prefix = sys.prefix if args.sys_prefix else args.prefix
    manager = KernelSpecManager()
    destination = install_kernelspec(
        bundled_kernelspec_dir(), args.name, overrides, user=prefix is None, prefix=prefix, manager=manager
    )
    spec = load_kernelspec(destination)
    config = provisioner_config(spec) or {}
    print(f"Installed kernelspec {destination.name!r} in {destination}")
    for key in ("image", "mounts", "partition", "gpus"):
        print(f"  {key + ':':<11}{_show(config.get(key))}")
    if str(destination.parent) not in manager.kernel_dirs:
        print(f"Jupyter does not search {destination.parent} yet: set JUPYTER_PATH={destination.parent.parent}")
    print(
        f'In JupyterLab, pick "{spec["display_name"]}" in the Launcher or with Kernel > Change Kernel; '
        "its first start waits for a Slurm allocation."
    )
    return 0


def _show(value: object) -> str:
    if isinstance(value, list):
        return ", ".join(value) or "(none)"
    return str(value) if value else "(Slurm default)"


def _list_kernelspecs(args: argparse.Namespace) -> int:
    rows = [
        (name, spec.get("display_name", ""), (provisioner_config(spec) or {}).get("image", ""))
        for name, spec in installed_kernelspecs()
    ]
    if not rows:
        print(f"No installed kernelspec uses pyxis-provisioner; add one with: {PROG} install")
        return 0
    table = [("NAME", "DISPLAY NAME", "IMAGE"), *rows]
    widths = [max(len(row[column]) for row in table) for column in range(2)]
    for name, display_name, image in table:
        print(f"{name:<{widths[0]}}  {display_name:<{widths[1]}}  {image}")
    return 0


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json",
        action="store_true",
        help='print JSON: {"kernels": [rows], "detached": {"found": [...], "ended": [...]}}',
    )


def _status(args: argparse.Namespace) -> int:
    """Notes go to stderr, so --json output stays parseable when a server or squeue does not answer."""
    status = collect(TIMEOUT)
    for note in status.notes:
        print(f"note: {note}", file=sys.stderr)
    print(json.dumps(status.to_json(), indent=1) if args.json else render(status))
    return 0


def _release_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kernel_id", metavar="KERNEL_ID", help="the detached kernel (its id, or the start of it)")


def _release(args: argparse.Namespace) -> int:
    """Through a running server that found the kernel, else from the user's records (release.py)."""
    from .release import release

    try:
        print(release(args.kernel_id))
    except (LookupError, AsgardError) as error:
        return _fail(f"{PROG} release: error: {error}", 1)
    return 0


def _site_check(args: argparse.Namespace) -> int:
    """The site's limits as the server's configuration sets them (c.PyxisProvisioner), against Slurm's own."""
    import asyncio

    from ..site.site import server_config
    from ..site.site_check import check, render
    from ..site.site_policy import SitePolicy

    policy = SitePolicy(config=server_config())
    try:
        found, notes = asyncio.run(check(SlurmClient(), policy.max_gpus, list(policy.allowed_partitions)))
    except SlurmError as error:
        return _fail(f"{PROG} site-check: error: cannot ask Slurm: {error}", 1)
    print(render(found, notes))
    return 0


def _save_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kernel_id", metavar="KERNEL_ID", help="the kernel (its id, or the start of it)")
    parser.add_argument("name", metavar="NAME", help="the image's name: it is saved as NAME.sqsh")
    parser.add_argument("--no-wait", action="store_true", help="start the save and return at once")


def _save_image(args: argparse.Namespace) -> int:
    """Asks the server that runs the kernel, as the panel does; waits for the save, saying how it goes."""
    import time

    from .server_requests import call, server_of_kernel

    command = f"{PROG} save-image"
    try:
        server, kernel_id = server_of_kernel(args.kernel_id)
        path = f"/asgard/api/kernels/{kernel_id}/save-image"
        save = call(server, "POST", path, {"name": args.name})
        print(f"saving kernel {kernel_id}'s container as {save['path']} ...", file=sys.stderr)
        while save["state"] == "saving" and not args.no_wait:
            time.sleep(1)
            save = call(server, "GET", path)
    except (LookupError, ServerRefused) as error:
        return _fail(f"{command}: error: {error}", 1)
    if save["state"] == "failed":
        return _fail(f"{command}: error: {save['message']}", 1)
    if save["state"] == "saved":
        print(f"saved {save['path']} ({save['packages']} Python packages, listed in {save['path']}.json)")
    return 0


def _import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "uri", metavar="URI", help="the registry image, as enroot names it: docker://nvcr.io#nvidia/pytorch:24.05-py3"
    )
    parser.add_argument(
        "name",
        metavar="NAME",
        nargs="?",
        default="",
        help="the image's name: it is imported as NAME.sqsh into your image directory (default: made from URI)",
    )
    parser.add_argument("--json", action="store_true", help="print the import's JSON at its end instead of the path")


def _import(args: argparse.Namespace) -> int:
    """Through a running Jupyter server of the user (its side panel shows the import), else in this process."""
    from .image_import import run_import

    return run_import(args.uri, args.name, args.json, f"{PROG} import")


def _containers_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help='print JSON: {"containers": [...]}, as the REST API')
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    remove = actions.add_parser(
        "remove",
        help="remove a container from its node(s), with what was installed in it (a short Slurm job per node)",
        description="Remove a named container from the node(s) it is on, with what was installed in it: a short "
        "Slurm job per node runs `enroot remove` as you. Refused while a kernel of yours runs in it there.",
    )
    remove.add_argument("name", metavar="NAME", help="the container's name, as `jupyter asgard containers` lists it")
    remove.add_argument("--node", metavar="NODE", help="remove it from this node only (default: from every node)")
    # Suppressed default: `containers --json remove NAME` keeps the --json given before the action.
    remove.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print the removal's JSON")


def _containers(args: argparse.Namespace) -> int:
    """Through the running servers (they know their kernels), else from the user's record (containers.py)."""
    from .containers import run_list, run_remove

    if args.action == "remove":
        return run_remove(args.name, args.node, args.json, f"{PROG} containers remove")
    return run_list(args.json)


COMMANDS: dict[str, Command] = {
    "install": Command("install the Asgard PyTorch kernelspec with this site's settings", _install_arguments, _install),
    "kernelspecs": Command(
        "list installed kernelspecs that run in Pyxis containers on Slurm", lambda parser: None, _list_kernelspecs
    ),
    "status": Command(
        "show this user's Asgard kernel jobs: those of every running Jupyter server, and those in "
        "Slurm's queue that no server knows",
        _status_arguments,
        _status,
    ),
    "release": Command(
        "end a detached kernel (one a server of yours found and did not take over, or one left running by a "
        "server that is gone; `status` lists them) and free its GPUs",
        _release_arguments,
        _release,
    ),
    "save-image": Command(
        "save a running kernel's container (what was installed in it) as a squashfs image of your own",
        _save_image_arguments,
        _save_image,
    ),
    "import": Command(
        "import a registry image into your image directory (enroot import, as a Slurm job on a compute node), "
        "saying how it goes; Ctrl-C cancels it",
        _import_arguments,
        _import,
    ),
    "containers": Command(
        "list your named containers, the nodes each is on and the kernels running in it; `containers remove "
        "NAME` removes one",
        _containers_arguments,
        _containers,
    ),
    "site-check": Command(
        "for admins: which of the site's kernel limits (max_gpus, allowed_partitions) Slurm "
        "itself enforces, and how to make it",
        lambda parser: None,
        _site_check,
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Jupyter kernels on Asgard's Slurm GPU nodes, in Pyxis containers.")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        command.add_arguments(subcommands.add_parser(name, help=command.help, description=command.help))
    return parser


def _fail(message: str, status: int) -> int:
    print(message, file=sys.stderr)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as error:
        return _fail(str(error), USAGE_ERROR)
    try:
        return COMMANDS[args.command].run(args)
    except KernelspecError as error:
        return _fail(f"{PROG} {args.command}: error: {error}", USAGE_ERROR)
    except OSError as error:
        return _fail(f"{PROG} {args.command}: error: {error}", 1)


if __name__ == "__main__":
    sys.exit(main())
