"""An authorizer for the tests' Jupyter servers (c.ServerApp.authorizer_class) that grants as a site's own
authorizer may (the hub's servers in tests/hub.py run the product's, jupyter_asgard.server.hub_authorizer)."""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.auth.authorizer import Authorizer
from traitlets import Unicode


class ExecuteSwitchAuthorizer(Authorizer):
    """Everything, except `execute` while the file `deny_execute_file` exists (the test creates and removes it, to
    ask the same server with and without the right)."""

    deny_execute_file = Unicode("", help="While this file exists, no `execute` is granted.").tag(config=True)

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return action != "execute" or not os.path.exists(self.deny_execute_file)
