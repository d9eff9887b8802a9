"""Who may do what on a single-user server behind JupyterHub (server/hub_authorizer.py): its owner everything,
anyone else what the hub's custom scopes grant on that user or server, read with JupyterHub's own check_scopes.
The same authorizer runs in the hub's servers in tests/test_hub.py, configured by the README's blocks checked
here."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from traitlets import HasTraits
from traitlets.config import Config

from jupyter_asgard.server.hub_authorizer import (
    HubScopesAuthorizer,
    custom_scopes,
    oauth_client_allowed_scopes,
)
from tests.hub import CULLER, HUB_CONFIG, SERVER_CONFIG
from tests.readme_blocks import readme_python


@pytest.fixture(autouse=True)
def alices_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment JupyterHub's spawner gives alice's default server."""
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("JUPYTERHUB_SERVER_NAME", "")


def allowed(scopes: list[str], name: str = "bob", kind: str = "user", **config: Any) -> set[str]:
    """The ACTION:RESOURCE pairs the authorizer allows one who holds scopes."""
    user = SimpleNamespace(hub_user={"kind": kind, "name": name, "scopes": scopes})
    authorizer = HubScopesAuthorizer(**config)
    return {
        f"{action}:{resource}"
        for action in ("read", "write", "execute")
        for resource in ("kernels", "terminals", "contents")
        if authorizer.is_authorized(None, user, action, resource)
    }


EVERYTHING = {f"{a}:{r}" for a in ("read", "write", "execute") for r in ("kernels", "terminals", "contents")}


def test_the_owner_may_do_everything_with_access_alone() -> None:
    assert allowed(["access:servers!user=alice"], name="alice") == EVERYTHING


@pytest.mark.parametrize(
    ("scopes", "expected"),
    [
        (["custom:jupyter_server:read:*!user=alice"], {"read:kernels", "read:terminals", "read:contents"}),
        (["custom:jupyter_server:read:*!server=alice/"], {"read:kernels", "read:terminals", "read:contents"}),
        (["custom:jupyter_server:write:kernels!user=alice"], {"write:kernels"}),
        (["custom:jupyter_server:execute:*!user=alice"], {"execute:kernels", "execute:terminals", "execute:contents"}),
        (["custom:jupyter_server:execute:*!user=carol"], set()),  # another owner's
        (["custom:jupyter_server:execute:*!server=alice/lab2"], set()),  # another of alice's servers
        (["access:servers!user=alice"], set()),  # let in by the hub, granted nothing
        (["custom:other_prefix:execute:*!user=alice"], set()),
    ],
)
def test_anyone_else_gets_what_the_hub_s_custom_scopes_grant_on_that_user_or_server(
    scopes: list[str], expected: set[str]
) -> None:
    assert allowed(["access:servers!user=alice", *scopes]) == expected


def test_a_service_named_as_the_owner_is_not_the_owner() -> None:
    assert allowed(["access:servers!user=alice"], name="alice", kind="service") == set()


def test_nobody_the_hub_did_not_identify_and_no_server_outside_a_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    assert not HubScopesAuthorizer().is_authorized(None, SimpleNamespace(username="alice"), "read", "kernels")
    monkeypatch.delenv("JUPYTERHUB_USER")
    assert allowed(["custom:jupyter_server:execute:*!user=alice"], name="alice") == set()


def test_a_site_s_own_prefix() -> None:
    granted = ["custom:lab:read:*!user=alice"]
    assert allowed(granted, scope_prefix="custom:lab") == {"read:kernels", "read:terminals", "read:contents"}


def test_the_hub_s_scopes_each_action_with_the_lesser_ones_and_a_browser_may_carry_them() -> None:
    scopes = custom_scopes()
    assert scopes["custom:jupyter_server:execute:*"]["subscopes"] == [
        "custom:jupyter_server:read:*",
        "custom:jupyter_server:write:*",
    ]
    assert "subscopes" not in scopes["custom:jupyter_server:read:*"]
    assert oauth_client_allowed_scopes() == [f"{scope}!server" for scope in scopes]


def readme_config(first_line: str) -> Config:
    """What the README's configuration block sets, loaded as JupyterHub and jupyter_server load their files."""
    config = Config()
    exec(readme_python(first_line), {"get_config": lambda: config, "c": config})
    return config


def unknown_settings(config: Config, classes: dict[str, type[HasTraits]]) -> list[str]:
    return [
        f"{section}.{name}"
        for section, settings in config.items()
        for name in settings
        if section not in classes or not classes[section].class_traits(config=True).get(name)
    ]


def test_the_readme_s_hub_configuration_is_the_authorizer_s_and_names_only_settings_that_exist() -> None:
    from jupyter_server.services.kernels.kernelmanager import MappingKernelManager
    from jupyterhub.app import JupyterHub
    from jupyterhub.spawner import LocalProcessSpawner

    from jupyter_asgard.kernel.provisioner import PyxisProvisioner

    hub = readme_config(HUB_CONFIG)
    assert unknown_settings(hub, {"JupyterHub": JupyterHub, "Spawner": LocalProcessSpawner}) == []
    assert hub.JupyterHub.custom_scopes == custom_scopes()
    assert hub.Spawner.oauth_client_allowed_scopes == oauth_client_allowed_scopes()
    (authorizer,) = hub.Spawner.args
    assert authorizer == f"--ServerApp.authorizer_class={HubScopesAuthorizer.__module__}.HubScopesAuthorizer"
    culler = [role for role in hub.JupyterHub.load_roles if role["name"] == CULLER]
    assert [service["name"] for service in hub.JupyterHub.services] == [CULLER] and len(culler) == 1

    servers = readme_config(SERVER_CONFIG)
    classes = {"PyxisProvisioner": PyxisProvisioner, "MappingKernelManager": MappingKernelManager}
    assert unknown_settings(servers, classes) == []
    assert servers.PyxisProvisioner.detach == "allowed"
