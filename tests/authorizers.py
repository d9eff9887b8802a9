"""Authorizers for the tests' Jupyter servers (c.ServerApp.authorizer_class): one that grants as a site's own
authorizer may, and one that grants what the roles of tests/hub.py's JupyterHub say."""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.auth.authorizer import Authorizer
from jupyterhub.services.auth import check_scopes
from traitlets import Unicode


class ExecuteSwitchAuthorizer(Authorizer):
    """Everything, except `execute` while the file `deny_execute_file` exists (the test creates and removes it, to
    ask the same server with and without the right)."""

    deny_execute_file = Unicode("", help="While this file exists, no `execute` is granted.").tag(config=True)

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return action != "execute" or not os.path.exists(self.deny_execute_file)


# The custom scopes of tests/hub.py's JupyterHub: SERVER_SCOPE:ACTION:RESOURCE, ACTION one of jupyter_server's read,
# write and execute, RESOURCE one of its resources (kernels, terminals, ...) or * for all of them.
SERVER_SCOPE = "custom:jupyter_server"


class HubScopesAuthorizer(Authorizer):
    """A JupyterHub single-user server's authorizer that grants ACTION on RESOURCE to whom the hub gave the custom
    scope SERVER_SCOPE:ACTION:RESOURCE or SERVER_SCOPE:ACTION:* on this server.

    JupyterHub 6 itself lets anyone it gave access:servers on a server do everything there: its single-user server
    checks that scope when it identifies the user and configures no authorizer. Read-only access, as its
    documentation proposes it, takes custom scopes in the hub's roles and an authorizer like this one in the
    single-user server; with it, what the hub's roles grant is what each of the server's handlers allows, so a
    test holds each of Asgard's handlers to the action it declares."""

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        owner = os.environ["JUPYTERHUB_USER"]
        server = f"{owner}/{os.environ.get('JUPYTERHUB_SERVER_NAME', '')}"
        wanted = {
            f"{SERVER_SCOPE}:{action}:{what}{where}"
            for what in (resource, "*")
            for where in (f"!user={owner}", f"!server={server}")
        }
        return bool(check_scopes(wanted, set(user.hub_user["scopes"])))
