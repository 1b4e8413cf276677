"""Ctrl-C / ``kill -INT`` always means stop, even for a background job of a non-interactive shell.

Such a job inherits SIGINT *ignored* (POSIX shells do that for ``cmd &`` without job control), and Python
keeps an inherited SIG_IGN, so KeyboardInterrupt never comes and a script's ``kill -INT`` does nothing.
``perfgate serve``, ``perfgate bench`` and the pytest plugin call ``restore_sigint()`` at start. A user
who wants SIGINT to stay ignored says so with ``PERFGATE_KEEP_SIGINT_IGNORED=1``.
"""

from __future__ import annotations

import os
import signal

KEEP_ENV = "PERFGATE_KEEP_SIGINT_IGNORED"


def restore_sigint() -> bool:
    """Install Python's default SIGINT handler if SIGINT was inherited ignored; True if it did."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN or os.environ.get(KEEP_ENV) == "1":
        return False
    signal.signal(signal.SIGINT, signal.default_int_handler)
    return True
