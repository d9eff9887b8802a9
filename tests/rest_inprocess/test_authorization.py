"""Save-image and the container terminal run commands in a kernel's container, and a container's removal runs
enroot as the user: under an authorizer that grants writing kernels and terminals but not executing (as
JupyterHub's roles or a site's own authorizer may), they are refused with 403 before anything else is looked
at; with execute they reach the kernel or the record (none here, so 404). With real kernels on the test
cluster: test_load_limits.py, test_container_removal_jobs.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import pytest
from jupyter_server.auth.authorizer import Authorizer
from tornado.httpclient import HTTPClientError

pytest_plugins = ["pytest_jupyter.jupyter_server"]


class GrantedAuthorizer(Authorizer):
    """Grants the (action, resource) pairs in `granted` only; the tests change it."""

    granted: ClassVar[set[tuple[str, str]]] = set()

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return (action, resource) in self.granted


WRITE = {("write", "kernels"), ("write", "terminals"), ("read", "kernels")}


@pytest.fixture
def jp_server_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "ServerApp": {
            "jpserver_extensions": {"jupyter_asgard": True},
            "authorizer_class": f"{__name__}.GrantedAuthorizer",
        },
        "AsgardSite": {"image_dirs": [str(tmp_path)], "registry_images": []},
    }


async def answer_code(jp_fetch: Any, method: str, *path: str) -> int:
    """The HTTP status of a request under /asgard/api/ (a refusal must say why, in JSON)."""
    try:
        answer = await jp_fetch("asgard", "api", *path, method=method, body=b"{}" if method == "POST" else None)
    except HTTPClientError as error:
        assert error.response is not None and json.loads(error.response.body)["message"]
        return error.code
    return answer.code


async def status(jp_fetch: Any, *path: str) -> int:
    return await answer_code(jp_fetch, "POST", "kernels", "no-such-kernel", *path)


@pytest.mark.parametrize("path", ["terminal", "save-image"])
async def test_writing_kernels_and_terminals_without_execute_is_refused(jp_fetch: Any, path: str) -> None:
    GrantedAuthorizer.granted = WRITE
    assert await status(jp_fetch, path) == 403


@pytest.mark.parametrize("path", ["terminal", "save-image"])
async def test_with_execute_on_kernels_the_request_reaches_the_kernel(jp_fetch: Any, path: str) -> None:
    GrantedAuthorizer.granted = WRITE | {("execute", "kernels")}
    assert await status(jp_fetch, path) == 404


async def test_the_container_terminal_still_needs_writing_terminals(jp_fetch: Any) -> None:
    GrantedAuthorizer.granted = {("execute", "kernels"), ("write", "kernels")}
    assert await status(jp_fetch, "terminal") == 403


async def test_removing_a_container_needs_execute_on_kernels(jp_fetch: Any) -> None:
    GrantedAuthorizer.granted = WRITE
    assert await answer_code(jp_fetch, "DELETE", "containers", "env") == 403
    GrantedAuthorizer.granted = WRITE | {("execute", "kernels")}
    assert await answer_code(jp_fetch, "DELETE", "containers", "env") == 404


async def test_listing_containers_needs_reading_kernels(jp_fetch: Any) -> None:
    GrantedAuthorizer.granted = {("read", "kernelspecs")}
    assert await answer_code(jp_fetch, "GET", "containers") == 403
    GrantedAuthorizer.granted = {("read", "kernels")}
    assert await answer_code(jp_fetch, "GET", "containers") == 200
