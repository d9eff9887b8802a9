"""Which notebook a kernel row names: the session's path, or the kernel's own while JupyterLab has none."""

from __future__ import annotations

import pytest

from jupyter_asgard.server.notebook_paths import api_path, is_placeholder_path, notebook_path, session_paths

UUID = "0b3f5c1e-8d2a-4f6b-9c7d-1e2f3a4b5c6d"


@pytest.mark.parametrize(
    ("path", "placeholder"),
    [(UUID, True), (f"work/{UUID}", True), ("work/analysis.ipynb", False), (f"{UUID}.ipynb", False), ("", False)],
)
def test_a_placeholder_is_a_bare_uuid(path: str, placeholder: bool) -> None:
    assert is_placeholder_path(path) is placeholder


def test_the_kernel_s_own_path_is_made_relative_to_the_root() -> None:
    assert api_path("/home/alice/", "/home/alice/work/a.ipynb") == "work/a.ipynb"
    assert api_path("/home/alice", "/home/alicebob/a.ipynb") == "/home/alicebob/a.ipynb"  # not under the root
    assert api_path("/home/alice", "") == ""


def test_a_session_s_path_wins_unless_it_is_a_placeholder() -> None:
    sessions = session_paths(
        [
            {"kernel": {"id": "k1"}, "path": "work/renamed.ipynb"},
            {"kernel": {"id": "k2"}, "path": f"work/{UUID}"},
            {"kernel": None, "path": "orphan.ipynb"},
        ]
    )
    assert sessions == {"k1": "work/renamed.ipynb"}
    assert notebook_path("k1", "/root/work/old.ipynb", sessions, "/root") == "work/renamed.ipynb"
    assert notebook_path("k2", "/root/work/new.ipynb", sessions, "/root") == "work/new.ipynb"
