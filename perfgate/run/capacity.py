"""Capacity at the SLO: sweep a scenario's offered rate on the test's server and gate the bracket it finds.

``measure_capacity(runner, "chat-capacity")`` is what ``PhaseRunner.capacity`` runs:

1. the scenario's ``[sweep]`` table gives the rates; the SLO set of (GPU class, profile, scenario) gives the
   latency and error bounds every point is judged on (``perfgate.verdict.capacity.judge_point``);
2. each point is a real measured phase (``measure_phase``: telemetry, saturation, the prefix-cache check),
   with prompts from its own part of the run's prompt stream, saved under
   ``capacity/<profile>__<scenario>/`` (phases, records, timelines) beside ``sweep.json``, which holds the
   bracket and every point's verdict. Points are not phases of the run: ``baselines refresh`` and ``slos
   derive`` never pool them (their rates differ, and a sweep's last points fail by design);
3. ``SweepControl`` climbs until a point fails or saturates, then bisects to the resolution;
4. the bracket is judged against the capacity baseline; while INCONCLUSIVE, up to ``extra_refine_steps``
   points are added where they decide it (``next_probe``).

With --perfgate-update-baselines the sweep runs once per server session (``baseline_sessions``, the server
restarted between) and ``assert_capacity`` writes their brackets as the capacity baseline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from perfgate._errors import PerfgateError
from perfgate.core.method import METHOD_VERSION
from perfgate.core.phase import PhaseResult, write_json_atomic
from perfgate.core.results import jsonable
from perfgate.load.scenario import Scenario
from perfgate.load.sweep import SweepControl, SweepPoint
from perfgate.report.tables import table
from perfgate.run.measure import measure_phase, phase_stem
from perfgate.run.source import EngineLoad
from perfgate.run.target import Target
from perfgate.verdict.capacity import (
    INCONCLUSIVE,
    INVALID,
    REGRESSED,
    CapacityVerdict,
    capacity_floor,
    judge_capacity,
    judge_point,
    next_probe,
    point_bounds,
)
from perfgate.verdict.capacity_baseline import (
    PointRecord,
    SweepRecord,
    capacity_baseline_from,
    capacity_baseline_path,
    find_capacity_baseline,
    write_capacity_baseline,
)
from perfgate.verdict.slo import SloSet
from perfgate.verdict.slo_files import load_slos

# ``runner`` below is the test's ``perfgate.run.runner.PhaseRunner`` (it calls in here; typed by name only, so
# that the two modules do not import each other).
PhaseRunner = Any

# Figures a point keeps in sweep.json and the baseline: what the plot and the table show.
POINT_METRICS = ("offered_rate", "achieved_rate", "request_throughput", "output_throughput", "completed",
                 "error_rate", "median_ttft_ms", "p99_ttft_ms", "median_tpot_ms", "p99_tpot_ms", "median_e2el_ms",
                 "p99_e2el_ms", "waiting_queue_peak", "preemptions")


class CapacitySweep:
    """The points of one scenario's sweeps on one server, measured as phases under ``capacity/``."""

    def __init__(self, runner: PhaseRunner, scenario: Scenario, bounds: SloSet) -> None:
        self.runner = runner
        self.scenario = scenario
        self.bounds = bounds
        target = runner.target
        self.dir = runner.results_dir / "capacity" / f"{target.profile}__{scenario.name}"
        self.points_this_sweep = 0

    def next_index(self) -> int:
        """Points of this scenario already measured in this run (earlier tests, sessions or sweeps): the
        index keeps their files and their prompts apart."""
        phases = self.dir / "phases"
        return len(list(phases.glob("*.json"))) if phases.is_dir() else 0

    async def point(self, rate: float, stage: str) -> SweepPoint:
        runner, target = self.runner, self.runner.target
        index = self.next_index()
        point_scenario = self.scenario.at_rate(rate)
        label = f"{target.profile}/{self.scenario.name} sweep point {index} ({stage}, {rate:.4g} req/s)"
        runner.session.progress(f"{label}: started, {point_scenario.workload()}")
        runner._require_alive("before")
        phase = await measure_phase(target, point_scenario, results_dir=self.dir, repeat=index,
                                    nonce=runner.session.prompt_nonce,
                                    source=EngineLoad(sweep_index=index, warmup=self.points_this_sweep == 0),
                                    throttle_limit_pct=runner.gate_settings.throttle_limit_pct)
        self.points_this_sweep += 1
        point = judge_point(phase, rate, self.bounds, self.scenario.self_check)
        runner.session.progress(f"{label}: {point.verdict.upper()}, "
                                f"{phase.metrics.get('request_throughput', float('nan')):.2f} req/s completed"
                                + (f" ({'; '.join(point.failures[:2])})" if point.failures else ""), result=True)
        runner._require_alive("during", phase)
        return point

    def record(self, control: SweepControl, session: str) -> SweepRecord:
        res = control.result
        points = [PointRecord(rate=p.rate, verdict=p.verdict.replace(" ", "_"), stage=p.stage, reasons=p.failures,
                              metrics={k: float(v) for k in POINT_METRICS
                                       if isinstance(v := _metrics(p).get(k), (int, float))},
                              saturated=getattr(p.result, "saturated", None), phase_file=self._phase_file(p))
                  for p in res.points]
        return SweepRecord(session=session, lower=res.lower, upper=res.upper, invalid_at=res.invalid_at,
                           resolution=control.settings.resolution, points=points, notes=list(res.notes))

    def _phase_file(self, point: SweepPoint) -> str:
        phase = point.result
        if not isinstance(phase, PhaseResult):
            return ""
        path = self.dir / "phases" / f"{phase_stem(phase.profile, phase.scenario, phase.repeat)}.json"
        return str(path.relative_to(self.runner.results_dir))


