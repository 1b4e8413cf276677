"""A/B of two launch profiles on the CPU path, and the gate catching an injected slowdown.

A is `cpu-tiny` as committed. B is the same profile name with `max-num-seqs` cut from 8 to 1, launched
from a scratch profiles directory: what a regressing pull request to profiles/cpu-tiny.toml looks like.
Both servers stay up and the repeats are interleaved (A B A B A B), so drift of the machine hits both
sides.

What the CPU path can resolve: on two cores the tiny model is bound by vLLM's front end, not by the batch
(the running batch averages 0.2-5 of 8), and identical runs land in two regimes (~30 or ~15 req/s), so a
halved max-num-seqs (8 -> 4) moved throughput by -0.3 % (95 % CI [-25 %, +33 %]) and even 8 -> 1 by -30 %
([-69 %, +58 %]). What max-num-seqs governs does move, in every regime: requests wait for a sequence slot,
and vLLM's own queue-time histogram (server_mean_queue_ms, exact counter deltas) goes from ~0.01 ms to
50-160 ms. The tests assert on that; with 5 repeats a side it survives the A/B's false-alarm control
across its ~60 metrics (with 3, p = 0.001 became 0.066 after Benjamini-Hochberg).

The gate tests judge with the repository's CPU gate settings (``[tool.perfgate.gate.class.cpu]`` in
pyproject.toml, read by ``load_gate_settings("cpu")``): a smoke gate that fails only on a clear regression
of its few gated metrics, server_mean_queue_ms among them.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from perfgate.load.scenario import load_scenario
from perfgate.report.tables import table
from perfgate.run.launch import launch_target
from perfgate.run.measure import measure_phase
from perfgate.verdict.ab import ab_compare
from perfgate.verdict.baseline import baseline_from_phases, find_baseline
from perfgate.verdict.gate import compare
from perfgate.verdict.gate_settings import GateSettings, load_gate_settings

pytestmark = [pytest.mark.cpu, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
REPEATS = 5
SCENARIO = "cpu-closed"
SLOW_SEQS = 1


def cpu_gate() -> GateSettings:
    """The gate settings a CPU run of this repository uses (pyproject.toml's, wherever pytest runs from)."""
    settings = load_gate_settings("cpu", root=REPO)
    assert settings.smoke and "server_mean_queue_ms" in settings.gated, settings
    return settings


@pytest.fixture(scope="module")
def ab_phases(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    from perfgate.serving.builds import unavailable_reason

    if reason := unavailable_reason("cpu"):
        pytest.skip(reason)
    pg = request.config.perfgate
    slow_dir = tmp_path_factory.mktemp("profiles-slow")
    for f in (REPO / "profiles").glob("*.toml"):
        shutil.copy(f, slow_dir)
    text = (slow_dir / "cpu-tiny.toml").read_text()
    seqs = int(re.search(r"^max-num-seqs = (\d+)$", text, re.MULTILINE).group(1))
    (slow_dir / "cpu-tiny.toml").write_text(text.replace(f"max-num-seqs = {seqs}", f"max-num-seqs = {SLOW_SEQS}"))

    finalizers: list = []
    try:
        a = launch_target(pg, "cpu-tiny", finalizers.append)
        mp = pytest.MonkeyPatch()
        mp.setenv("PERFGATE_PROFILES_DIR", str(slow_dir))
        try:
            b = launch_target(pg, "cpu-tiny", finalizers.append)
        finally:
            mp.undo()
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


def test_ab_reports_one_sequence_at_a_time_as_worse(ab_phases, request):
    a, b, seqs = ab_phases
    verdict = ab_compare(a, b)
    print(f"\nA/B: A = cpu-tiny (max-num-seqs {seqs}), B = cpu-tiny with max-num-seqs {SLOW_SEQS}\n{table(verdict)}")
    request.config.perfgate.verdicts.setdefault(f"ab/{SCENARIO}", {})["ab"] = verdict
    assert "server_mean_queue_ms" in verdict.worse, table(verdict)
    assert verdict.row("server_mean_queue_ms").b > 10 * verdict.row("server_mean_queue_ms").a


def test_gate_passes_the_committed_profile(ab_phases):
    a, _, _ = ab_phases
    baseline = find_baseline("cpu", "cpu-tiny", SCENARIO)
    assert baseline is not None, "baselines/cpu/cpu-tiny/cpu-closed.json is part of the repo"
    verdict = compare(a, baseline, cpu_gate())
    print(f"\ngate, committed profile:\n{table(verdict)}")
    assert verdict.passed, table(verdict)


def test_gate_fails_the_injected_slowdown_naming_the_metrics(ab_phases):
    """B against a baseline learned from A's interleaved repeats of this same run.

    On two shared cores identical CPU runs differ by 20-35 % across minutes (see the committed baseline's
    noise), so the stored baseline cannot resolve a slowdown of this size; A's repeats, measured between
    B's, carry the same drift and can. The gate logic is the same either way.

    A's repeats come from one server session by construction (one A server, started once for this module),
    so this in-run baseline is built with ``min_sessions=1``; a stored baseline needs two sessions. The
    gate then knows repeat-to-repeat noise only (its table notes that session noise is unknown); the queue
    time it must catch goes from ~0.03 ms to tens of ms, while the committed baseline's two sessions agree
    within 0.01 ms.
    """
    a, b, _ = ab_phases
    verdict = compare(b, baseline_from_phases(a, min_sessions=1), cpu_gate())
    print(f"\ngate, max-num-seqs {SLOW_SEQS}, against A's repeats:\n{table(verdict)}")
    assert verdict.status == "regressed" and not verdict.passed, table(verdict)
    regressed = {row.metric for row in verdict.regressions}
    assert "server_mean_queue_ms" in regressed, table(verdict)
    assert "server_mean_queue_ms" in table(verdict)
