"""What a perf test calls: measure a scenario (with repeats), then assert SLOs and the baseline gate.

Failures raise through ``fail`` (the ``perfgate`` fixture passes one that calls pytest.fail; the default
raises ``PerfCheckFailed``) with one table and the path of the raw results, so a person reads the verdict
in seconds. Nothing here imports pytest.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from perfgate._errors import PerfCheckFailed, PerfgateError
from perfgate.core.catalog import KEY_METRICS
from perfgate.core.phase import PhaseResult
from perfgate.load.scenario import Scenario, load_scenario
from perfgate.report.tables import table
from perfgate.run import capacity as capacity_run
from perfgate.run.measure import measure_phase
from perfgate.run.phase_lines import phase_result_line, phase_started_line
from perfgate.run.session import PerfgateSession
from perfgate.run.source import LocustLoad
from perfgate.run.target import Target
from perfgate.serving.server import VllmServer, tail
from perfgate.verdict.baseline import baseline_path, find_baseline, write_baseline
from perfgate.verdict.capacity import CapacityVerdict
from perfgate.verdict.gate import INCONCLUSIVE, NEW, REGRESSED, GateVerdict, compare
from perfgate.verdict.gate_settings import GateSettings, load_gate_settings
from perfgate.verdict.slo_files import load_slos


def raise_check_failed(message: str) -> None:
    raise PerfCheckFailed(message)


class PhaseRunner:
    def __init__(self, target: Target, session: PerfgateSession, *, hook: Any = None, config: Any = None,
                 test_id: str = "",
                 fail: Callable[[str], None] = raise_check_failed,
                 properties: list[tuple[str, object]] | None = None) -> None:
        self.target = target
        self.session = session
        self._hook = hook
        self._config = config
        self.test_id = test_id
        self._fail = fail
        # The test's JUnit properties (pytest's item.user_properties): the gate's verdict and the key metrics
        # per phase key.
        self._properties = properties
        self.phases: dict[str, list[PhaseResult]] = {}
        self._settings: GateSettings | None = None
        self._verdicts: dict[str, tuple[int, GateVerdict]] = {}

    @property
    def results_dir(self) -> Path:
        return self.session.results_dir

    def fail(self, message: str) -> None:
        self._fail(self.session.redact(message))

    # -- measuring -----------------------------------------------------------------------------------
    @property
    def gate_settings(self) -> GateSettings:
        """``[tool.perfgate.gate]`` for this target's GPU class (read once per runner)."""
        if self._settings is None:

            root = Path(self._config.rootpath) if self._config is not None else None
            try:
                self._settings = load_gate_settings(self.target.gpu_class, root=root,
                                                    allow_incomparable=self.session.allow_incomparable,
                                                    require_baseline=self.session.require_baselines)
            except PerfgateError as exc:
                self.fail(str(exc))
        return self._settings

    async def measure(self, scenario: str, *, repeats: int | None = None, allow_invalid: bool = False) -> PhaseResult:
        """Run ``scenario`` against this test's server; returns the last repeat (``repeats_of`` gives all).

        Repeats: --perfgate-repeats, else ``repeats``, else ``[tool.perfgate.gate] repeats``. When a baseline
        exists and the gate is INCONCLUSIVE after them, repeats are added (up to ``max_repeats``) until it
        decides. With --perfgate-update-baselines the repeats are measured in ``baseline_sessions`` server
        sessions, the server restarted between them. An invalid run fails the test unless ``allow_invalid``.
        """
        spec = self._scenario(scenario)
        settings = self.gate_settings
        count = self.session.repeats or repeats or settings.repeats
        done = self.phases.setdefault(spec.name, [])
        sessions = settings.baseline_sessions if self.session.update_baselines else 1
        for s in range(sessions):
            if s:
                await self._restart_server(s + 1)
            for _ in range(count):
                await self._measure_one(spec, done)
        if not self.session.update_baselines:
            limit = max(settings.max_repeats, count)
            while all(p.valid for p in done) and len(done) < limit and self._judge(spec.name).status == INCONCLUSIVE:
                await self._measure_one(spec, done)
            # In the report even when an SLO assertion fails the test before assert_no_regression runs.
            self._keep_gate_verdict(self._judge(spec.name))
        self._keep_key_metrics(done)
        last = done[-1]
        if not allow_invalid and not all(p.valid for p in done):
            reasons = sorted({r for p in done for r in p.invalid_reasons})
            self.fail(f"INVALID run of {last.key}: the numbers do not describe the server.\n  "
                      + "\n  ".join(reasons) + f"\nraw results: {self.results_dir}")
        return last

    def _scenario(self, name: str) -> Scenario:
        try:
            return load_scenario(name)
        except PerfgateError as exc:
            self.fail(str(exc))
            raise  # fail() raises; this keeps the type checker sure

    async def _measure_one(self, spec: Scenario, done: list[PhaseResult]) -> PhaseResult:
        self._require_alive("before")
        repeat = sum(1 for p in self.session.phases if p.profile == self.target.profile and p.scenario == spec.name)
        self.session.progress(phase_started_line(self.target.profile, spec.name, repeat, spec))
        phase = await measure_phase(self.target, spec, results_dir=self.results_dir, repeat=repeat,
                                    nonce=self.session.prompt_nonce,
                                    throttle_limit_pct=self.gate_settings.throttle_limit_pct)
        self.session.progress(phase_result_line(phase), result=True)
        done.append(phase)
        self.session.add_phase(phase)
        if self._hook is not None:
            self._hook.pytest_perfgate_phase_measured(config=self._config, phase=phase)
        self._require_alive("during", phase)
        return phase

    async def _restart_server(self, number: int) -> None:
        """A new server session for the baseline's noise model: the same profile, restarted."""
        server = self.target.server
        if not isinstance(server, VllmServer):
            self.fail("--perfgate-update-baselines records the baseline in "
                      f"{self.gate_settings.baseline_sessions} server sessions, and perfgate cannot restart a "
                      "server it did not start (--vllm-url). Run the suite once per server session (restart "
                      "the server between) and merge them: `perfgate baselines refresh --from RUN1 --from RUN2`")
        log_path = server.log_path.with_name(f"{self.target.profile}-session{number}.log")
        await asyncio.to_thread(server.restart, log_path)

    def _judge(self, name: str) -> GateVerdict:
        """The gate's verdict on ``name``'s repeats so far (cached per repeat count)."""

        done = self.phases[name]
        cached = self._verdicts.get(name)
        if cached is not None and cached[0] == len(done):
            return cached[1]
        last = done[-1]
        try:
            baseline = find_baseline(last.gpu_class, last.profile, last.scenario)
        except PerfgateError as exc:
            self.fail(str(exc))
        verdict = compare(done, baseline, self.gate_settings)
        self._verdicts[name] = (len(done), verdict)
        return verdict

    async def measure_locust(self, scenario: str, *, ramp: str, processes: int | None = None,
                             allow_invalid: bool = False) -> PhaseResult:
        """Drive ``scenario``'s requests with Locust users ramped by ``ramp`` ("USERS:SPAWN_RATE:SECONDS,...").

        Measured from Locust's raw per-request records (its own percentiles are bucketed).
        """
        spec = self._scenario(scenario)
        self._require_alive("before")
        name = LocustLoad(ramp=ramp).phase_name(spec)
        repeat = sum(1 for p in self.session.phases if p.profile == self.target.profile and p.scenario == name)
        said = f"{self.target.profile}/{name} repeat {repeat}"
        source = LocustLoad(ramp=ramp, processes=processes,
                            progress=lambda line, **kw: self.session.progress(f"{said}: {line}", **kw))
        self.session.progress(phase_started_line(self.target.profile, name, repeat, spec, ramp=ramp))
        try:
            phase = await measure_phase(self.target, spec, results_dir=self.results_dir, repeat=repeat,
                                        nonce=self.session.prompt_nonce, source=source,
                                        throttle_limit_pct=self.gate_settings.throttle_limit_pct)
        except PerfgateError as exc:
            self.fail(str(exc))
        self.session.progress(phase_result_line(phase), result=True)
        self.phases.setdefault(phase.scenario, []).append(phase)
        self.session.add_phase(phase)
        self._keep_key_metrics(self.phases[phase.scenario])
        self._require_alive("during", phase)
        if not allow_invalid and not phase.valid:
            self.fail(f"INVALID Locust run of {phase.key}:\n  " + "\n  ".join(phase.invalid_reasons))
        return phase

    def repeats_of(self, phase: PhaseResult) -> list[PhaseResult]:
        return self.phases.get(phase.scenario, [phase])

    def _server_problem(self) -> str | None:
        """Why the server cannot serve, or None. A live process is not enough: when its engine core dies,
        vLLM's API server answers HTTP 500 for a while before it exits (a run checked in that gap passed),
        and a hung server never answers; /health tells both."""
        server = self.target.server
        if not server.alive():
            return "is not running"
        try:
            code = httpx.get(server.base_url + "/health", timeout=10.0).status_code
        except httpx.HTTPError as exc:
            return f"does not answer /health ({type(exc).__name__})"
        return None if code == 200 else f"answers /health with HTTP {code}"

    def _require_alive(self, when: str, phase: PhaseResult | None = None) -> None:
        problem = self._server_problem()
        if problem is None:
            return

        log_path = getattr(self.target.server, "log_path", None)
        saved = f"partial results saved in {self.results_dir}" if phase else f"results so far in {self.results_dir}"
        self.fail(f"the vLLM server for profile {self.target.profile} {problem} ({when} the phase); {saved}\n"
                  f"--- last lines of {log_path} ---\n{tail(Path(log_path), 30) if log_path else '(attached server)'}")

    # -- capacity at the SLO (perfgate/run/capacity.py) -----------------------------------------------
    async def capacity(self, scenario: str) -> CapacityVerdict:
        """Sweep ``scenario``'s offered rate (its ``[sweep]`` table) on this test's server and judge the bracket
        [highest passing, lowest failing) against the capacity baseline (``perfgate.run.capacity``)."""
        return await capacity_run.measure_capacity(self, scenario)

    def assert_capacity(self, verdict: CapacityVerdict) -> CapacityVerdict | None:
        """Fail unless the capacity gate passes; with --perfgate-update-baselines record the capacity baseline."""
        return capacity_run.assert_capacity(self, verdict)

    # -- verdicts ------------------------------------------------------------------------------------
    def assert_slos(self, phase: PhaseResult):
        """Fail with one table (metric, bound, worst repeat, margin) unless every SLO holds in every repeat."""

        try:
            slos = load_slos(phase.gpu_class, phase.profile, phase.scenario)
        except PerfgateError as exc:
            self.fail(str(exc))
        if slos is None:
            self.fail(f"no SLO set for {phase.key}: add one to slos/{phase.gpu_class}.toml "
                      f"(an unchecked run is not a pass)")
        repeats = self.repeats_of(phase)
        verdict = slos.evaluate(repeats, self.results_dir)
        self.session.verdicts.setdefault(_vkey(phase), {})["slo"] = verdict
        if not verdict.passed:
            why = "".join(f"\nthe server was over capacity in repeat {i} of {len(repeats)}: "
                          + "; ".join(p.saturation_reasons) for i, p in enumerate(repeats, 1) if p.saturated)
            self.fail(f"SLO failed for {phase.key}\n{table(verdict)}{why}\nraw results: {self.results_dir}")
        return verdict

    def assert_no_regression(self, phase: PhaseResult) -> GateVerdict | None:
        """Judge this scenario's repeats against the stored baseline; fail unless the gate PASSes.

        REGRESSED and INCONCLUSIVE (still undecided after ``max_repeats``) fail; a missing baseline is NEW.
        With --perfgate-update-baselines the repeats become the new baseline instead (refused when invalid).
        """

        phases = self.repeats_of(phase)
        if self.session.update_baselines:
            path = baseline_path(phase.gpu_class, phase.profile, phase.scenario)
            accepted = self._accepted_regression(phases)
            try:
                diff = write_baseline(path, phases, results_dir=self.results_dir,
                                      min_sessions=self.gate_settings.baseline_sessions,
                                      accepted_regression=accepted)
            except PerfgateError as exc:
                self.fail(f"baseline not written: {exc}")
            self.session.verdicts.setdefault(_vkey(phase), {})["baseline_diff"] = diff
            print(f"\nbaseline {path} written:\n{diff}")
            return None
        verdict = self._judge(phase.scenario)
        self._keep_gate_verdict(verdict)
        if verdict.status == NEW and verdict.passed:
            print(f"\n{phase.key}: no baseline yet (reported as NEW; record one with --perfgate-update-baselines, "
                  "or fail on it with --perfgate-require-baselines)")
        if not verdict.passed:
            self.fail(f"{table(verdict)}\nraw results: {self.results_dir}")
        return verdict


    def _accepted_regression(self, phases: list[PhaseResult]) -> str:
        """Update mode never enshrines a regression: these repeats are judged against the baseline they would
        replace, and a REGRESSED or INCONCLUSIVE verdict refuses the write unless --perfgate-accept-regression
        says why (the reason is stored in the baseline). A baseline that cannot be compared (none yet, another
        GPU model or method, unreadable) is replaced: re-recording is what fixes it."""
        last = phases[-1]
        try:
            old = find_baseline(last.gpu_class, last.profile, last.scenario)
        except PerfgateError:
            return ""
        if old is None:
            return ""
        verdict = compare(phases, old, self.gate_settings)
        self._keep_gate_verdict(verdict)
        if verdict.status not in (REGRESSED, INCONCLUSIVE) or verdict.passed:
            return ""
        if not self.session.accept_regression:
            self.fail(f"baseline not written: this run is {verdict.status.upper()} against the baseline it would "
                      f"replace, and a refresh never enshrines a regression unasked\n{table(verdict)}\n"
                      "fix: find the cause; or, to accept the slowdown, run again with "
                      "--perfgate-accept-regression 'WHY' (stored in the baseline)"
                      f"\nraw results: {self.results_dir}")
        return self.session.accept_regression

    def _keep_gate_verdict(self, verdict: GateVerdict) -> None:
        """Into the run's report, and into the test's JUnit properties as ``perfgate_gate``: ``KEY: STATUS``
        and what changed since the baseline (one entry per key, updated as repeats are added)."""
        self.session.verdicts.setdefault(verdict.key, {})["gate"] = verdict
        if self._properties is None:
            return
        first = verdict.first_line()
        value = f"{verdict.key}: {verdict.status.upper()}" + (f" — {first}" if first else "")
        self._properties[:] = [(n, v) for n, v in self._properties
                               if not (n == "perfgate_gate" and str(v).startswith(f"{verdict.key}: "))]
        self._properties.append(("perfgate_gate", value))

    def _keep_key_metrics(self, phases: list[PhaseResult]) -> None:
        """Into the test's JUnit properties: ``perfgate_metric:KEY:METRIC`` for each key metric of the catalog
        (``MetricSpec.key_metric``) the phase measured, and ``perfgate_repeats:KEY``. The value is the mean over
        the phase's repeats, the figure summary.md's table and the gate's ``current`` column show (replaced as
        repeats are added)."""
        if self._properties is None or not phases:
            return
        key = phases[-1].key
        prefix, repeats = f"perfgate_metric:{key}:", f"perfgate_repeats:{key}"
        kept = [(n, v) for n, v in self._properties if not (n.startswith(prefix) or n == repeats)]
        for metric in KEY_METRICS:
            values = [float(p.metrics[metric]) for p in phases if isinstance(p.metrics.get(metric), (int, float))
                      and not isinstance(p.metrics[metric], bool) and math.isfinite(p.metrics[metric])]
            if values:
                kept.append((prefix + metric, f"{sum(values) / len(values):.6g}"))
        kept.append((repeats, str(len(phases))))
        self._properties[:] = kept


def _vkey(phase: PhaseResult) -> str:
    return phase.key