def _metrics(point: SweepPoint) -> dict:
    return getattr(point.result, "metrics", {}) or {}


async def measure_capacity(runner: PhaseRunner, name: str) -> CapacityVerdict:
    """Sweep ``name`` on the runner's server and judge its bracket (module docstring). The verdict goes into
    the run's report; ``PhaseRunner.assert_capacity`` fails the test on it or records the baseline."""
    scenario = runner._scenario(name)
    target = runner.target
    key = f"{target.gpu_class}/{target.profile}/{scenario.name}"
    if scenario.sweep is None:
        runner.fail(f"scenario {scenario.name} has no [sweep] table, so perfgate cannot sweep its rate\n  fix: add "
                    "[sweep] (start_rate, max_rate, point_duration_s; see docs/guide.md \"Capacity at the SLO\")")
    slos = _slos(runner, target, scenario.name)
    bounds = point_bounds(slos)
    if not bounds.bounds:
        runner.fail(f"the SLO set for {key} has no latency or error bound, so no sweep point can fail its SLOs\n  "
                    f"fix: add e.g. p99_ttft_ms.max and p99_e2el_ms.max under [slo.\"*/{scenario.name}\"] in "
                    f"slos/{target.gpu_class}.toml")
    settings = runner.gate_settings
    sweep = CapacitySweep(runner, scenario, bounds)
    fingerprint = {**target.fingerprint, "scenario_digest": scenario.content_digest()}
    update = runner.session.update_baselines
    records: list[SweepRecord] = []
    control: SweepControl | None = None
    for s in range(settings.baseline_sessions if update else 1):
        if s:
            await runner._restart_server(s + 1)
        sweep.points_this_sweep = 0
        control = SweepControl(sweep.point, scenario.sweep)  # type: ignore[arg-type]
        await control.run()
        records.append(sweep.record(control, target.server_session))
    try:
        baseline = find_capacity_baseline(target.gpu_class, target.profile, scenario.name)
    except PerfgateError as exc:
        runner.fail(str(exc))
    slo_max = {m: b.max for m, b in bounds.bounds.items() if b.max is not None}

    def judge() -> CapacityVerdict:
        return judge_capacity(key, records, baseline, min_effect=settings.effect("max_sustained_rate"),
                              fingerprint=fingerprint, method_version=METHOD_VERSION, smoke=settings.smoke,
                              require_baseline=settings.require_baseline,
                              allow_incomparable=settings.allow_incomparable, workload=scenario.workload(),
                              slo_max=slo_max, slo_provisional=slos.provisional, floor=capacity_floor(slos))

    def record() -> None:
        records[-1] = sweep.record(control, target.server_session)  # type: ignore[arg-type]

    if update or control is None:
        verdict = judge()
    else:
        verdict = await decide(control, judge, record, scenario.sweep.extra_refine_steps)  # type: ignore[union-attr]
    runner.session.verdicts.setdefault(key, {})["capacity"] = verdict
    write_json_atomic(sweep.dir / "sweep.json", jsonable(verdict))
    return verdict


