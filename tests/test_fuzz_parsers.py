"""Fuzzing the user-facing parsers: whatever a user types, they answer with a value or their own error."""

from __future__ import annotations

import json
import string
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from jupyter_asgard.errors import BadRequest, LaunchConfigError, MountError
from jupyter_asgard.launch.extra_args import RESERVED_LONG, RESERVED_SHORT, SHORT_WITH_VALUE, extra_args_problems
from jupyter_asgard.launch.launch_config import LaunchConfig, json_schema
from jupyter_asgard.launch.mounts import KNOWN_FLAGS, UNMOUNTABLE, Mount, parse_mount
from jupyter_asgard.server.handlers import parse_json

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
ENV = {"USER": "alice", "HOME": "/home/alice", "PROJECT": "vision"}

# --- mounts -----------------------------------------------------------------------------------

# Text that is likely to contain the characters that matter to the mount grammar.
mount_text = st.text(alphabet=st.sampled_from("/.:,+ \t\n-_aZ9~$") | st.characters(), max_size=40)
path_piece = st.text(alphabet=st.characters(blacklist_characters=":,", blacklist_categories=("Cs",)), max_size=12)
source = st.one_of(
    st.sampled_from(["tmpfs", "umount", ".", "..", ""]),
    st.builds("/{}".format, path_piece),
    st.builds("./{}".format, path_piece),
    path_piece,
)
target = st.one_of(st.sampled_from(["", ".", "/"]), st.builds("/{}".format, path_piece), path_piece)
flag = st.one_of(st.sampled_from(sorted(KNOWN_FLAGS)), st.sampled_from(["", "RO", "readonly", " ro"]))
flags = st.lists(flag, max_size=4).flatmap(
    lambda items: st.sampled_from(["+", ","]).map(lambda separator: separator.join(items))
)
structured_entry = st.one_of(
    source,
    st.builds("{}:{}".format, source, target),
    st.builds("{}:{}:{}".format, source, target, flags),
)
any_entry = st.one_of(st.text(), mount_text, structured_entry)


def parse_or_error(entry: str) -> Mount | MountError:
    try:
        return parse_mount(entry)
    except MountError as error:
        return error


@FUZZ
@given(any_entry)
@example("")
@example(":")
@example("/a:/b:ro+rw")
@example("/a:/b:ro:x")
def test_parse_mount_returns_a_mount_or_raises_mount_error(entry: str) -> None:
    result = parse_or_error(entry)  # anything but MountError propagates and fails the test
    if isinstance(result, MountError):
        message = str(result)
        assert message.startswith(f"invalid mount {entry.strip()!r}: ")
        return
    assert isinstance(result, Mount)
    assert result.source and result.target
    assert result.source.startswith(("/", ".")) or result.source in ("tmpfs", "umount")
    assert result.target.startswith(("/", "."))
    assert not any(sep in part for part in (result.source, result.target) for sep in ":,")
    assert set(result.flags) <= KNOWN_FLAGS
    assert not {"ro", "rw"} <= set(result.flags)


@FUZZ
@given(any_entry)
@example("/a:/b:ro,nosuid")
@example("/a")
@example("tmpfs:/x:+")
def test_a_parsed_mount_renders_back_to_itself(entry: str) -> None:
    mount = parse_or_error(entry)
    if isinstance(mount, MountError):
        return
    rendered = mount.render()
    assert parse_mount(rendered) == mount
    assert parse_mount(rendered).render() == rendered
    assert "," not in rendered  # the entry fits in a comma-separated --container-mounts value


mountable_piece = st.text(
    alphabet=st.characters(blacklist_characters=UNMOUNTABLE, blacklist_categories=("Cs",)), max_size=12
)


@FUZZ
@given(
    st.builds(
        Mount,
        st.builds("/{}".format, mountable_piece.map(str.strip)),
        st.builds("/{}".format, mountable_piece.map(str.strip)),
        st.lists(st.sampled_from(sorted(KNOWN_FLAGS - {"rw"})), max_size=3).map(tuple),
    )
)
def test_a_well_formed_mount_round_trips_through_its_entry(mount: Mount) -> None:
    assert parse_mount(mount.render()) == mount


