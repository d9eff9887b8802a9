"""Pyxis mount entries: what parses, how it renders, and every refusal Pyxis itself would make."""

from __future__ import annotations

import pytest

from jupyter_asgard.errors import MountError
from jupyter_asgard.launch.mounts import Mount, parse_mount, render_mounts

# --- valid forms ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        # SRC alone mounts at the same path.
        ("/netscratch/me", Mount("/netscratch/me", "/netscratch/me")),
        ("/ds", Mount("/ds", "/ds")),
        # SRC:DST
        ("/netscratch/me:/netscratch/me", Mount("/netscratch/me", "/netscratch/me")),
        ("/netscratch/me:/data", Mount("/netscratch/me", "/data")),
        # Flags joined with '+' (Pyxis's form) ...
        ("/ds:/ds:ro", Mount("/ds", "/ds", ("ro",))),
        ("/ds:/ds:ro+rprivate", Mount("/ds", "/ds", ("ro", "rprivate"))),
        ("/ds:/ds:ro+nosuid+nodev", Mount("/ds", "/ds", ("ro", "nosuid", "nodev"))),
        # ... or with ',' (enroot's form).
        ("/ds:/ds:ro,rprivate", Mount("/ds", "/ds", ("ro", "rprivate"))),
        ("/ds:/ds:ro,nosuid+nodev", Mount("/ds", "/ds", ("ro", "nosuid", "nodev"))),
        # Flags with a value.
        ("/a:/b:x-create=dir", Mount("/a", "/b", ("x-create=dir",))),
        # Empty flag fields are ignored.
        ("/a:/b:", Mount("/a", "/b")),
        ("/a:/b:+ro++nosuid+", Mount("/a", "/b", ("ro", "nosuid"))),
        # Special sources.
        ("tmpfs:/scratch", Mount("tmpfs", "/scratch")),
        ("umount:/opt/hpcx", Mount("umount", "/opt/hpcx")),
        # Relative paths start with '.'.
        (".:/work", Mount(".", "/work")),
        ("./data:/data:ro", Mount("./data", "/data", ("ro",))),
        ("../shared:./shared", Mount("../shared", "./shared")),
        # Surrounding whitespace is not part of the entry.
        ("  /ds:/ds:ro\n", Mount("/ds", "/ds", ("ro",))),
    ],
)
def test_parse_mount_valid_forms(entry: str, expected: Mount) -> None:
    assert parse_mount(entry) == expected


@pytest.mark.parametrize(
    ("entry", "read_only"),
    [
        ("/ds:/ds:ro", True),
        ("/ds:/ds:rw", False),
        ("/ds:/ds", False),
        ("/ds:/ds:nosuid+ro", True),
        ("/ds:/ds:ro,nosuid", True),
    ],
)
def test_read_only(entry: str, read_only: bool) -> None:
    assert parse_mount(entry).read_only is read_only


@pytest.mark.parametrize(
    ("entry", "rendered"),
    [
        ("/netscratch/me", "/netscratch/me:/netscratch/me"),
        ("/ds:/ds:ro", "/ds:/ds:ro"),
        # enroot's ',' becomes Pyxis's '+', since ',' separates mounts in --container-mounts.
        ("/ds:/ds:ro,rprivate", "/ds:/ds:ro+rprivate"),
        ("/a:/b:+ro++nosuid+", "/a:/b:ro+nosuid"),
        ("/a:/b:", "/a:/b"),
        ("tmpfs:/scratch", "tmpfs:/scratch"),
    ],
)
def test_render(entry: str, rendered: str) -> None:
    assert parse_mount(entry).render() == rendered
    assert parse_mount(rendered) == parse_mount(entry)


def test_render_mounts_joins_entries_with_commas() -> None:
    mounts = [
        parse_mount("/netscratch/me:/netscratch/me"),
        parse_mount("/ds:/ds:ro,rprivate"),
        parse_mount("tmpfs:/scratch"),
    ]
    assert render_mounts(mounts) == "/netscratch/me:/netscratch/me,/ds:/ds:ro+rprivate,tmpfs:/scratch"
    assert render_mounts([]) == ""


def test_render_mounts_of_enroot_flags_has_one_comma_per_mount() -> None:
    rendered = render_mounts([parse_mount("/a:/a:ro,nosuid"), parse_mount("/b:/b:nodev,rw")])
    assert rendered.split(",") == ["/a:/a:ro+nosuid", "/b:/b:nodev+rw"]


# --- covers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "path", "covered"),
    [
        ("/data", "/data", True),
        ("/data", "/data/", True),
        ("/data", "/data/project/x.py", True),
        ("/data", "/database", False),
        ("/data", "/dat", False),
        ("/data", "/", False),
        ("/data", "/other/data", False),
        ("/data/", "/data", True),
        ("/data/", "/data/x", True),
        ("/data/", "/datax", False),
        ("/", "/", True),
        ("/", "/anything/at/all", True),
        ("/netscratch/me", "/netscratch/me/proj", True),
        ("/netscratch/me", "/netscratch/meier/proj", False),
        ("./work", "./work/sub", True),
        ("./work", "./workshop", False),
    ],
)
def test_covers(target: str, path: str, covered: bool) -> None:
    assert Mount("/src", target).covers(path) is covered


def test_covers_uses_target_not_source() -> None:
    mount = parse_mount("/netscratch/me:/data")
    assert mount.covers("/data/x")
    assert not mount.covers("/netscratch/me/x")


# --- refusals ---------------------------------------------------------------------------------

EXPECTED_FORM = "SOURCE:DESTINATION[:FLAGS]"


