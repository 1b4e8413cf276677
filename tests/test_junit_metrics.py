"""JUnit carries each phase's key metrics: ``perfgate_metric:KEY:METRIC`` properties (the catalog's key metrics,
``MetricSpec.key_metric``; the mean over the phase's repeats, as summary.md's table shows) and
``perfgate_repeats:KEY``, next to the gate's ``perfgate_gate``.

Real from end to end: a pytester run (a subprocess pytest, the plugin from its entry point) attaches to this
session's cpu-tiny vLLM server (the one perf_tests/ shares: no new server), measures a small closed-loop
scenario in two calls of one repeat each (so the properties must be replaced, not appended, as repeats are
added), and writes a real JUnit file. The expected figures are read back from the phase files it saved.

Phases are not recorded in pytest-benchmark (docs/guide.md says why): its fixture times a callable in-process,
and a phase is a window measured on a server by an async engine.
"""

from __future__ import annotations

import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import QUICK_SCENARIO
from perfgate.core.catalog import KEY_METRICS, METRICS
from perfgate.core.fmt import format_value
from perfgate.core.results import read_declared_phases

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parent.parent
KEY = "cpu/cpu-tiny/junit-quick"

MEASURED = '''
import pytest

@pytest.mark.cpu
async def test_measured(perfgate):
    await perfgate.measure("junit-quick", repeats=1)
    phase = await perfgate.measure("junit-quick", repeats=1)  # a second repeat of the same phase key
    assert len(perfgate.repeats_of(phase)) == 2
'''


def _properties(junit: Path, test: str) -> list[tuple[str, str]]:
    case = next(tc for tc in ET.parse(junit).getroot().iter("testcase") if tc.get("name") == test)
    return [(p.get("name"), p.get("value")) for p in case.iter("property")]


@pytest.mark.cpu
@pytest.mark.slow
def test_junit_carries_each_phases_key_metrics(vllm_server, pytester: pytest.Pytester,
                                               monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    scenarios = tmp_path / "scenarios"
    shutil.copytree(REPO / "scenarios", scenarios)
    (scenarios / "junit-quick.toml").write_text(QUICK_SCENARIO)
    monkeypatch.setenv("PERFGATE_SCENARIOS_DIR", str(scenarios))
    monkeypatch.setenv("PERFGATE_PROFILES_DIR", str(REPO / "profiles"))
    monkeypatch.setenv("PERFGATE_BASELINES_DIR", str(tmp_path / "no-baselines"))  # NEW: no repeats added
    for name in ("PERFGATE_RUN_ID", "PERFGATE_RESULTS_DIR", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeini("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = session\n"
                     "asyncio_default_test_loop_scope = session\n")
    pytester.makepyfile(test_measured=MEASURED)
    results, junit = tmp_path / "results", tmp_path / "junit.xml"
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--vllm-url", vllm_server.base_url,
                                           "--profile", "cpu-tiny", f"--perfgate-results-dir={results}",
                                           f"--junitxml={junit}", timeout=300)
    result.assert_outcomes(passed=1)

    phases = [p for p in read_declared_phases(results) if p.key == KEY]
    assert len(phases) == 2
    listed = _properties(junit, "test_measured[cpu-tiny]")
    props = dict(listed)
    assert len(props) == len(listed), listed  # replaced as the second repeat came, never listed twice
    expected = {}
    for metric in KEY_METRICS:
        values = [p.metrics[metric] for p in phases if isinstance(p.metrics.get(metric), (int, float))]
        if values:
            expected[f"perfgate_metric:{KEY}:{metric}"] = f"{sum(values) / len(values):.6g}"
    assert {"perfgate_metric:cpu/cpu-tiny/junit-quick:output_throughput",
            "perfgate_metric:cpu/cpu-tiny/junit-quick:p99_e2el_ms"} <= set(expected)  # a real run measures these
    metric_props = {k: v for k, v in props.items() if k.startswith("perfgate_metric:")}
    assert metric_props == expected  # one per key metric, the mean over both repeats, nothing stale or extra
    assert props[f"perfgate_repeats:{KEY}"] == "2"
    assert props["perfgate_gate"].startswith(f"{KEY}: NEW")
    # summary.md keeps its table of the same key figures.
    md = (results / "summary.md").read_text()
    assert "| metric | this run (mean of 2) | baseline | change |" in md
    mean = sum(p.metrics["output_throughput"] for p in phases) / 2
    assert f"| output_throughput | {format_value(mean, METRICS['output_throughput'].unit)} |" in md
