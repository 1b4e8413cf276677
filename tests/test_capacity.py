"""Capacity at the SLO without vLLM: the [sweep] table, the sweep's control (climb, early stop on saturation,
bisection to the resolution, the client's limit, probes), the point verdict, the capacity gate's rule (all its
outcomes), the refinement that decides an INCONCLUSIVE verdict, the capacity baseline and the report.

The measured end-to-end test runs real vLLM on the CPU: perf_tests/test_cpu_serving.py::test_capacity_at_slo.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from perfgate._errors import BaselineError, ConfigError
from perfgate.core.method import METHOD_VERSION
from perfgate.core.phase import PhaseResult
from perfgate.load.scenario import SelfCheck, Sweep, load_scenario
from perfgate.load.sweep import CLIMB, PROBE, REFINE, SweepControl, SweepPoint
from perfgate.report import write_report
from perfgate.report.tables import table
from perfgate.run.capacity import decide
from perfgate.verdict.capacity import (
    INCOMPARABLE,
    INCONCLUSIVE,
    INVALID,
    NEW,
    PASS,
    REGRESSED,
    capacity_floor,
    judge_capacity,
    judge_point,
    next_probe,
    point_bounds,
)
from perfgate.verdict.capacity_baseline import (
    CapacityBaseline,
    PointRecord,
    SweepRecord,
    capacity_baseline_from,
    capacity_baseline_path,
    load_capacity_baseline,
    write_capacity_baseline,
)
from perfgate.verdict.slo_files import load_slos

REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"
FP = {"gpu_model": "NVIDIA H200", "model_architecture": "Qwen3ForCausalLM", "scenario_digest": "sha256:x",
      "vllm_version": "0.25.1"}

SCENARIO = """description = "test"
endpoint = "/v1/completions"
[prompt_tokens]
kind = "fixed"
value = 16
[output_tokens]
kind = "fixed"
value = 8
[load]
kind = "{kind}"
{load}
[sweep]
{sweep}
"""


def write_scenario(tmp_path: Path, sweep: str, kind: str = "open", load: str = "rate = 1.0") -> Path:
    path = tmp_path / "cap.toml"
    path.write_text(SCENARIO.format(kind=kind, load=load, sweep=sweep))
    return path


# --- the [sweep] table ------------------------------------------------------------------------------------

def test_sweep_table_sets_the_points_and_the_default_window(tmp_path: Path) -> None:
    sc = load_scenario(str(write_scenario(tmp_path, "start_rate = 4\nmax_rate = 100\npoint_duration_s = 15")))
    assert sc.sweep is not None and sc.sweep.climb_rates() == [4, 8, 16, 32, 64, 100]  # capped, then stops
    assert sc.duration_s == 15  # a plain measurement runs one point's window
    point = sc.at_rate(12.5)
    assert point.load.rate == 12.5 and point.duration_s == 15 and point.sweep is None
    assert "swept from 4 req/s" in sc.workload() and "15 s per point" in sc.workload()
    by_count = load_scenario(str(write_scenario(tmp_path, "start_rate = 1\nmax_rate = 2\npoint_requests = 40")))
    assert by_count.at_rate(2).num_requests == 40 and by_count.at_rate(2).duration_s is None
    # The sweep is part of what the scenario sends: a baseline of other sweep settings is another workload.
    assert sc.content_digest() != sc.model_copy(update={"sweep": None}).content_digest()


@pytest.mark.parametrize("sweep, kind, load, message", [
    ("start_rate = 4\nmax_rate = 100\npoint_duration_s = 15\nstep = 2", "open", "rate = 1.0",
     "unknown field; allowed here: extra_refine_steps, growth"),
    ("start_rate = 4\nmax_rate = 100", "open", "rate = 1.0", "exactly one of point_duration_s and point_requests"),
    ("start_rate = 4\nmax_rate = 100\npoint_duration_s = 5\npoint_requests = 9", "open", "rate = 1.0",
     "exactly one of point_duration_s"),
    ("start_rate = 4\nmax_rate = 2\npoint_duration_s = 5", "open", "rate = 1.0", "max_rate (2) must be >= start_rate"),
    ("start_rate = 4\nmax_rate = 8\ngrowth = 1.0\npoint_duration_s = 5", "open", "rate = 1.0", "greater than 1"),
    ("start_rate = 4\nmax_rate = 8\npoint_duration_s = 5", "closed", "concurrency = 4", "must be open loop"),
])
def test_sweep_table_errors_name_the_field_and_the_fix(tmp_path: Path, sweep: str, kind: str, load: str,
                                                       message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_scenario(str(write_scenario(tmp_path, sweep, kind, load)))
    assert message in str(err.value) and "cap.toml" in str(err.value)


def test_shipped_capacity_scenarios_are_open_loop_sweeps() -> None:
    for name in ("chat-capacity", "cpu-capacity"):
        sc = load_scenario(name)
        assert sc.sweep is not None and sc.sweep.point_duration_s
        assert len(sc.sweep.climb_rates()) <= 6


# --- the sweep's control, with a fake server ---------------------------------------------------------------

def fake_server(capacity: float, *, saturates_at: float | None = None, client_limit: float | None = None,
                measured: list[tuple[float, str]] | None = None):
    """A measure function: rates below ``capacity`` pass; at or above ``saturates_at`` the queue grows (latency
    still within bounds); at or above ``client_limit`` the client cannot keep the rate."""
    async def measure(rate: float, stage: str) -> SweepPoint:
        if measured is not None:
            measured.append((rate, stage))
        if client_limit is not None and rate >= client_limit:
            return SweepPoint(rate, False, ["client fell behind its schedule"], client_limited=True, unjudged=True)
        if saturates_at is not None and rate >= saturates_at:
            return SweepPoint(rate, False, ["saturated: the waiting queue grew"], saturated=True)
        return SweepPoint(rate, rate < capacity, [] if rate < capacity else ["p99_e2el_ms breaks <= 1,000 ms"])
    return measure


def settings(**kw) -> Sweep:
    return Sweep(**{"start_rate": 4, "growth": 2, "max_rate": 128, "refine_steps": 3, "resolution": 0.05,
                    "point_duration_s": 10, **kw})


async def test_climb_then_bisect_brackets_the_capacity() -> None:
    measured: list[tuple[float, str]] = []
    res = await SweepControl(fake_server(10.0, measured=measured), settings()).run()
    assert measured == [(4, CLIMB), (8, CLIMB), (16, CLIMB), (12, REFINE), (10, REFINE), (9, REFINE)]
    assert (res.lower, res.upper) == (9, 10) and res.max_sustained_rate == 9
    assert "climbing stopped at 16 req/s: its SLOs failed" in res.notes[0]


async def test_a_saturated_point_stops_the_climb_and_counts_as_failing() -> None:
    measured: list[tuple[float, str]] = []
    res = await SweepControl(fake_server(1000.0, saturates_at=8.0, measured=measured),
                             settings(refine_steps=0)).run()
    assert measured == [(4, CLIMB), (8, CLIMB)]  # 16 is never offered
    assert (res.lower, res.upper) == (4, 8) and res.points[-1].verdict == "saturated"
    assert "the server saturated" in res.notes[0]


async def test_bisection_stops_once_the_bracket_is_within_the_resolution() -> None:
    measured: list[tuple[float, str]] = []
    res = await SweepControl(fake_server(10.0, measured=measured), settings(resolution=0.3, refine_steps=10)).run()
    assert [r for r, s in measured if s == REFINE] == [12, 10]  # [8, 10) is 20 % wide: under 30 %, it stops
    assert (res.lower, res.upper) == (8, 10) and any("within the resolution" in n for n in res.notes)


async def test_a_rate_the_client_cannot_keep_is_neither_end() -> None:
    res = await SweepControl(fake_server(10.0, client_limit=12.0), settings()).run()
    rates = [(p.rate, p.verdict) for p in res.points]
    assert rates[:4] == [(4, "pass"), (8, "pass"), (16, "client limit"), (12, "client limit")]
    assert res.upper == 10 and res.invalid_at == 12 and not res.cut_short  # the server failed below it
    only_client = await SweepControl(fake_server(1000.0, client_limit=12.0), settings(refine_steps=1)).run()
    assert only_client.upper is None and only_client.cut_short and only_client.lower == 8


async def test_nothing_passes_or_nothing_fails() -> None:
    none = await SweepControl(fake_server(1.0), settings(refine_steps=2)).run()
    assert [p.rate for p in none.points] == [4, 2, 1] and none.lower is None and none.upper == 1
    fast = await SweepControl(fake_server(1e9), settings(max_rate=20)).run()
    assert [p.rate for p in fast.points] == [4, 8, 16, 20] and fast.upper is None
    assert "raise [sweep] max_rate" in fast.notes[-1]


async def test_a_probe_is_measured_only_inside_the_bracket() -> None:
    control = SweepControl(fake_server(10.0), settings(refine_steps=0))
    await control.run()  # [8, 16)
    assert await control.probe(20) is None and await control.probe(8) is None
    point = await control.probe(9.5)
    assert point is not None and point.stage == PROBE and control.result.lower == 9.5


# --- a point's verdict from its phase ----------------------------------------------------------------------

def point_phase(**metrics: float) -> PhaseResult:
    base = {"p99_ttft_ms": 100.0, "p99_e2el_ms": 1000.0, "error_rate": 0.0, "token_count_mismatches": 0,
            "achieved_rate_ratio": 1.0, "p99_send_lag_ms": 5.0, "completed": 40}
    return PhaseResult("cpu-tiny", "cpu-capacity", "cpu", metrics={**base, **metrics})


def test_a_point_passes_only_within_its_latency_and_error_bounds() -> None:
    slos = load_slos("cpu", "cpu-tiny", "cpu-capacity", REPO / "slos")
    bounds = point_bounds(slos)
    assert set(bounds.bounds) == {"p99_ttft_ms", "p99_e2el_ms", "error_rate", "token_count_mismatches"}
    assert capacity_floor(slos) == 1.5
    check = SelfCheck(max_p99_send_lag_ms=250)
    assert judge_point(point_phase(), 3.0, bounds, check).passed
    slow = judge_point(point_phase(p99_e2el_ms=3500.0), 3.0, bounds, check)
    assert not slow.passed and "p99_e2el_ms" in slow.failures[0] and not slow.client_limited
    saturated = point_phase()
    saturated.saturated, saturated.saturation_reasons = True, ["the waiting queue grew"]
    sat = judge_point(saturated, 6.0, bounds, check)
    assert not sat.passed and sat.saturated and "the waiting queue grew" in sat.failures[0]
    lagging = point_phase(p99_send_lag_ms=400.0)
    lagging.valid, lagging.invalid_reasons = False, ["client fell behind its schedule"]
    lag = judge_point(lagging, 6.0, bounds, check)
    assert not lag.passed and lag.client_limited and lag.unjudged and lag.verdict == "client limit"
    # A window invalid for the room's sake (throttled clocks) is neither end, whatever its latencies.
    throttled = point_phase(p99_e2el_ms=9000.0)
    throttled.valid, throttled.invalid_reasons = False, ["GPU 0 throttled by SW power cap in 14% of samples"]
    room = judge_point(throttled, 64.0, bounds, check)
    assert not room.passed and room.unjudged and not room.client_limited and room.verdict == "invalid"
    # One the server broke (nothing completed) is a failure, not an unknown.
    broken = point_phase(completed=0, error_rate=1.0)
    broken.valid, broken.invalid_reasons = False, ["no request completed (40 failed)"]
    dead = judge_point(broken, 3.0, bounds, check)
    assert not dead.passed and not dead.unjudged and dead.verdict == "fail"
    missing = point_phase()
    del missing.metrics["p99_ttft_ms"]
    assert not judge_point(missing, 3.0, bounds, check).passed  # not measured is not a pass


# --- the capacity gate's rule ------------------------------------------------------------------------------

def sweep(lower: float | None, upper: float | None, session: str = "s1", client: float | None = None) -> SweepRecord:
    points = [PointRecord(rate=r, verdict=v) for r, v in ((lower, "pass"), (upper, "fail")) if r is not None]
    return SweepRecord(session=session, lower=lower, upper=upper, invalid_at=client, points=points)


def baseline(*brackets: tuple[float, float], **fp) -> CapacityBaseline:
    return CapacityBaseline(gpu_class="h200", profile="optimized", scenario="chat-capacity",
                            fingerprint={**FP, **fp},
                            sweeps=[sweep(lo, hi, f"b{i}") for i, (lo, hi) in enumerate(brackets)])


def judge(current: list[SweepRecord], base: CapacityBaseline | None, m: float = 0.10, **kw):
    return judge_capacity("h200/optimized/chat-capacity", current, base, min_effect=m, fingerprint=FP,
                          method_version=METHOD_VERSION, **kw)


def test_gate_rule_pass_regressed_inconclusive_new() -> None:
    base = baseline((16, 18), (17, 19))  # envelope [16, 19): PASS at >= 19/1.1 = 17.27, REGRESSED at <= 14.55
    assert base.bracket.lower == 16 and base.bracket.upper == 19
    assert judge([sweep(18, 19)], base).status == PASS
    assert judge([sweep(17.5, 20)], base).status == PASS
    regressed = judge([sweep(12, 14)], base)
    assert regressed.status == REGRESSED and "fell by more than 10%" in regressed.reasons[0]
    assert judge([sweep(12, 14.5)], base).status == REGRESSED  # a failure at the threshold is a loss beyond m
    assert judge([sweep(14, 16)], base).status == INCONCLUSIVE  # straddles the REGRESSED threshold
    assert judge([sweep(16, 18)], base).status == INCONCLUSIVE  # lower end under 17.27
    new = judge([sweep(16, 18)], None)
    assert new.status == NEW and new.passed and not judge([sweep(16, 18)], None, require_baseline=True).passed


def test_gate_rule_edges_invalid_incomparable_open_brackets_smoke_floor() -> None:
    base = baseline((16, 18), (16, 18))
    assert judge([sweep(None, None, client=4)], base).status == INVALID
    other = baseline((16, 18), (16, 18), gpu_model="NVIDIA H100 80GB HBM3")
    incomparable = judge([sweep(16, 18)], other)
    assert incomparable.status == INCOMPARABLE and "GPU model differs" in incomparable.reasons[0]
    assert judge([sweep(17, 18)], other, allow_incomparable=True).status == PASS
    # No rate failed today: never REGRESSED; nothing failed in the baseline: never PASS.
    assert judge([sweep(40, None)], base).status == PASS
    open_base = CapacityBaseline(gpu_class="h200", profile="optimized", scenario="chat-capacity", fingerprint=FP,
                                 sweeps=[sweep(16, None)])
    undecided = judge([sweep(30, 32)], open_base)
    assert undecided.status == INCONCLUSIVE and "open above" in undecided.reasons[0]
    assert next_probe(undecided) is None
    # The CPU smoke class: m = 2.0 means 3x worse; INCONCLUSIVE lets the test pass and says it is a smoke gate.
    assert judge([sweep(4, 5)], base, m=2.0).status == REGRESSED
    smoke = judge([sweep(5, 8)], base, m=2.0, smoke=True)
    assert smoke.status == INCONCLUSIVE and smoke.passed and "(smoke gate)" in smoke.headline()
    assert not judge([sweep(17, 18)], base, floor=17.5).passed and judge([sweep(17, 18)], base, floor=17.0).passed


def test_next_probe_is_placed_where_one_point_decides() -> None:
    base = baseline((16, 18), (16, 18))  # PASS at >= 16.36, REGRESSED at <= 14.55
    straddle_pass = judge([sweep(15, 18)], base)
    assert next_probe(straddle_pass) == pytest.approx(18 / 1.1)
    straddle_regress = judge([sweep(14, 16)], base)
    assert next_probe(straddle_regress) == pytest.approx(16 / 1.1)
    between = judge([sweep(15, 16)], baseline((16, 18), (15.5, 18.5)))  # thresholds 14.09 and 16.82
    assert between.status == INCONCLUSIVE and next_probe(between) is None
    assert "narrower bracket" in between.reasons[0]


async def test_an_inconclusive_verdict_buys_probes_that_decide_it() -> None:
    base = baseline((16, 18), (16, 18))

    async def run(capacity: float, steps: int) -> tuple[str, list[tuple[float, str]]]:
        measured: list[tuple[float, str]] = []
        control = SweepControl(fake_server(capacity, measured=measured),
                               settings(start_rate=4, max_rate=32, refine_steps=1))
        await control.run()  # 4, 8, 16 (capacity 17: pass), 32 fail, 24: [16, 24) INCONCLUSIVE (PASS needs 16.36)
        records = [sweep(control.result.lower, control.result.upper)]

        def record() -> None:
            records[-1] = sweep(control.result.lower, control.result.upper)

        verdict = await decide(control, lambda: judge(records, base), record, steps)
        return verdict.status, measured

    status, measured = await run(17.0, steps=2)
    assert status == PASS and measured[-1] == (pytest.approx(18 / 1.1), PROBE)  # one probe decided it
    status, measured = await run(14.0, steps=2)  # [12, 16): fails at 16 / 1.1 = 14.55 -> REGRESSED
    assert status == REGRESSED and measured[-1] == (pytest.approx(16 / 1.1), PROBE)
    status, measured = await run(17.0, steps=0)  # bounded: no probe allowed, it stays INCONCLUSIVE
    assert status == INCONCLUSIVE and all(stage != PROBE for _, stage in measured)


# --- the capacity baseline ---------------------------------------------------------------------------------

def test_capacity_baseline_is_written_atomically_and_read_back(tmp_path: Path) -> None:
    path = capacity_baseline_path("h200", "optimized", "chat-capacity", tmp_path)
    assert path == tmp_path / "h200" / "optimized" / "capacity" / "chat-capacity.json"
    new = capacity_baseline_from(("h200", "optimized", "chat-capacity"), [sweep(16, 18, "a"), sweep(17, 19, "b")], FP)
    diff = write_capacity_baseline(path, new)
    assert "capacity baseline new" in diff and "[16, 19) req/s" in diff
    assert [p.name for p in path.parent.iterdir()] == ["chat-capacity.json"]  # no temporary file left
    back = load_capacity_baseline(path)
    assert back.bracket.lower == 16 and back.bracket.upper == 19 and back.environment["gpu_model"] == "NVIDIA H200"
    assert "refreshed" in write_capacity_baseline(path, new)


def test_capacity_baseline_refuses_what_cannot_be_a_baseline(tmp_path: Path) -> None:
    key = ("h200", "optimized", "chat-capacity")
    with pytest.raises(BaselineError, match="at least 2 server sessions"):
        capacity_baseline_from(key, [sweep(16, 18, "a"), sweep(16, 18, "a")], FP)
    with pytest.raises(BaselineError, match="has no upper end"):
        capacity_baseline_from(key, [sweep(16, None, "a"), sweep(16, 18, "b")], FP)
    with pytest.raises(BaselineError, match="found no rate whose SLOs held"):
        capacity_baseline_from(key, [sweep(None, 4, "a"), sweep(16, 18, "b")], FP)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BaselineError, match="corrupt capacity baseline") as err:
        load_capacity_baseline(bad)
    assert "perfgate-update-baselines" in str(err.value)


# --- the table and the report ------------------------------------------------------------------------------

def measured_sweep(results: Path) -> SweepRecord:
    points = []
    for rate, verdict, p99 in ((1.5, "pass", 900.0), (3.0, "pass", 1400.0), (6.0, "saturated", 5200.0),
                               (4.5, "fail", 3300.0), (3.75, "pass", 2100.0)):
        completed = min(rate, 4.0) * 0.95
        points.append(PointRecord(rate=rate, verdict=verdict, reasons=[] if verdict == "pass" else ["p99 too slow"],
                                  metrics={"request_throughput": completed, "p99_e2el_ms": p99,
                                           "median_e2el_ms": p99 / 2, "p99_ttft_ms": p99 / 5,
                                           "median_ttft_ms": p99 / 10},
                                  phase_file=f"capacity/cpu-tiny__cpu-capacity/phases/r{len(points)}.json"))
    return SweepRecord(session="s", lower=3.75, upper=4.5, points=points, notes=["climbing stopped at 6 req/s"])


def test_table_and_report_show_the_bracket_the_rule_and_every_point(tmp_path: Path) -> None:
    base = CapacityBaseline(gpu_class="cpu", profile="cpu-tiny", scenario="cpu-capacity", fingerprint=FP,
                            sweeps=[sweep(3.0, 4.5, "a"), sweep(3.75, 4.5, "b")])
    verdict = judge_capacity("cpu/cpu-tiny/cpu-capacity", [measured_sweep(tmp_path)], base, min_effect=0.10,
                             fingerprint=FP, method_version=METHOD_VERSION,
                             slo_max={"p99_ttft_ms": 1500.0, "p99_e2el_ms": 3000.0})
    assert verdict.status == INCONCLUSIVE  # 3.75 < 4.5 / 1.1 = 4.09 (PASS), 4.5 > 3 / 1.1 = 2.73 (REGRESSED)
    text = table(verdict)
    for part in ("capacity cpu/cpu-tiny/cpu-capacity", "[3.75, 4.5) req/s", "= 4.091", "= 2.727",
                 "SATURATED", "p99_e2el_ms <= 3,000 ms", "note: climbing stopped at 6 req/s"):
        assert part in text, part
    files = write_report(tmp_path, [], capacity_verdicts=[verdict])
    png = tmp_path / "plots" / "cpu__cpu-tiny__cpu-capacity__capacity.png"
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    md = files.summary_md.read_text()
    assert "## Capacity at the SLO `cpu/cpu-tiny/cpu-capacity`" in md and "(plots/" in md
    assert "| 6 req/s | climb | **saturated** |" in md and "How to read it" in md
    run = json.loads(files.run_json.read_text())
    assert run["capacity"][0]["status"] == verdict.status and run["passed"] == verdict.passed


def test_shipped_capacity_baselines_load_and_match_their_scenarios() -> None:
    paths = sorted((REPO / "baselines").glob("*/*/capacity/*.json"))
    assert paths, "the CPU capacity baseline is shipped"
    for path in paths:
        stored = load_capacity_baseline(path)
        assert stored.bracket.lower is not None and stored.bracket.upper is not None, path
        assert len({s.session for s in stored.sweeps}) >= 2, path  # one sweep per server session
        digest = load_scenario(stored.scenario, REPO / "scenarios").content_digest()
        assert stored.fingerprint["scenario_digest"] == digest, f"{path}: the scenario changed; re-record it"


# --- the runner's assertion: fail with the table, or record the baseline -----------------------------------

class FakeRunner:
    """What ``perfgate.run.capacity.assert_capacity`` uses of a PhaseRunner (no server needed to assert)."""

    def __init__(self, tmp_path: Path, *, update: bool = False, accept: str = "") -> None:
        from types import SimpleNamespace

        from perfgate.verdict.gate_settings import GateSettings

        self.results_dir = tmp_path / "results"
        self.session = SimpleNamespace(update_baselines=update, accept_regression=accept, verdicts={})
        self.gate_settings = GateSettings(gpu_class="h200")

    def fail(self, message: str) -> None:
        raise AssertionError(message)


def test_assert_capacity_fails_with_the_table_or_records_the_baseline(tmp_path: Path, monkeypatch) -> None:
    from perfgate.run.capacity import assert_capacity

    monkeypatch.setenv("PERFGATE_BASELINES_DIR", str(tmp_path / "baselines"))
    base = baseline((16, 18), (16, 18))
    regressed = judge([sweep(10, 12, "a"), sweep(10, 12, "b")], base)
    with pytest.raises(AssertionError) as err:
        assert_capacity(FakeRunner(tmp_path), regressed)
    assert "capacity h200/optimized/chat-capacity: REGRESSED" in str(err.value) and "rule:" in str(err.value)
    assert assert_capacity(FakeRunner(tmp_path), judge([sweep(17, 18)], base)) is not None  # PASS returns it
    with pytest.raises(AssertionError, match="below the SLO's floor"):
        assert_capacity(FakeRunner(tmp_path), judge([sweep(17, 18)], base, floor=20.0))
    # Update mode never enshrines a regression unasked; with a reason it writes it, atomically, and says so.
    with pytest.raises(AssertionError, match="never enshrines a regression"):
        assert_capacity(FakeRunner(tmp_path, update=True), regressed)
    path = tmp_path / "baselines" / "h200" / "optimized" / "capacity" / "chat-capacity.json"
    assert not path.exists()
    runner = FakeRunner(tmp_path, update=True, accept="a slower kernel, accepted")
    assert assert_capacity(runner, regressed) is None
    written = load_capacity_baseline(path)
    assert written.bracket.upper == 12 and written.accepted_regression == "a slower kernel, accepted"
    assert "capacity baseline new" in runner.session.verdicts["h200/optimized/chat-capacity"]["baseline_diff"]
    with pytest.raises(AssertionError, match="needs sweeps from at least 2 server sessions"):
        assert_capacity(FakeRunner(tmp_path, update=True), judge([sweep(17, 18)], None))
