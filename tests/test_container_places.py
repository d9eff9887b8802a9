"""The record of which node holds which of the user's named containers (kernel/container_places.py): what a
kernel's start records, what a removal forgets, the listing's order and grouping, and the file's privacy (it
steers where the user's kernels start)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jupyter_asgard.errors import AsgardError
from jupyter_asgard.kernel import container_places
from jupyter_asgard.kernel.container_places import PLACES_FILE, ContainerPlace, ContainerPlaces, grouped


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Sets what container_places takes for now (its stamps have whole seconds: tests set them apart)."""
    current = ["2026-12-07T10:00:00+00:00"]
    monkeypatch.setattr(container_places, "now", lambda: current[0])

    def set_to(stamp: str) -> None:
        current[0] = stamp

    yield set_to


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "asgard" / "containers"


@pytest.fixture
def places(root: Path) -> ContainerPlaces:
    return ContainerPlaces(lambda: root)


def test_a_kernel_s_start_is_recorded_with_its_settings_and_stamped(
    places: ContainerPlaces, clock: Callable[[str], None]
) -> None:
    assert places.places() == []
    assert (
        places.seen(ContainerPlace("env", "gpu02", image="/enroot/pt.sqsh", writable=True, partition="gpu"), True)
        is None
    )
    assert places.places() == [
        ContainerPlace(
            "env",
            "gpu02",
            "/enroot/pt.sqsh",
            True,
            "gpu",
            created="2026-12-07T10:00:00+00:00",
            last_use="2026-12-07T10:00:00+00:00",
        )
    ]


def test_a_later_start_keeps_when_it_was_created_one_that_made_it_anew_returns_the_wiped_record(
    places: ContainerPlaces, clock: Callable[[str], None]
) -> None:
    places.seen(ContainerPlace("env", "gpu02"), True)
    clock("2026-12-07T11:00:00+00:00")
    assert places.seen(ContainerPlace("env", "gpu02"), False) is None  # there already: reused
    [kept] = places.places()
    assert (kept.created, kept.last_use) == ("2026-12-07T10:00:00+00:00", "2026-12-07T11:00:00+00:00")

    clock("2026-12-07T12:00:00+00:00")
    wiped = places.seen(ContainerPlace("env", "gpu02"), True)  # Pyxis made it again: the recorded one had been removed
    assert wiped == kept
    [renewed] = places.places()
    assert (renewed.created, renewed.last_use) == ("2026-12-07T12:00:00+00:00", "2026-12-07T12:00:00+00:00")


def test_a_container_never_seen_there_that_a_start_created_is_no_wiped_one(
    places: ContainerPlaces, clock: Callable[[str], None]
) -> None:
    places.seen(ContainerPlace("env", "gpu01"), True)
    assert places.seen(ContainerPlace("env", "gpu02"), True) is None  # another node's copy says nothing of this one
    assert [found.node for found in places.places("env")] == ["gpu02", "gpu01"]


def test_places_are_listed_most_recently_used_first_and_by_name(
    places: ContainerPlaces, clock: Callable[[str], None]
) -> None:
    for stamp, (name, node) in enumerate([("env", "gpu01"), ("other", "gpu01"), ("env", "gpu02")]):
        clock(f"2026-12-07T1{stamp}:00:00+00:00")
        places.seen(ContainerPlace(name, node), False)
    assert [(found.name, found.node) for found in places.places()] == [
        ("env", "gpu02"),
        ("other", "gpu01"),
        ("env", "gpu01"),
    ]
    assert [found.node for found in places.places("env")] == ["gpu02", "gpu01"]
    clock("2026-12-07T13:00:00+00:00")
    places.seen(ContainerPlace("env", "gpu01"), False)  # used again: first again
    assert [found.node for found in places.places("env")] == ["gpu01", "gpu02"]


