"""Placement's decisions and words, without a cluster (site/placement.py): which node a kernel's allocation is
asked for, given Slurm's estimates for the nodes holding its container, and what the user is told otherwise."""

from __future__ import annotations

import pytest

from jupyter_asgard.containers.launch_plan import lasting_container_name
from jupyter_asgard.kernel.container_places import ContainerPlace, newest_first
from jupyter_asgard.launch.launch_config import LaunchConfig
from jupyter_asgard.site.estimates import Estimate
from jupyter_asgard.site.placement import (
    GRANT_PATIENCE,
    Placement,
    choose,
    chooses_nodes,
    on_node,
    wiped_notice,
)

IMAGE = "/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh"
NOW = Estimate("gpu02", seconds=0, nodes="gpu02", start="2026-12-07T10:00:00")
IN_TEN_MINUTES = Estimate("gpu02", seconds=600, nodes="gpu02", start="2026-12-07T10:10:00")
HELD_FOR_GOOD = Estimate("gpu02", seconds=None)
DRAINED = Estimate("gpu02", error="Requested node configuration is not available")


@pytest.mark.parametrize(
    ("salloc_args", "chooses"),
    [
        ((), False),
        (("--nodelist=gpu02",), True),
        (("-w", "gpu02"), True),
        (("-wgpu02",), True),
        (("--nodefile=/tmp/nodes",), True),
        (("--exclude=gpu01",), False),
        (("--constraint=h100",), False),
    ],
)
def test_a_kernel_whose_own_salloc_args_name_its_nodes_is_left_to_them(
    salloc_args: tuple[str, ...], chooses: bool
) -> None:
    assert chooses_nodes(LaunchConfig(image=IMAGE, salloc_args=salloc_args)) is chooses


def test_the_allocation_is_asked_for_on_the_node_alone() -> None:
    config = LaunchConfig(image=IMAGE, salloc_args=("--constraint=h100",))
    assert on_node(config, "gpu02").salloc_args == ("--constraint=h100", "--nodelist=gpu02")
    assert config.salloc_args == ("--constraint=h100",)


def test_the_first_home_that_starts_now_gets_the_allocation() -> None:
    placement = Placement("my-env", ("gpu03", "gpu02"))
    chosen = choose(placement, [Estimate("gpu03", seconds=300, nodes="gpu03"), NOW], wait=0)
    assert (chosen.node, chosen.patience, chosen.why_not) == ("gpu02", GRANT_PATIENCE, "")


def test_a_home_free_within_the_sites_wait_is_waited_for() -> None:
    chosen = choose(Placement("my-env", ("gpu02",)), [IN_TEN_MINUTES], wait=900)
    assert (chosen.node, chosen.patience) == ("gpu02", 900)
    assert choose(Placement("my-env", ("gpu02",)), [IN_TEN_MINUTES], wait=0).node == ""


@pytest.mark.parametrize(
    ("estimate", "why"),
    [
        (IN_TEN_MINUTES, ", which is busy (Slurm: expected to start at 10:10 (in ~10 min) on gpu02)"),
        (HELD_FOR_GOOD, ", which is busy (Slurm cannot tell until when)"),
        (DRAINED, ", which is not available to this kernel (Slurm: Requested node configuration is not available)"),
    ],
)
def test_a_busy_home_sends_the_kernel_elsewhere_saying_why(estimate: Estimate, why: str) -> None:
    chosen = choose(Placement("my-env", ("gpu02",)), [estimate], wait=0)
    assert (chosen.node, chosen.why_not) == ("", why)
    assert chosen.notice("gpu01", fresh=True) == (
        f"your container my-env, with what you installed, is on gpu02{why}: this kernel runs on gpu01 in a fresh "
        "copy of the image"
    )


def test_the_notice_names_every_home_and_the_copy_the_kernel_runs_in() -> None:
    placement = Placement("my-env", ("gpu02", "gpu03")).elsewhere(", which are busy (Slurm cannot tell until when)")
    assert placement.notice("gpu01", fresh=False) == (
        "your container my-env, with what you installed, is on gpu02 and gpu03, which are busy (Slurm cannot tell "
        "until when): this kernel runs on gpu01 in the copy of my-env that was on gpu01 already"
    )


def test_a_kernel_where_its_container_is_or_without_one_is_told_nothing() -> None:
    assert Placement("my-env", ("gpu02",), node="gpu02").notice("gpu02", fresh=False) == ""
    assert Placement("my-env").notice("gpu01", fresh=True) == ""
    assert Placement().notice("gpu01", fresh=True) == ""


def test_a_wiped_container_is_told_as_lost() -> None:
    assert wiped_notice("my-env", "gpu02") == (
        "your container my-env was no longer on gpu02 (it was removed from the node's storage): this kernel runs "
        "in a fresh copy of the image, without what was installed in it"
    )


def test_only_a_container_that_outlives_its_job_is_placed() -> None:
    config = LaunchConfig(image=IMAGE)
    assert lasting_container_name(config, "jupyter-{kernel_name}-{image_hash}", "asgard-pytorch").startswith(
        "jupyter-asgard-pytorch-"
    )
    assert lasting_container_name(LaunchConfig(image=IMAGE, container_name="my-env:auto"), "x", "k") == "my-env"
    assert lasting_container_name(config, "jupyter-{kernel_name}-{job_id}", "asgard-pytorch") == ""


def test_a_busy_home_with_a_free_fresh_copy_sends_the_kernel_to_the_copy_saying_what_it_lacks() -> None:
    """The fresh copy on gpu01 was made from the image when gpu02 was busy before: a warm start there beats a cold
    one on a third node, and the user is told it lacks what they installed on gpu02."""
    placement = Placement("my-env", ("gpu02",), copies=("gpu01",))
    chosen = choose(placement, [IN_TEN_MINUTES, Estimate("gpu01", seconds=0, nodes="gpu01")], wait=0)
    assert chosen.node == "gpu01"
    assert chosen.notice("gpu01", fresh=False) == (
        "your container my-env, with what you installed, is on gpu02, which is busy (Slurm: expected to start at "
        "10:10 (in ~10 min) on gpu02): this kernel runs on gpu01 in the copy of my-env made there from the image "
        "earlier"
    )


def test_copies_with_what_was_installed_come_before_fresh_copies() -> None:
    """The fresh copy is the most recently used, yet the node with what the user installed is tried first."""
    original = ContainerPlace("my-env", "gpu02", last_use="2026-12-01T10:00:00+00:00")
    fresh = ContainerPlace("my-env", "gpu01", last_use="2026-12-02T10:00:00+00:00", fresh_copy=True)
    older = ContainerPlace("my-env", "gpu03", last_use="2026-11-01T10:00:00+00:00")
    assert [place.node for place in newest_first([fresh, older, original])] == ["gpu02", "gpu03", "gpu01"]
