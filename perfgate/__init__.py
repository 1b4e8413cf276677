"""perfgate: a pytest-driven performance gate for LLM serving on vLLM.

In a test, the ``perfgate`` fixture (installed with the package's pytest plugin) does the work::

    async def test_chat(perfgate):
        phase = await perfgate.measure("chat")
        perfgate.assert_slos(phase)
        perfgate.assert_no_regression(phase)

Outside pytest, the same pieces are importable from here::

    session = perfgate.PerfgateSession(results_dir=Path("results/manual"))
    stops = []
    target = perfgate.launch_target(session, "cpu-tiny", stops.append)  # or attach_target (session.vllm_url)
    runner = perfgate.PhaseRunner(target, session)  # a failed check raises PerfCheckFailed
    phase = await runner.measure("cpu-closed")

Every name is imported when first used (PEP 562 ``__getattr__``): this file runs before every perfgate
module (``import perfgate.core.stats`` runs it first), so at its top it imports nothing; ``import perfgate``
loads neither pytest nor vLLM, httpx or matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS = {
    # running: the session, the server a run measures, the runner the ``perfgate`` fixture hands a test
    "PerfgateSession": "perfgate.run.session",
    "Target": "perfgate.run.target",
    "launch_target": "perfgate.run.launch",
    "attach_target": "perfgate.run.launch",
    "PhaseRunner": "perfgate.run.runner",
    # the data files a project writes
    "Profile": "perfgate.serving.profile",
    "load_profile": "perfgate.serving.profile",
    "Scenario": "perfgate.load.scenario",
    "load_scenario": "perfgate.load.scenario",
    "load_slos": "perfgate.verdict.slo_files",
    "find_baseline": "perfgate.verdict.baseline",
    # results and verdicts
    "PhaseResult": "perfgate.core.phase",
    "SloVerdict": "perfgate.verdict.slo",
    "GateVerdict": "perfgate.verdict.gate",
    "compare": "perfgate.verdict.gate",
    # errors: every one names the input and the fix
    "PerfgateError": "perfgate._errors",
    "ConfigError": "perfgate._errors",
    "ServerError": "perfgate._errors",
    "PerfCheckFailed": "perfgate._errors",
}

__all__ = [  # the names of _EXPORTS, and the version (tests/test_package_api.py checks they agree)
    "ConfigError", "GateVerdict", "PerfCheckFailed", "PerfgateError", "PerfgateSession", "PhaseResult",
    "PhaseRunner", "Profile", "Scenario", "ServerError", "SloVerdict", "Target", "__version__",
    "attach_target", "compare", "find_baseline", "launch_target", "load_profile", "load_scenario", "load_slos",
]

if TYPE_CHECKING:  # for type checkers and editors only; at run time __getattr__ imports on first use
    from perfgate._errors import ConfigError, PerfCheckFailed, PerfgateError, ServerError
    from perfgate.core.phase import PhaseResult
    from perfgate.load.scenario import Scenario, load_scenario
    from perfgate.run.launch import attach_target, launch_target
    from perfgate.run.runner import PhaseRunner
    from perfgate.run.session import PerfgateSession
    from perfgate.run.target import Target
    from perfgate.serving.profile import Profile, load_profile
    from perfgate.verdict.baseline import find_baseline
    from perfgate.verdict.gate import GateVerdict, compare
    from perfgate.verdict.slo import SloVerdict
    from perfgate.verdict.slo_files import load_slos

    __version__: str


def __getattr__(name: str) -> Any:
    if name == "__version__":
        value: Any = _version()
    elif name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
    else:
        # AttributeError (not ImportError) lets `from perfgate import <submodule>` fall back to the import.
        raise AttributeError(f"module 'perfgate' has no attribute {name!r}")
    globals()[name] = value  # the next lookup is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _version() -> str:
    """The installed distribution's version; from a bare checkout (PYTHONPATH, nothing installed), the
    version its pyproject.toml says, marked as a local build; ``0+unknown`` when neither can be read."""
    import importlib.metadata

    try:
        return importlib.metadata.version("perfgate")
    except importlib.metadata.PackageNotFoundError:
        pass
    from pathlib import Path

    import tomllib

    try:
        project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text("utf-8"))
        if project["project"]["name"] == "perfgate":
            return f"{project['project']['version']}+checkout"
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        pass
    return "0+unknown"
