"""PhaseRunner's repeat policy, with the measurement replaced by synthetic phases.

What is real: the scenario file, the gate settings read from a pyproject ([tool.perfgate.gate]), the baseline
file written by ``write_baseline`` and found through ``$PERFGATE_BASELINES_DIR``, the gate's verdicts. What
is fake: ``measure_phase`` (it returns the next synthetic PhaseResult instead of driving a server) and the
server's /health check; both need a running vLLM, which tests/test_faults_*.py and perf_tests/ exercise.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest

import perfgate.run.runner
from perfgate.core.phase import PhaseResult
from perfgate.run.runner import PhaseRunner
from perfgate.run.session import PerfgateSession
from perfgate.run.target import Target
from perfgate.verdict.baseline import baseline_path, load_baseline, write_baseline

GPU_CLASS, PROFILE, SCENARIO = "testgpu", "cpu-tiny", "cpu-closed"
KEY = f"{GPU_CLASS}/{PROFILE}/{SCENARIO}"
FINGERPRINT = {"vllm_version": "0.32.0"}


class Failed(Exception):
    """What the runner's ``fail`` raises here (pytest.fail in the fixture)."""


def _fail(message: str) -> None:
    raise Failed(message)


class AttachedServer:
    """A server perfgate did not start (--vllm-url): a URL and a session id, nothing to restart."""

    base_url = "http://127.0.0.1:9"
    log_path = None
    metrics_url = base_url + "/metrics"

    def __init__(self, session_id: str = "attached:run") -> None:
        self.session_id = session_id

    def pids(self) -> set[int]:
        return set()

    def alive(self) -> bool:
        return True

    def stop(self) -> None:
        pass


def phase(repeat: int, session: str, throughput: float, *, valid: bool = True) -> PhaseResult:
    return PhaseResult(PROFILE, SCENARIO, GPU_CLASS, repeat=repeat, started_at=1000.0 + repeat,
                       server_session=session, fingerprint=dict(FINGERPRINT), valid=valid,
                       invalid_reasons=[] if valid else ["achieved 70% of the offered rate"],
                       metrics={"output_throughput": throughput, "error_rate": 0.0})


class FakeMeasure:
    """Stands in for perfgate.run.measure.measure_phase: one synthetic phase per call, from ``throughputs``."""

    def __init__(self, throughputs: list[float], invalid_from: int | None = None) -> None:
        self.throughputs = list(throughputs)
        self.invalid_from = invalid_from
        self.calls: list[int] = []  # the repeat index of each call
        self.throttle_limits: list[float | None] = []  # what the runner passed from [tool.perfgate.gate]

    async def __call__(self, target: Target, spec, *, results_dir: Path, repeat: int = 0,
                       nonce: str | None = None, throttle_limit_pct: float | None = None) -> PhaseResult:
        assert spec.name == SCENARIO and results_dir.is_dir() and nonce
        self.throttle_limits.append(throttle_limit_pct)
        if len(self.calls) >= len(self.throughputs):
            raise AssertionError(f"measured more than the {len(self.throughputs)} repeats this test allows")
        value = self.throughputs[len(self.calls)]
        self.calls.append(repeat)
        invalid = self.invalid_from is not None and len(self.calls) > self.invalid_from
        return phase(repeat, target.server_session, value, valid=not invalid)


