"""A/B of two launch profiles on the CPU path, and the gate catching an injected slowdown.

A is `cpu-tiny` as committed. B is the same profile name with `max-num-seqs` halved (8 -> 4), launched from
a scratch profiles directory: what a regressing pull request to profiles/cpu-tiny.toml looks like. Both
servers stay up and the repeats are interleaved (A B A B A B), so drift of the machine hits both sides.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from perfgate.ab import ab_compare
from perfgate.baseline import find_baseline
from perfgate.gate import compare
from perfgate.launch import launch_target
from perfgate.measure import measure_phase
from perfgate.scenario import load_scenario

pytestmark = [pytest.mark.cpu, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
REPEATS = 3
SCENARIO = "cpu-closed"


@pytest.fixture(scope="module")
def ab_phases(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from perfgate.builds import unavailable_reason

    if reason := unavailable_reason("cpu"):
        pytest.skip(reason)
    pg = request.config.perfgate
    slow_dir = tmp_path_factory.mktemp("profiles-slow")
    for f in (REPO / "profiles").glob("*.toml"):
        shutil.copy(f, slow_dir)
    text = (slow_dir / "cpu-tiny.toml").read_text()
    seqs = int(re.search(r"^max-num-seqs = (\d+)$", text, re.M).group(1))
    (slow_dir / "cpu-tiny.toml").write_text(text.replace(f"max-num-seqs = {seqs}", f"max-num-seqs = {seqs // 2}"))

    finalizers: list = []
    try:
        a = launch_target(pg, "cpu-tiny", finalizers.append)
        mp = pytest.MonkeyPatch()
        mp.setenv("PERFGATE_PROFILES_DIR", str(slow_dir))
        try:
            b = launch_target(pg, "cpu-tiny", finalizers.append)
        finally:
            mp.undo()
        b.server.log_path  # noqa: B018  (both logs are kept under results/servers/)
        scenario = load_scenario(SCENARIO)
        out_a, out_b = pg.results_dir / "ab" / "A", pg.results_dir / "ab" / "B"
        phases_a, phases_b = [], []
        import asyncio

        async def interleave():
            for r in range(REPEATS):
                phases_a.append(await measure_phase(a, scenario, results_dir=out_a, repeat=r))
                phases_b.append(await measure_phase(b, scenario, results_dir=out_b, repeat=r))

        asyncio.run(interleave())
        yield phases_a, phases_b, seqs
    finally:
        for stop in reversed(finalizers):
            stop()


def test_ab_reports_halved_max_num_seqs_as_worse(ab_phases, request):
    a, b, seqs = ab_phases
    verdict = ab_compare(a, b)
    print(f"\nA/B: A = cpu-tiny (max-num-seqs {seqs}), B = cpu-tiny with max-num-seqs {seqs // 2}\n{verdict.table()}")
    request.config.perfgate.verdicts.setdefault(f"ab/{SCENARIO}", {})["ab"] = verdict
    assert "request_throughput" in verdict.worse
    assert "output_throughput" in verdict.worse


def test_gate_passes_the_committed_profile(ab_phases):
    a, _, _ = ab_phases
    baseline = find_baseline("cpu", "cpu-tiny", SCENARIO)
    assert baseline is not None, "baselines/cpu/cpu-tiny/cpu-closed.json is part of the repo"
    verdict = compare(a, baseline)
    print(f"\ngate, committed profile:\n{verdict.table()}")
    assert verdict.passed, verdict.table()


def test_gate_fails_the_injected_slowdown_naming_the_metrics(ab_phases):
    _, b, _ = ab_phases
    verdict = compare(b, find_baseline("cpu", "cpu-tiny", SCENARIO))
    print(f"\ngate, max-num-seqs halved:\n{verdict.table()}")
    assert not verdict.passed
    regressed = {row.metric for row in verdict.regressions}
    assert "request_throughput" in regressed, verdict.table()
    assert "request_throughput" in verdict.table()