def test_forget_removes_one_node_s_record_or_every_node_s_and_returns_what_went(
    places: ContainerPlaces, clock: Callable[[str], None]
) -> None:
    for name, node in [("env", "gpu01"), ("env", "gpu02"), ("other", "gpu02")]:
        places.seen(ContainerPlace(name, node), False)
    assert [found.node for found in places.forget("env", "gpu02")] == ["gpu02"]
    assert [(found.name, found.node) for found in places.places()] == [("other", "gpu02"), ("env", "gpu01")]
    assert places.forget("env", "gpu02") == []  # gone already
    assert places.forget("nothing") == []
    places.seen(ContainerPlace("env", "gpu02"), False)
    assert {found.node for found in places.forget("env")} == {"gpu01", "gpu02"}
    assert [found.name for found in places.places()] == ["other"]


def test_grouped_gives_one_entry_per_name_its_nodes_newest_first_and_the_newest_s_settings(
    clock: Callable[[str], None],
) -> None:
    older = ContainerPlace(
        "env", "gpu01", image="/enroot/old.sqsh", writable=False, last_use="2026-12-07T10:00:00+00:00"
    )
    newer = ContainerPlace(
        "env", "gpu02", image="/enroot/new.sqsh", writable=True, last_use="2026-12-07T11:00:00+00:00"
    )
    alone = ContainerPlace("another", "gpu01", last_use="2026-12-07T09:00:00+00:00")
    entries = grouped([older, alone, newer])
    assert [entry["name"] for entry in entries] == ["another", "env"]
    env = entries[1]
    assert (env["nodes"], env["image"], env["writable"], env["last_use"]) == (
        ["gpu02", "gpu01"],
        "/enroot/new.sqsh",
        True,
        "2026-12-07T11:00:00+00:00",
    )
    assert env["places"] == [newer.to_json(), older.to_json()]
    assert entries[0]["writable"] is None  # Pyxis's default: neither flag was given


def test_a_malformed_file_reads_as_no_containers_and_the_next_start_writes_it_anew(
    places: ContainerPlaces, root: Path, clock: Callable[[str], None]
) -> None:
    places.places()  # makes the directory
    (root / PLACES_FILE).write_text("{not json")
    assert places.places() == []
    places.seen(ContainerPlace("env", "gpu02"), False)
    assert [found.name for found in places.places()] == ["env"]


def test_rows_that_are_not_places_are_passed_over(places: ContainerPlaces, root: Path) -> None:
    places.places()
    rows = [
        {"name": "env", "node": "gpu02", "writable": "yes", "image": None},  # a wrong type read as unset
        {"name": "no-node"},
        ["not", "a", "row"],
        {"name": 3, "node": "gpu01"},
    ]
    (root / PLACES_FILE).write_text(json.dumps({"version": 1, "containers": rows}))
    assert places.places() == [ContainerPlace("env", "gpu02")]
    (root / PLACES_FILE).write_text(json.dumps({"version": 1, "containers": "none"}))
    assert places.places() == []


def test_the_file_is_the_user_s_alone_in_a_private_directory(
    places: ContainerPlaces, root: Path, clock: Callable[[str], None]
) -> None:
    mask = os.umask(0)  # no help from the process's mask: the modes below are the module's own
    try:
        places.seen(ContainerPlace("env", "gpu02"), True)
    finally:
        os.umask(mask)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / PLACES_FILE).stat().st_mode) == 0o600
    assert sorted(path.name for path in root.iterdir()) == [PLACES_FILE, PLACES_FILE + ".lock"]


def test_a_directory_others_can_write_is_refused_saying_what_it_holds_and_the_fix(
    places: ContainerPlaces, root: Path
) -> None:
    root.mkdir(parents=True)
    root.chmod(0o777)
    with pytest.raises(AsgardError) as refused:
        places.places()
    assert "nobody else can read or write (mode 0700)" in refused.value.message
    assert "steers where your kernels start" in refused.value.message
    assert refused.value.hint == f"chmod 700 {root} (or remove it; it is made again)"
    with pytest.raises(AsgardError):
        places.seen(ContainerPlace("env", "gpu02"), True)
    assert not (root / PLACES_FILE).exists()  # nothing written where others could have put their own
