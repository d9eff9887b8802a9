"""The `jupyter asgard` command: kernelspec installs, the site check, status and saves through the running
servers' REST API. Imports kernel/, site/ and below, never server/ (it talks to servers over HTTP)."""

from .cli import main

__all__ = ["main"]
