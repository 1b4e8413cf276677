"""perfgate's own pytest hooks (registered by the plugin), for users' conftest.py files."""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_perfgate_server_started(config, profile, server, healthy_after_s) -> None:
    """A vLLM server for ``profile`` became healthy (or, with --vllm-url, was attached)."""


@hookspec
def pytest_perfgate_phase_measured(config, phase) -> None:
    """A phase was measured and saved; ``phase`` is a perfgate.core.phase.PhaseResult."""