# --- launch configuration ---------------------------------------------------------------------

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
plausible_text = st.one_of(
    st.text(max_size=30),
    mount_text,
    structured_entry,
    st.sampled_from(
        [
            "/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh",
            "docker://nvcr.io#nvidia/pytorch:24.05-py3",
            "foo.sqsh",
            "$HOME/x",
            "${USER}",
            "$NOPE",
            "~/w",
            "h100:2",
            "8:00:00",
            "32G",
            "--jobid=1",
            "-J",
            "--exclusive",
            "1",
            "abc",
            "",
        ]
    ),
)
plausible_value = st.one_of(
    plausible_text,
    st.lists(plausible_text, max_size=5),
    st.booleans(),
    st.none(),
    st.integers(min_value=-3, max_value=300),
    json_like,
)
keys = st.one_of(st.sampled_from(LaunchConfig.keys()), st.text(max_size=12))
configs = st.dictionaries(keys, plausible_value, max_size=8)
environs = st.one_of(st.just(ENV), st.dictionaries(st.text(min_size=1, max_size=6), st.text(max_size=12), max_size=4))
SCHEMA = Draft202012Validator(json_schema())


def parse_config(values: dict[str, Any], environ: dict[str, str]) -> LaunchConfig | LaunchConfigError:
    try:
        return LaunchConfig.parse(values, environ)
    except LaunchConfigError as error:
        return error


@FUZZ
@given(configs, environs)
@example({}, ENV)
@example({"image": "/i.sqsh", "cpus_per_task": "²"}, ENV)
@example({"image": "/i.sqsh", "cpus_per_task": 10**5000}, ENV)
@example({"image": "/i.sqsh", "gpus": float("nan"), "mounts": [None]}, ENV)
def test_launch_config_parse_returns_a_config_or_raises_its_error(
    values: dict[str, Any], environ: dict[str, str]
) -> None:
    result = parse_config(values, environ)  # anything but LaunchConfigError propagates and fails the test
    if isinstance(result, LaunchConfigError):
        assert result.problems, "an error must say what is wrong"
        assert all(isinstance(problem, str) and problem for problem in result.problems)
        assert str(result) == "; ".join(result.problems)
        return
    assert isinstance(result, LaunchConfig)
    assert result.image
    assert result.problems() == []
    assert len(result.parsed_mounts()) == len(result.mounts)
    # What the configuration reports about itself is valid by its own schema.
    assert list(SCHEMA.iter_errors(result.to_json())) == []


@FUZZ
@given(st.dictionaries(st.sampled_from(LaunchConfig.keys()), json_like, max_size=6))
def test_launch_config_parse_on_json_values(values: dict[str, Any]) -> None:
    result = parse_config({"image": "/i.sqsh", **values}, ENV)
    assert isinstance(result, (LaunchConfig, LaunchConfigError))


# --- srun_args / salloc_args -------------------------------------------------------------------


@FUZZ
@given(st.sampled_from(sorted(SHORT_WITH_VALUE)), st.data())
def test_a_reserved_letter_in_a_cluster_of_flags_is_always_refused(key: str, data: st.DataObject) -> None:
    """getopt reads -vlJx as -v -l -J x: whatever flags come first, the reserved letter is found."""
    flags = sorted(set(string.ascii_letters) - SHORT_WITH_VALUE[key] - set(RESERVED_SHORT))
    cluster = data.draw(st.text(alphabet=flags, max_size=6)) + data.draw(st.sampled_from(sorted(RESERVED_SHORT)))
    assert extra_args_problems(key, [f"-{cluster}{data.draw(st.text(max_size=6))}"])


@FUZZ
@given(st.sampled_from(sorted(SHORT_WITH_VALUE)), st.sampled_from(sorted(RESERVED_LONG)), st.data())
def test_every_abbreviation_of_a_reserved_option_is_refused(key: str, option: str, data: st.DataObject) -> None:
    abbreviation = option[: data.draw(st.integers(min_value=1, max_value=len(option)))]
    value = data.draw(st.one_of(st.just(""), st.builds("={}".format, st.text(max_size=8))))
    assert extra_args_problems(key, [f"--{abbreviation}{value}"])


# --- REST request bodies ----------------------------------------------------------------------

json_bytes = st.builds(lambda value: json.dumps(value).encode(), json_like)
damaged_json = st.tuples(json_bytes, st.binary(max_size=4), st.integers(min_value=0, max_value=40)).map(
    lambda parts: parts[0][: parts[2]] + parts[1] + parts[0][parts[2] :]
)


@FUZZ
@given(st.one_of(st.binary(max_size=60), json_bytes, damaged_json))
@example(b'{"image": "\xff\xfe"}')
@example(b"[" * 30000 + b"]" * 30000)
@example(b'{"gpus": ' + b"9" * 5000 + b"}")
@example(b"\xff\xfe{\x00}\x00")
def test_parse_json_returns_a_value_or_refuses_with_400(body: bytes) -> None:
    """Whatever a client sends, the answer is its value or a 400 saying what is wrong, never a 500."""
    try:
        parse_json(body)
    except BadRequest as error:
        assert error.status == 400
        assert error.message.startswith(("the request body is not JSON", "the request body's JSON"))