@pytest.fixture
def gate_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """[tool.perfgate.gate] repeats = 2, max_repeats = 4, two baseline sessions; an empty baselines dir. Only
    the two metrics the synthetic phases carry are gated (a GPU run missing the gated VRAM figure fails)."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text("[tool.perfgate.gate]\nrepeats = 2\nmax_repeats = 4\nbaseline_sessions = 2\n"
                         'gated = ["output_throughput", "error_rate"]\nthrottle_limit_pct = 7.5\n')
    monkeypatch.setenv("PERFGATE_PYPROJECT", str(pyproject))
    baselines = tmp_path / "baselines"
    monkeypatch.setenv("PERFGATE_BASELINES_DIR", str(baselines))
    monkeypatch.setattr(PhaseRunner, "_require_alive", lambda self, when, phase=None: None)
    return baselines


@pytest.fixture
def baseline_file(gate_env: Path) -> Path:
    """Six repeats of ~100 tok/s in two server sessions that agree (the gate can PASS an unchanged run)."""
    values = [100.0, 101.0, 99.0, 100.5, 99.5, 100.0]
    phases = [phase(r, f"base-{r // 3}", v) for r, v in enumerate(values)]
    path = baseline_path(GPU_CLASS, PROFILE, SCENARIO)
    assert path == gate_env / GPU_CLASS / PROFILE / f"{SCENARIO}.json"
    write_baseline(path, phases)
    return path


def make_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fake: FakeMeasure, *,
                update_baselines: bool = False) -> PhaseRunner:
    monkeypatch.setattr(perfgate.run.runner, "measure_phase", fake)
    results = tmp_path / "results"
    results.mkdir(exist_ok=True)
    target = Target(server=AttachedServer(), profile=PROFILE, served_model_name="tiny", tokenizer="unused",
                    gpu_class=GPU_CLASS)
    session = PerfgateSession(results_dir=results, update_baselines=update_baselines)
    return PhaseRunner(target, session, fail=_fail)


async def test_inconclusive_gate_adds_repeats_up_to_max_repeats_then_fails(tmp_path, monkeypatch, baseline_file):
    fake = FakeMeasure([100.0, 60.0, 140.0, 80.0, 120.0, 70.0])  # far too noisy to decide either way
    runner = make_runner(tmp_path, monkeypatch, fake)
    last = await runner.measure(SCENARIO)
    assert fake.calls == [0, 1, 2, 3]  # repeats = 2, then one at a time up to max_repeats = 4
    assert runner.repeats_of(last) == runner.phases[SCENARIO] and len(runner.session.phases) == 4
    recorded = runner.session.verdicts[KEY]["gate"]  # in the report even if no assertion runs
    assert recorded.status == "inconclusive" and recorded.repeats == 4 and not recorded.passed
    with pytest.raises(Failed) as err:
        runner.assert_no_regression(last)
    message = str(err.value)
    assert f"baseline gate {KEY}: INCONCLUSIVE" in message and "output_throughput" in message
    assert "this run: 4 repeat(s); baseline: 6 repeats in 2 server session(s)" in message
    assert f"raw results: {runner.results_dir}" in message


async def test_a_clearly_passing_run_stops_at_repeats(tmp_path, monkeypatch, baseline_file):
    fake = FakeMeasure([100.2, 99.8, 100.1, 99.9])
    runner = make_runner(tmp_path, monkeypatch, fake)
    last = await runner.measure(SCENARIO)
    assert fake.calls == [0, 1]
    assert fake.throttle_limits == [7.5, 7.5]  # [tool.perfgate.gate] throttle_limit_pct reaches each phase
    verdict = runner.assert_no_regression(last)
    assert verdict is not None and verdict.status == "pass" and verdict.repeats == 2
    assert {r.metric: r.verdict for r in verdict.gated_rows} == {"output_throughput": "pass", "error_rate": "pass"}
    assert runner.session.verdicts[KEY]["gate"] is verdict


async def test_a_clear_regression_stops_at_repeats_and_fails_naming_the_metric(tmp_path, monkeypatch,
                                                                                baseline_file):
    fake = FakeMeasure([60.0, 61.0, 60.5, 59.5])  # -40 % throughput: decided at once, no extra repeats
    runner = make_runner(tmp_path, monkeypatch, fake)
    last = await runner.measure(SCENARIO)
    assert fake.calls == [0, 1]
    with pytest.raises(Failed) as err:
        runner.assert_no_regression(last)
    assert f"baseline gate {KEY}: REGRESSED" in str(err.value) and "output_throughput -39.5%" in str(err.value)


async def test_the_test_and_the_command_line_set_the_repeats(tmp_path, monkeypatch, baseline_file):
    fake = FakeMeasure([100.2, 99.8, 100.1, 99.9, 100.0])
    runner = make_runner(tmp_path, monkeypatch, fake)
    await runner.measure(SCENARIO, repeats=3)  # the test's own count, above [tool.perfgate.gate] repeats
    assert fake.calls == [0, 1, 2]
    fake = FakeMeasure([100.2, 99.8, 100.1, 99.9, 100.0])
    runner = make_runner(tmp_path, monkeypatch, fake)
    runner.session.repeats = 5  # --perfgate-repeats wins over both, and may exceed max_repeats
    await runner.measure(SCENARIO, repeats=3)
    assert fake.calls == [0, 1, 2, 3, 4]


async def test_without_a_baseline_the_run_is_new_and_adds_no_repeats(tmp_path, monkeypatch, gate_env):
    fake = FakeMeasure([100.0, 60.0, 140.0, 80.0])
    runner = make_runner(tmp_path, monkeypatch, fake)
    last = await runner.measure(SCENARIO)
    assert fake.calls == [0, 1]
    verdict = runner.assert_no_regression(last)
    assert verdict is not None and verdict.status == "new" and verdict.passed


async def test_an_invalid_repeat_stops_adding_repeats_and_fails_the_test(tmp_path, monkeypatch, baseline_file):
    fake = FakeMeasure([100.0, 60.0, 140.0, 80.0], invalid_from=1)  # the second repeat is invalid
    runner = make_runner(tmp_path, monkeypatch, fake)
    with pytest.raises(Failed) as err:
        await runner.measure(SCENARIO)
    assert fake.calls == [0, 1]  # no more repeats of a run whose figures describe the client
    assert f"INVALID run of {KEY}" in str(err.value) and "achieved 70% of the offered rate" in str(err.value)
    assert runner.session.verdicts[KEY]["gate"].status == "invalid"


async def test_update_mode_cannot_restart_an_attached_server_and_names_the_merge(tmp_path, monkeypatch,
                                                                                baseline_file):
    before = baseline_file.read_bytes()
    fake = FakeMeasure([100.0, 101.0, 99.0, 100.0])
    runner = make_runner(tmp_path, monkeypatch, fake, update_baselines=True)
    with pytest.raises(Failed) as err:
        await runner.measure(SCENARIO)
    message = str(err.value)
    assert "--perfgate-update-baselines records the baseline in 2 server sessions" in message
    assert "cannot restart a server it did not start (--vllm-url)" in message
    assert "perfgate baselines refresh --from RUN1 --from RUN2" in message
    # The first session's repeats were measured (and kept for the report); the baseline was not touched.
    assert fake.calls == [0, 1] and len(runner.session.phases) == 2
    assert baseline_file.read_bytes() == before


def measured(runner: PhaseRunner, throughputs: list[float]) -> PhaseResult:
    """Repeats already measured in two server sessions (what update mode has before it writes)."""
    done = [phase(r, f"new-{r * 2 // len(throughputs)}", v) for r, v in enumerate(throughputs)]
    runner.phases[SCENARIO] = done
    return done[-1]


def test_update_mode_refuses_to_enshrine_a_regression_unless_told_why(tmp_path, monkeypatch, baseline_file):
    before = baseline_file.read_bytes()
    runner = make_runner(tmp_path, monkeypatch, FakeMeasure([]), update_baselines=True)
    with pytest.raises(Failed) as err:
        runner.assert_no_regression(measured(runner, [80.0, 80.5, 79.5, 80.0]))
    message = str(err.value)
    assert "baseline not written: this run is REGRESSED against the baseline it would replace" in message
    assert "output_throughput" in message and "--perfgate-accept-regression" in message
    assert baseline_file.read_bytes() == before
    assert runner.session.verdicts[KEY]["gate"].status == "regressed"  # in the report too

    runner.session.accept_regression = "vLLM 0.26 trades 20% throughput for correctness"
    runner.assert_no_regression(measured(runner, [80.0, 80.5, 79.5, 80.0]))
    written = load_baseline(baseline_file)
    assert written.accepted_regression == "vLLM 0.26 trades 20% throughput for correctness"
    assert statistics.mean(written.metrics["output_throughput"]) == pytest.approx(80.0)


def test_update_mode_rewrites_an_unchanged_or_incomparable_baseline(tmp_path, monkeypatch, baseline_file):
    runner = make_runner(tmp_path, monkeypatch, FakeMeasure([]), update_baselines=True)
    runner.assert_no_regression(measured(runner, [100.2, 99.8, 100.4, 99.6]))
    assert load_baseline(baseline_file).accepted_regression == ""
    # Another GPU model: the old file cannot judge the run, and re-recording is what fixes that.
    monkeypatch.setattr(perfgate.run.runner, "find_baseline", lambda *a: load_baseline(baseline_file).model_copy(
        update={"fingerprint": {"gpu_model": "NVIDIA A10G"}}))
    runner.assert_no_regression(measured(runner, [60.0, 60.5, 59.5, 60.0]))
    assert statistics.mean(load_baseline(baseline_file).metrics["output_throughput"]) == pytest.approx(60.0)