async def decide(control: SweepControl, judge: Callable[[], CapacityVerdict], record: Callable[[], None],
                 steps: int) -> CapacityVerdict:
    """Judge; while INCONCLUSIVE, measure up to ``steps`` more points where one can decide the verdict
    (``next_probe``: the PASS threshold, then the REGRESSED one), re-recording the sweep after each. Stops
    early when no point of today can decide; the verdict says how many were added."""
    verdict = judge()
    probes = 0
    while verdict.status == INCONCLUSIVE and probes < steps and (rate := next_probe(verdict)) is not None:
        if await control.probe(rate) is None:  # outside today's bracket: it cannot move an end
            break
        probes += 1
        record()
        verdict = judge()
    verdict.probes = probes
    if verdict.status == INCONCLUSIVE:
        if probes:
            verdict.notes.append(f"{probes} point(s) added where they could decide the verdict (at most {steps}); "
                                 "still undecided")
        else:
            verdict.notes.append("no point added: [sweep] extra_refine_steps = 0" if not steps
                                 else "no point added: no rate inside today's bracket can decide the verdict")
    return verdict


def _slos(runner: PhaseRunner, target: Target, scenario: str) -> SloSet:
    try:
        slos = load_slos(target.gpu_class, target.profile, scenario)
    except PerfgateError as exc:
        runner.fail(str(exc))
    if slos is None:
        runner.fail(f"no SLO set for {target.gpu_class}/{target.profile}/{scenario}: capacity at the SLO needs its "
                    f"latency bounds\n  fix: add [slo.\"*/{scenario}\"] to slos/{target.gpu_class}.toml")
    return slos  # type: ignore[return-value]


def assert_capacity(runner: PhaseRunner, verdict: CapacityVerdict) -> CapacityVerdict | None:
    """Fail unless the capacity gate passes and the SLO's capacity floor (if any) holds; with
    --perfgate-update-baselines write the sweeps as the capacity baseline instead (never a regression unless
    --perfgate-accept-regression says why, never an INVALID sweep)."""
    where = f"\nraw results: {runner.results_dir / 'capacity'}"
    if not verdict.floor_met:
        runner.fail(f"capacity {verdict.key} is below the SLO's floor: {verdict.current.text()}, the SLO asks "
                    f">= {verdict.floor:g} req/s\n{table(verdict)}{where}")
    if not runner.session.update_baselines:
        if not verdict.passed:
            runner.fail(f"{table(verdict)}{where}")
        return verdict
    gpu_class, profile, scenario = verdict.key.split("/")
    accepted = ""
    if verdict.status == INVALID:
        runner.fail(f"capacity baseline not written: the sweep is INVALID\n{table(verdict)}{where}")
    if verdict.status in (REGRESSED, INCONCLUSIVE) and verdict.baseline is not None:
        if not runner.session.accept_regression:
            runner.fail(f"capacity baseline not written: this run is {verdict.status.upper()} against the baseline "
                        f"it would replace, and a refresh never enshrines a regression unasked\n{table(verdict)}\n"
                        "fix: find the cause; or, to accept it, run again with --perfgate-accept-regression 'WHY'"
                        + where)
        accepted = runner.session.accept_regression
    path = capacity_baseline_path(gpu_class, profile, scenario)
    try:
        new = capacity_baseline_from((gpu_class, profile, scenario), verdict.sweeps, verdict.fingerprint,
                                     min_sessions=runner.gate_settings.baseline_sessions,
                                     accepted_regression=accepted)
        diff = write_capacity_baseline(path, new)
    except PerfgateError as exc:
        runner.fail(f"capacity baseline not written: {exc}\n{table(verdict)}{where}")
    runner.session.verdicts.setdefault(verdict.key, {})["baseline_diff"] = diff
    print(f"\ncapacity baseline {path} written:\n{diff}")
    return None
