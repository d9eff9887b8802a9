"""An authorizer for a test's own Jupyter server (c.ServerApp.authorizer_class), as JupyterHub's roles or a site's
own authorizer may grant: everything, except `execute` while the file `deny_execute_file` exists (the test
creates and removes it, to ask the same server with and without the right)."""

from __future__ import annotations

import os
from typing import Any

from jupyter_server.auth.authorizer import Authorizer
from traitlets import Unicode


class ExecuteSwitchAuthorizer(Authorizer):
    deny_execute_file = Unicode("", help="While this file exists, no `execute` is granted.").tag(config=True)

    def is_authorized(self, handler: Any, user: Any, action: str, resource: str) -> bool:
        return action != "execute" or not os.path.exists(self.deny_execute_file)
