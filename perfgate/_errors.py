"""perfgate's exceptions: every one says what went wrong, with which input, and the way out.

Modelled on httpx's ``_exceptions``: one small hierarchy behind the flat public API. A message is
``<cause>`` followed by an indented ``fix:`` line, so a person reading a CI log knows what to do
without opening the source.
"""

from __future__ import annotations


class PerfgateError(Exception):
    """Base class. ``str(err)`` is the cause plus, when known, the input it concerns and the fix."""

    def __init__(self, message: str, *, fix: str | None = None, source: str | None = None) -> None:
        self.message = message
        self.fix = fix
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        text = f"{self.source}: {self.message}" if self.source else self.message
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text


class ConfigError(PerfgateError):
    """A data file (profile, scenario, SLO set) is missing, not valid TOML, or has a bad field."""


class LintError(PerfgateError):
    """A launch profile or command line names flags vLLM does not have, or gives one a bad value."""

    def __init__(self, message: str, *, problems: list | None = None, **kw) -> None:
        self.problems = list(problems or [])
        super().__init__(message, **kw)


class DoctorError(PerfgateError):
    """The KV cache cannot hold one request of max-model-len on this GPU (the arithmetic is in the message)."""


class VllmNotInstalledError(PerfgateError):
    """vLLM is not importable, or it is the wrong build (CUDA vs CPU) for what was asked."""


class ServerError(PerfgateError):
    """A vLLM server could not be started, died, never became healthy, or is not vLLM."""

    def __init__(self, message: str, *, log_tail: str = "", log_path: str | None = None, **kw) -> None:
        self.log_tail = log_tail
        self.log_path = log_path
        if log_tail:
            message = f"{message}\n--- last lines of the server log ({log_path}) ---\n{log_tail}"
        super().__init__(message, **kw)


class BaselineError(PerfgateError):
    """A baseline file is corrupt, of another schema version, or may not be written."""


class ResultsDirError(PerfgateError):
    """The results directory cannot be written (permissions, full disk)."""


class InvalidRunError(PerfgateError):
    """The load generator could not keep its schedule; the measured figures do not describe the server."""


class PerfCheckFailed(PerfgateError):
    """A perf test's check failed (SLO, gate, invalid run, server gone); the message is the verdict table.

    Raised by ``perfgate.run.runner.PhaseRunner`` outside pytest; the ``perfgate`` fixture fails the test instead.
    """
