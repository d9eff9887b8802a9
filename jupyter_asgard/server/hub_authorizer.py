"""Who may do what on a single-user server that JupyterHub spawned, as the hub's roles say.

JupyterHub lets anyone it gave ``access:servers`` on a server do everything there: its single-user server checks
that scope when it identifies a request's user and configures no authorizer. A colleague or an instructor given
access to look at a researcher's kernels could then shut them down, open a terminal in their container or save
it as an image. With ``HubScopesAuthorizer`` as the server's authorizer, whoever is not the server's owner gets
only the actions the hub's custom scopes grant them (``custom:jupyter_server:ACTION:RESOURCE`` on that user or
server, ACTION one of jupyter_server's read, write and execute), and each handler of the server and of Asgard
asks for the action it declares. The owner keeps everything, as under the hub's default.

Imported only in a server the hub spawned (``c.Spawner.args`` in the README's hub configuration): it needs the
``jupyterhub`` package, which those servers run from.
"""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.auth.authorizer import Authorizer
from jupyterhub.services.auth import check_scopes
from traitlets import Unicode

ACTIONS = ("read", "write", "execute")  # jupyter_server's, each including those before it
SCOPE_PREFIX = "custom:jupyter_server"


def custom_scopes(prefix: str = SCOPE_PREFIX) -> dict[str, dict[str, Any]]:
    """The hub's ``c.JupyterHub.custom_scopes`` the authorizer reads: one per action on all of a server's
    resources, each with the actions before it as subscopes (who may execute may also write and read)."""
    return {
        f"{prefix}:{action}:*": {
            "description": f"{action} on a user's Jupyter server",
            **({"subscopes": [f"{prefix}:{lesser}:*" for lesser in ACTIONS[:index]]} if index else {}),
        }
        for index, action in enumerate(ACTIONS)
    }


def oauth_client_allowed_scopes(prefix: str = SCOPE_PREFIX) -> list[str]:
    """The hub's ``c.Spawner.oauth_client_allowed_scopes``: what a browser logging in to a server may carry there
    (the hub narrows ``!server`` to that server, and grants each user only what their roles hold). A list:
    JupyterHub 6.1 fails to start a server whose spawner has a callable here."""
    return [f"{prefix}:{action}:*!server" for action in ACTIONS]


class HubScopesAuthorizer(Authorizer):
    """Grants its owner everything on the server, and anyone else ACTION on RESOURCE when the hub gave them
    ``PREFIX:ACTION:RESOURCE`` or ``PREFIX:ACTION:*`` on the owner (``!user=``) or this server (``!server=``).
    Group filters (``!group=``) are not resolved here, as JupyterHub's own ``check_scopes`` does not: grant to
    users, or to a group of grantees on named owners."""

    scope_prefix = Unicode(
        SCOPE_PREFIX,
        help="The hub's custom scopes' prefix: PREFIX:ACTION:RESOURCE (it must start with 'custom:').",
    ).tag(config=True)

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        hub_user = getattr(user, "hub_user", None)
        if not isinstance(hub_user, dict):  # not someone the hub identified: nothing
            return False
        owner = os.environ.get("JUPYTERHUB_USER", "")
        if not owner:
            return False
        if hub_user.get("kind", "user") == "user" and hub_user.get("name") == owner:
            return True
        server = f"{owner}/{os.environ.get('JUPYTERHUB_SERVER_NAME', '')}"
        wanted = {
            f"{self.scope_prefix}:{action}:{what}{where}"
            for what in (resource, "*")
            for where in (f"!user={owner}", f"!server={server}")
        }
        return bool(check_scopes(wanted, set(hub_user.get("scopes", ()))))