@pytest.mark.parametrize(
    "entry",
    [
        "",
        "   ",
        ":",
        ":/data",  # empty source
        "/tmp:",  # empty destination
        "/tmp::ro",  # empty destination with flags
        "::ro",
        "/a:/b:ro:extra",  # too many fields
    ],
)
def test_refuses_malformed_entries_and_shows_the_form(entry: str) -> None:
    with pytest.raises(MountError) as error:
        parse_mount(entry)
    message = str(error.value)
    assert message.startswith(f"invalid mount {entry.strip()!r}: ")
    assert EXPECTED_FORM in message
    assert "/netscratch/me:/data:ro" in message  # an example of the right form


@pytest.mark.parametrize(
    "entry",
    ["data:/data", "netscratch/me", "~/data:/data", "$HOME:/home", "tmpfs2:/x", "TMPFS:/x", "-v:/x"],
)
def test_refuses_bad_source(entry: str) -> None:
    with pytest.raises(MountError) as error:
        parse_mount(entry)
    message = str(error.value)
    assert repr(entry) in message
    assert "source must be an absolute path" in message
    for allowed in ("'.'", '"tmpfs"', '"umount"'):
        assert allowed in message


@pytest.mark.parametrize("entry", ["/data:data", "/data:~/data", "tmpfs:scratch", "/a:$HOME", "tmpfs", "umount"])
def test_refuses_bad_destination(entry: str) -> None:
    with pytest.raises(MountError) as error:
        parse_mount(entry)
    message = str(error.value)
    assert repr(entry) in message
    assert "destination must be a path starting with '/' or '.'" in message


@pytest.mark.parametrize(
    ("entry", "flag"),
    [
        ("/ds:/ds:readonly", "readonly"),
        ("/ds:/ds:ro+bogus", "bogus"),
        ("/ds:/ds:RO", "RO"),
        ("/ds:/ds:ro,x-create=dirs", "x-create=dirs"),
        ("/ds:/ds:ro+ nosuid", " nosuid"),
    ],
)
def test_refuses_unknown_flag_and_names_it(entry: str, flag: str) -> None:
    with pytest.raises(MountError) as error:
        parse_mount(entry)
    message = str(error.value)
    assert f"unknown flag {flag!r}" in message
    assert "use ro, rw" in message


def test_unknown_flag_message_names_the_first_unknown_flag() -> None:
    with pytest.raises(MountError, match="unknown flag 'one'"):
        parse_mount("/a:/b:ro+one+two")


@pytest.mark.parametrize("entry", ["/ds:/ds:ro+rw", "/ds:/ds:rw,ro", "/ds:/ds:rw+nosuid+ro"])
def test_refuses_read_only_and_read_write(entry: str) -> None:
    with pytest.raises(MountError) as error:
        parse_mount(entry)
    message = str(error.value)
    assert repr(entry) in message
    assert "both read-only (ro) and read-write (rw)" in message


@pytest.mark.parametrize("entry", ["/a,b:/c", "/a:/b,c", "/a,b", "/a:/b,c:ro"])
def test_refuses_comma_in_a_path(entry: str) -> None:
    with pytest.raises(MountError) as error:
        parse_mount(entry)
    message = str(error.value)
    assert repr(entry) in message
    assert "cannot contain" in message and "','" in message


def test_mount_error_is_a_value_error() -> None:
    # Callers that handle bad user input as ValueError keep working.
    with pytest.raises(ValueError):
        parse_mount("nope")


def test_render_round_trips_a_destination_with_trailing_whitespace() -> None:
    mount = parse_mount("/a:/b :")
    assert parse_mount(mount.render()) == mount


@pytest.mark.parametrize("path", ['/data/"quoted"', "/data/$(id)", "/data/`id`"])
def test_a_path_pyxis_would_write_into_enroots_shell_script_unquoted_is_refused(path: str) -> None:
    with pytest.raises(MountError, match="Pyxis cannot mount a path containing"):
        parse_mount(f"{path}:/data")
    with pytest.raises(MountError, match="Pyxis cannot mount a path containing"):
        parse_mount(f"/data:{path}")


def test_a_variable_is_no_problem_as_typed_but_is_once_the_entry_should_be_expanded() -> None:
    entry = "/netscratch/$USER:/netscratch/${USER}"
    assert parse_mount(entry, expanded=False).target == "/netscratch/${USER}"
    with pytest.raises(MountError, match=r"containing '\$'.*only \$USER, \$HOME and those the site lists"):
        parse_mount(entry)


# Pyxis writes mount paths into a bash script, in double quotes: each of these would be bash's to expand
# ($[...] is arithmetic, whose array index runs a command substitution on the node, outside the container).
BASH_EXPANSIONS = ["/d/$[a[$(id>/tmp/x)]]", "/d/${X-/etc}", "/d/$$", "/d/$1", "/d/${#USER}", "/d/$"]


@pytest.mark.parametrize("path", BASH_EXPANSIONS)
@pytest.mark.parametrize("expanded", [True, False])
def test_a_dollar_that_names_no_variable_is_refused_even_as_typed(path: str, expanded: bool) -> None:
    for entry in (f"{path}:/data", f"/data:{path}"):
        with pytest.raises(MountError, match=r"Pyxis cannot mount a path containing '\$'"):
            parse_mount(entry, expanded=expanded)


def test_spaces_tabs_and_backslashes_are_mountable_pyxis_escapes_them() -> None:
    assert parse_mount("/data/my project:/work/a\\b").render() == "/data/my project:/work/a\\b"
