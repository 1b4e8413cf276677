"""perfgate's progress lines in pytest's terminal (the ``Progress`` the plugin gives ``config.perfgate``).

Lines go through the terminal reporter as they happen: a server's start stages during the fixture's setup,
a phase's start and result lines and Locust's ramp stages during the test. pytest captures output while a
test runs, so each write suspends capture for its line, as pytest's own live logging does; with ``-s``
there is nothing to suspend. Each line starts on a fresh line; the test's ``.`` or ``PASSED`` then comes on
the line after them, as with pytest's live logging.

Verbosity: by default and with ``-v`` every line; ``-q`` only each phase's one-line result; ``-qq`` (or
``-p no:terminal``) nothing.
"""

from __future__ import annotations

import contextlib
import threading

import pytest


class TerminalProgress:
    def __init__(self, config: pytest.Config) -> None:
        self._config = config
        self._lock = threading.Lock()  # Locust's ramp lines come from the thread that waits on Locust

    def __call__(self, line: str, *, result: bool = False) -> None:
        verbosity = self._config.getoption("verbose")
        if verbosity <= -2 or (verbosity < 0 and not result):
            return
        reporter = self._config.pluginmanager.get_plugin("terminalreporter")
        if reporter is None:
            return
        capture = self._config.pluginmanager.get_plugin("capturemanager")
        with self._lock, (capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext()):
            reporter.write_line(line, red=result and " INVALID" in line)
