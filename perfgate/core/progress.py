"""Progress lines: what a long run says while it runs (server start stages, phases, Locust ramp stages).

Below the pytest plugin nothing prints on its own: code with something to say calls a ``Progress``
callback. The default (``silent``) says nothing; the CLI passes ``to_stderr``; the pytest plugin passes a
writer to its terminal reporter (perfgate/pytest_progress.py). ``result=True`` marks a measured phase's
one-line result, the one line ``pytest -q`` still shows.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Protocol


class Progress(Protocol):
    def __call__(self, line: str, *, result: bool = False) -> None: ...


def silent(line: str, *, result: bool = False) -> None:
    """Says nothing: the default for library use and scripts."""


def to_stderr(line: str, *, result: bool = False) -> None:
    """The CLI's writer: stdout stays for what a command returns (a URL, a table)."""
    print(line, file=sys.stderr, flush=True)


class LineFollower:
    """The complete lines another process has appended to a file since the last call (a log being written).

    A line still being written (no newline yet, e.g. a progress bar redrawn with carriage returns) is kept
    until it ends.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._offset = 0
        self._partial = b""

    def new_lines(self) -> list[str]:
        try:
            with self.path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except OSError:
            return []
        self._offset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        return [line.decode("utf-8", errors="replace").rstrip("\r") for line in lines]
