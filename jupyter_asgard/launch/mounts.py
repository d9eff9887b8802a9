"""Pyxis mount specifications (``SRC:DST[:FLAGS]``) as data.

The rules are Pyxis's own, so that a mistake is caught where the user typed it
(kernelspec, REST API, panel) with the message Pyxis would give, instead of on
a compute node after a wait in the queue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import MountError

# Flags enroot accepts in a mount entry (Pyxis turns "+" into enroot's ",").
KNOWN_FLAGS = frozenset(
    {
        "ro",
        "rw",
        "bind",
        "rbind",
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "nosuid",
        "suid",
        "nodev",
        "dev",
        "noexec",
        "exec",
        "x-create=dir",
        "x-create=file",
        "x-create=auto",
        "x-detach",
        "nofail",
    }
)
SPECIAL_SOURCES = ("tmpfs", "umount")
# Pyxis splits --container-mounts at ',' (mounts) and ':' (fields), and writes each path into a bash script
# for enroot inside double quotes, where '"', '$' and '`' would take effect (it escapes spaces, tabs and
# backslashes itself). A path with one of these cannot be mounted as it is.
UNMOUNTABLE = ',:"$`'
# How a kernelspec names a variable ($USER, ${HOME}), expanded on the server before anything is submitted.
VARIABLE = re.compile(r"\$(?:\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


DOLLAR_ADVICE = (
    " (Pyxis hands mount paths to bash, where '$' takes effect; a variable is written $NAME or ${NAME}, and "
    "only $USER, $HOME and those the site lists in c.PyxisProvisioner.expandable_variables are expanded)"
)


def unmountable_characters(path: str) -> str:
    """The characters of path that Pyxis cannot carry in a mount, in order of appearance."""
    return "".join(dict.fromkeys(char for char in path if char in UNMOUNTABLE))


def describe_characters(chars: str) -> str:
    return " ".join(repr(char) for char in chars)


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    flags: tuple[str, ...] = ()

    @property
    def read_only(self) -> bool:
        return "ro" in self.flags

    def render(self) -> str:
        """The entry as Pyxis reads it: flags joined with '+'."""
        if self.flags:
            return f"{self.source}:{self.target}:{'+'.join(self.flags)}"
        return f"{self.source}:{self.target}"

    def covers(self, path: str) -> bool:
        """Whether path inside the container lies under this mount's target."""
        target = self.target.rstrip("/") or "/"
        return path == target or path.startswith(target.rstrip("/") + "/")


def parse_mount(entry: str, expanded: bool = True) -> Mount:
    """Parse one ``SRC[:DST[:FLAGS]]`` entry, with flags split by '+' (or ',' as enroot writes them).

    expanded: whether the entry's variables have been expanded (what reaches Pyxis, where no '$' may be
    left); False for an entry as the user types it, where $NAME and ${NAME} are still to come.
    """
    entry = entry.strip()
    parts = [part.strip() for part in entry.split(":")]
    if not entry or len(parts) > 3 or any(part == "" for part in parts[:2]):
        raise MountError(f"invalid mount {entry!r}: write SOURCE:DESTINATION[:FLAGS], e.g. /netscratch/me:/data:ro")
    source = parts[0]
    target = parts[1] if len(parts) > 1 else source
    if not (source.startswith(("/", ".")) or source in SPECIAL_SOURCES):
        raise MountError(
            f"invalid mount {entry!r}: the source must be an absolute path, a relative path starting "
            f'with \'.\', "tmpfs" or "umount"'
        )
    if "," in source or "," in target:
        raise MountError(f"invalid mount {entry!r}: Pyxis separates mounts with ',', so a path cannot contain one")
    if not target.startswith(("/", ".")):
        raise MountError(f"invalid mount {entry!r}: the destination must be a path starting with '/' or '.'")
    # Any other '$' would reach bash: ${X-...} and $$ expand, and $[a[$(cmd)]] runs cmd on the node.
    unsafe = unmountable_characters(source + target if expanded else VARIABLE.sub("", source + target))
    if unsafe:
        raise MountError(
            f"invalid mount {entry!r}: Pyxis cannot mount a path containing "
            f"{describe_characters(unsafe)}; rename it or mount a directory above it"
            + (DOLLAR_ADVICE if "$" in unsafe else "")
        )
    flags = tuple(flag for flag in parts[2].replace(",", "+").split("+") if flag) if len(parts) == 3 else ()
    unknown = [flag for flag in flags if flag not in KNOWN_FLAGS]
    if unknown:
        raise MountError(f"invalid mount {entry!r}: unknown flag {unknown[0]!r} (use ro, rw, rbind, nosuid, ...)")
    if "ro" in flags and "rw" in flags:
        raise MountError(f"invalid mount {entry!r}: it is both read-only (ro) and read-write (rw)")
    return Mount(source, target, flags)


def render_mounts(mounts: list[Mount]) -> str:
    """The value of ``--container-mounts``."""
    return ",".join(mount.render() for mount in mounts)
