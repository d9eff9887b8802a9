"""Running a command as a terminal's shell runs it, for tests that stop it with Ctrl-C (SIGINT).

A child inherits the signal dispositions of the process that starts it, and a test process may have SIGINT and
SIGQUIT ignored at that moment: glibc's system(), which some library may call in another thread, ignores exactly
these two while it runs, and a suite started in the background by a non-interactive shell has them ignored
throughout. Python installs its Ctrl-C handler only where SIGINT is not ignored, and a bash script cannot undo an
ignored signal: Ctrl-C would then reach neither the command nor its children (their /proc status showed SIGINT
ignored when a test's Ctrl-C went unanswered).
"""

from __future__ import annotations

import sys

# Runs argv with SIGINT and SIGQUIT (and SIGPIPE and SIGXFSZ, which Python ignores for itself) at their defaults.
AS_FROM_A_TERMINAL = [
    sys.executable,
    "-c",
    "import os, signal, sys\n"
    "for name in ('SIGINT', 'SIGQUIT', 'SIGPIPE', 'SIGXFSZ'):\n"
    "    signal.signal(getattr(signal, name), signal.SIG_DFL)\n"
    "os.execvp(sys.argv[1], sys.argv[1:])",
]
