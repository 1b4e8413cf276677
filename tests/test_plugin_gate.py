"""The plugin's gate glue, with pytester: a phase without a baseline is NEW in the terminal summary, in JUnit
(a ``perfgate_gate`` property) and in summary.md; --perfgate-require-baselines fails it with the command.

The phases are given (a real CPU run's figures, from the committed cpu-closed baseline) instead of measured:
what is under test is the plugin, the runner's verdict handling and the reports, not vLLM.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parent.parent

SUITE = '''
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from perfgate.core.phase import PhaseResult
from perfgate.run.runner import PhaseRunner

RECORDED = json.loads(Path({recorded!r}).read_text())


def _phases(fingerprint):
    return [PhaseResult("cpu-tiny", "cpu-closed", "cpu", repeat=r, server_session="s", started_at=float(r),
                        fingerprint=fingerprint, metrics={{m: v[r] for m, v in RECORDED["metrics"].items()}})
            for r in range(3)]


def test_gate(request):
    pg = request.config.perfgate
    runner = PhaseRunner(SimpleNamespace(gpu_class="cpu", profile="cpu-tiny"), pg, config=request.config,
                         fail=lambda message: pytest.fail(message, pytrace=False),
                         properties=request.node.user_properties)
    phases = _phases({{**RECORDED["fingerprint"], "vllm_version": "0.33.0"}})
    for p in phases:
        pg.add_phase(p)
    runner.phases["cpu-closed"] = phases
    runner.assert_no_regression(phases[-1])
'''


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PERFGATE_PYPROJECT", str(REPO / "pyproject.toml"))
    pytester.makeconftest(f"import sys; sys.path.insert(0, {str(REPO)!r})")
    pytester.makepyfile(test_suite=SUITE.format(recorded=str(REPO / "baselines/cpu/cpu-tiny/cpu-closed.json")))
    return pytester


def _gate_properties(junit: Path) -> list[str]:
    return [p.get("value") for p in ET.parse(junit).getroot().iter("property") if p.get("name") == "perfgate_gate"]


def test_a_missing_baseline_is_new_everywhere_and_passes(suite, tmp_path, monkeypatch):
    monkeypatch.setenv("PERFGATE_BASELINES_DIR", str(tmp_path / "empty"))
    results, junit = tmp_path / "results", tmp_path / "junit.xml"
    result = suite.runpytest(f"--perfgate-results-dir={results}", f"--junitxml={junit}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["baseline gate cpu/cpu-tiny/cpu-closed: NEW (smoke gate): no baseline*",
                                 "NEW (no baseline, nothing compared): cpu/cpu-tiny/cpu-closed. Record one with "
                                 "--perfgate-update-baselines; --perfgate-require-baselines makes this fail"])
    assert _gate_properties(junit) == ["cpu/cpu-tiny/cpu-closed: NEW"]
    md = (results / "summary.md").read_text()
    assert "⚪ NEW (no baseline) |" in md and "**Baseline gate: NEW**" in md
    assert "**What changed since the baseline:** no baseline to compare with (NEW)" in md


def test_require_baselines_fails_a_new_phase_with_the_command_to_record_one(suite, tmp_path, monkeypatch):
    monkeypatch.setenv("PERFGATE_BASELINES_DIR", str(tmp_path / "empty"))
    results, junit = tmp_path / "results", tmp_path / "junit.xml"
    result = suite.runpytest(f"--perfgate-results-dir={results}", f"--junitxml={junit}",
                             "--perfgate-require-baselines")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*baseline gate cpu/cpu-tiny/cpu-closed: NEW (smoke gate): a baseline is required "
                                 "(--perfgate-require-baselines): record one with `pytest perf_tests "
                                 "--perfgate-update-baselines -k TEST` or `perfgate baselines refresh*"])
    assert _gate_properties(junit) == ["cpu/cpu-tiny/cpu-closed: NEW"]
    assert "❌ NEW (no baseline) |" in (results / "summary.md").read_text()


def test_a_vllm_upgrade_is_named_in_the_headline_and_the_junit_property(suite, tmp_path):
    """The committed cpu-closed baseline (vLLM 0.32.0) against its own figures on "0.33.0"."""
    results, junit = tmp_path / "results", tmp_path / "junit.xml"
    result = suite.runpytest(f"--perfgate-results-dir={results}", f"--junitxml={junit}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*baseline gate cpu/cpu-tiny/cpu-closed: PASS (smoke gate) — "
                                 "vLLM 0.32.0 → 0.33.0: *"])
    [prop] = _gate_properties(junit)
    assert prop.startswith("cpu/cpu-tiny/cpu-closed: PASS — vLLM 0.32.0 → 0.33.0: ")
    md = (results / "summary.md").read_text()
    assert md.splitlines()[2] == "**What changed since the baseline:** vLLM 0.32.0 → 0.33.0 — `cpu/cpu-tiny/cpu-closed`"
