"""Energy per token and throttling (issue 14): NVML's total-energy counter read at both ends of the window,
clock-event reasons read with every sample, the INVALID rule, the gate's direction, the report's lines.

NVML is the stand-in of tests/test_telemetry_nvml.py (there is no GPU here); a real CPU phase's absence of
these figures is checked in tests/test_fresh_prompts.py (real vLLM, measure_phase)."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import pytest
from test_telemetry_nvml import FakeDevice, FakeNvml, FakeNvmlError

from perfgate._errors import ConfigError
from perfgate.core.catalog import METRICS
from perfgate.core.phase import PhaseResult
from perfgate.load.metrics import format_table
from perfgate.report.markdown import render_summary
from perfgate.run.measure import apply_gpu_energy_and_clocks
from perfgate.telemetry import Telemetry, unavailable_reason
from perfgate.telemetry.energy import EnergyReading, add_energy_per_token, window_energy
from perfgate.telemetry.nvml import NvmlSample, NvmlSampler, summarize
from perfgate.telemetry.throttle import THROTTLE_KEYS, throttle_verdict
from perfgate.verdict.baseline import baseline_from_phases
from perfgate.verdict.gate import MISSING, NEW, PASS, REGRESSED, compare
from perfgate.verdict.gate_settings import GateSettings, load_gate_settings

REPO = Path(__file__).resolve().parents[1]
SW_POWER_CAP, GPU_IDLE, APP_CLOCKS, SYNC_BOOST, DISPLAY = 0x4, 0x1, 0x2, 0x10, 0x100


@pytest.fixture(autouse=True)
def _no_visible_devices_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _window(*devices: FakeDevice, during=None, fake: FakeNvml | None = None):
    """A sampled window over the stand-in; ``during()`` runs inside it (the GPUs' work)."""
    sampler = NvmlSampler(interval_s=0.01, nvml=fake or FakeNvml(list(devices)))
    before = time.time()
    sampler.start()
    if during is not None:
        during()
    time.sleep(0.05)
    result = sampler.stop()
    return result, before, time.time()


# --- energy --------------------------------------------------------------------------------------------

def test_known_counter_values_give_joules_average_power_and_joules_per_token() -> None:
    start = EnergyReading(t=100.0, mj={0: 1_000_000, 1: 2_000_000})
    end = EnergyReading(t=110.0, mj={0: 1_600_000, 1: 2_900_000})
    energy = window_energy(start, end, [0, 1])
    assert energy.unavailable == {}
    assert energy.metrics == {"energy_j": pytest.approx(1500.0), "avg_power_w": pytest.approx(150.0)}
    assert energy.per_gpu == {"energy_j[gpu0]": pytest.approx(600.0), "energy_j[gpu1]": pytest.approx(900.0)}
    metrics = {**energy.metrics, "total_output_tokens": 3000.0}
    add_energy_per_token(metrics, {})
    assert metrics["energy_per_output_token_j"] == pytest.approx(0.5)


async def test_sampler_reads_the_counters_at_the_window_ends_on_every_gpu() -> None:
    a, b = FakeDevice("NVIDIA H200"), FakeDevice("NVIDIA H200")
    a.energy_mj, b.energy_mj = 7_000_000, 9_000_000

    def work() -> None:  # the GPUs' counters advance while the window is open
        a.energy_mj += 250_000
        b.energy_mj += 350_000

    result, before, after = _window(a, b, during=work)
    a.energy_mj += 10_000_000  # after stop(): never counted
    assert result.metrics["energy_j"] == pytest.approx(600.0)
    assert result.per_gpu["energy_j[gpu1]"] == pytest.approx(350.0)
    # The counter's own window lies inside [before, after] and spans at least the 50 ms slept.
    assert 600.0 / (after - before) <= result.metrics["avg_power_w"] <= 600.0 / 0.05

    # Through the facade and the phase: joules per generated token of the phase's completed requests.
    c = FakeDevice("NVIDIA H200")
    tele = Telemetry(None, gpu_class="h200", nvml=FakeNvml([c]), nvml_interval_s=0.01)
    await tele.start()
    c.energy_mj += 480_000
    tel = await tele.stop()
    phase = PhaseResult("p", "s", "h200", metrics={"total_output_tokens": 1200.0})
    tel.apply_to(phase)
    apply_gpu_energy_and_clocks(phase, tel)
    assert phase.metrics["energy_j"] == pytest.approx(480.0)
    assert phase.metrics["energy_per_output_token_j"] == pytest.approx(0.4)
    assert phase.valid and any("clock-event reasons" in n for n in phase.notes)


@pytest.mark.parametrize(("start_mj", "end_mj", "why"), [
    (9_000_000, 1_000, "went backwards"),  # driver reloaded / counter wrapped
    (5_000_000, 5_000_000, "did not move"),  # a still counter is not a reading of 0 J
])
def test_a_counter_that_went_backwards_or_stood_still_is_missing_with_the_reason(start_mj, end_mj, why) -> None:
    energy = window_energy(EnergyReading(1.0, {0: start_mj}), EnergyReading(2.0, {0: end_mj}), [0])
    assert energy.metrics == {}
    assert set(energy.unavailable) == {"energy_j", "avg_power_w", "energy_per_output_token_j"}
    assert why in energy.unavailable["energy_j"] and "GPU 0" in energy.unavailable["energy_j"]

    dev = FakeDevice()
    dev.energy_mj = start_mj
    result, _, _ = _window(dev, during=lambda: setattr(dev, "energy_mj", end_mj))
    assert "energy_j" not in result.metrics and "avg_power_w" not in result.metrics
    assert why in result.unavailable_metrics["energy_j"]
    assert result.metrics["gpu_util_pct_mean"] == 0.0  # the rest of NVML still reads
    metrics = {**result.metrics, "total_output_tokens": 100.0}
    unavailable = dict(result.unavailable_metrics)
    add_energy_per_token(metrics, unavailable)
    assert "energy_per_output_token_j" not in metrics and why in unavailable["energy_per_output_token_j"]


def test_an_unsupported_counter_on_one_gpu_leaves_the_job_energy_missing() -> None:
    old, new = FakeDevice("Tesla P100"), FakeDevice()
    old.energy_mj = None  # NVMLError_NotSupported before Volta
    result, _, _ = _window(old, new, during=lambda: setattr(new, "energy_mj", new.energy_mj + 1000))
    assert result.available and "energy_j" not in result.metrics
    why = result.unavailable_metrics["energy_per_output_token_j"]
    assert "GPU 0 does not report its total energy" in why and "Not Supported" in why and "Volta" in why


def test_no_output_tokens_means_no_joules_per_token() -> None:
    metrics, unavailable = {"energy_j": 50.0, "total_output_tokens": 0.0}, {}
    add_energy_per_token(metrics, unavailable)
    assert "energy_per_output_token_j" not in metrics and "no output tokens" in unavailable["energy_per_output_token_j"]


async def test_without_nvml_energy_is_missing_by_the_sources_reason_and_the_phase_stays_valid() -> None:
    tele = Telemetry(None, gpu_class="cpu", nvml=FakeNvml([], init_error="Driver Not Loaded"))
    await tele.start()
    tel = await tele.stop()
    phase = PhaseResult("cpu-tiny", "cpu-closed", "cpu", metrics={"total_output_tokens": 640.0})
    tel.apply_to(phase)
    apply_gpu_energy_and_clocks(phase, tel)
    assert not set(phase.metrics) & {"energy_j", "avg_power_w", "energy_per_output_token_j", *THROTTLE_KEYS.values()}
    assert "Driver Not Loaded" in unavailable_reason(phase.unavailable, "energy_per_output_token_j")
    assert phase.valid and phase.invalid_reasons == []


# --- throttling ----------------------------------------------------------------------------------------

def _samples(masks_by_gpu: dict[int, list[int | None]]) -> list[NvmlSample]:
    return [NvmlSample(t=100.0 + k, gpu=g, util_pct=90.0, clock_event_reasons=m)
            for g, masks in masks_by_gpu.items() for k, m in enumerate(masks)]


def _phase_after(samples: list[NvmlSample], gpus: list[int], limit: float = 5.0) -> PhaseResult:
    """A phase whose telemetry read ``samples`` (the measure step's own application, not a copy of it)."""
    from perfgate.telemetry import TelemetryResult

    nvml = summarize(samples, gpus, process_tracked=False)
    tel = TelemetryResult(metrics=dict(nvml.metrics), unavailable=dict(nvml.unavailable_metrics), nvml=nvml)
    phase = PhaseResult("optimized", "chat", "h200")
    tel.apply_to(phase)
    apply_gpu_energy_and_clocks(phase, tel, limit)
    return phase


def test_power_cap_in_23_percent_of_samples_makes_the_phase_invalid_and_names_it() -> None:
    gpu0 = [SW_POWER_CAP] * 23 + [0] * 77
    phase = _phase_after(_samples({0: gpu0, 1: [0] * 100}), [0, 1])
    assert phase.metrics["throttle_sw_power_cap_pct"] == pytest.approx(23.0)
    assert phase.metrics["throttle_hw_thermal_pct"] == 0.0
    assert not phase.valid
    [reason] = phase.invalid_reasons
    assert reason.startswith("GPU 0 throttled by SW power cap in 23% of samples (limit 5%)")
    assert any("GPU 0: SW power cap 23%" in n and "GPU 1: none" in n for n in phase.notes)


def test_throttling_at_or_below_the_limit_is_valid_and_still_recorded() -> None:
    for share in (4, 5):  # "more than" the limit invalidates; exactly 5 % of samples does not
        phase = _phase_after(_samples({0: [SW_POWER_CAP] * share + [0] * (100 - share)}), [0])
        assert phase.valid, phase.invalid_reasons
        assert phase.metrics["throttle_sw_power_cap_pct"] == pytest.approx(share)
        assert any(f"SW power cap {share}.0%" in n for n in phase.notes)
    stricter = _phase_after(_samples({0: [SW_POWER_CAP] * 4 + [0] * 96}), [0], limit=3.0)
    assert not stricter.valid and "in 4.0% of samples (limit 3%)" in stricter.invalid_reasons[0]


@pytest.mark.parametrize(("bit", "name"), [(0x4, "SW power cap"), (0x8, "HW slowdown"),
                                           (0x20, "SW thermal slowdown"), (0x40, "HW thermal slowdown"),
                                           (0x80, "HW power brake")])
def test_every_power_or_thermal_reason_invalidates(bit: int, name: str) -> None:
    phase = _phase_after(_samples({0: [bit | GPU_IDLE] * 10}), [0])
    assert not phase.valid and phase.invalid_reasons[0].startswith(f"GPU 0 throttled by {name} in 100%")
    assert phase.metrics[THROTTLE_KEYS[bit]] == 100.0


def test_idle_application_clocks_sync_boost_and_display_clocks_are_not_throttling() -> None:
    phase = _phase_after(_samples({0: [GPU_IDLE | APP_CLOCKS | SYNC_BOOST | DISPLAY] * 50}), [0])
    assert phase.valid, phase.invalid_reasons
    assert all(phase.metrics[k] == 0.0 for k in THROTTLE_KEYS.values())
    note = next(n for n in phase.notes if "clock-event reasons" in n)
    assert "GPU idle 100%" in note and "application clocks setting 100%" in note and "sync boost 100%" in note


def test_sampler_reads_reasons_with_every_sample_and_falls_back_to_the_old_call() -> None:
    dev = FakeDevice()
    dev.clock_reasons = SW_POWER_CAP | GPU_IDLE
    result, _, _ = _window(dev)
    assert result.samples and all(s.clock_event_reasons == SW_POWER_CAP | GPU_IDLE for s in result.samples)
    assert result.metrics["throttle_sw_power_cap_pct"] == 100.0

    class OldDriver(FakeNvml):
        """nvidia-ml-py knows the new name, the driver does not (NVMLError_FunctionNotFound)."""

        def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeDevice) -> int:
            raise FakeNvmlError("Function Not Found")

        def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: FakeDevice) -> int:
            return h.clock_reasons

    dev.clock_reasons = 0x40
    result, _, _ = _window(fake=OldDriver([dev]))
    assert result.metrics["throttle_hw_thermal_pct"] == 100.0

    dev.clock_reasons = None  # neither call answers: missing with the reason, never a 0 % reading
    result, _, _ = _window(dev)
    assert not set(result.metrics) & set(THROTTLE_KEYS.values())
    assert "clock-event" in result.unavailable_metrics["throttle_sw_power_cap_pct"]
    reasons, note = throttle_verdict(result.clock_events)
    assert reasons == [] and "not read" in note


# --- catalog, settings, gate ---------------------------------------------------------------------------

def test_catalog_specs() -> None:
    e = METRICS["energy_per_output_token_j"]
    assert (e.unit, e.better, e.gated, e.needs_gpu) == ("J/token", "lower", True, True) and 0 < e.min_effect < 0.2
    for key in ("avg_power_w", "energy_j", *THROTTLE_KEYS.values()):
        assert METRICS[key].needs_gpu and not METRICS[key].gated, key


def test_the_cpu_class_does_not_gate_energy_and_the_threshold_is_a_setting(tmp_path: Path) -> None:
    repo = REPO / "pyproject.toml"
    assert "energy_per_output_token_j" not in load_gate_settings("cpu", repo).gated
    h200 = load_gate_settings("h200", repo)
    assert "energy_per_output_token_j" in h200.gated and h200.throttle_limit_pct == 5.0
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.perfgate.gate]\nthrottle_limit_pct = 2.0\n[tool.perfgate.gate.class.a10g]\n"
                    "throttle_limit_pct = 10\n")
    assert load_gate_settings("h200", path).throttle_limit_pct == 2.0
    assert load_gate_settings("a10g", path).throttle_limit_pct == 10.0
    path.write_text("[tool.perfgate.gate]\nthrottle_limit_pct = 150\n")
    with pytest.raises(ConfigError, match="throttle_limit_pct"):
        load_gate_settings("h200", path)


def _energy_run(sid: str, n: int, rng: random.Random, change: float = 0.0) -> list[PhaseResult]:
    return [PhaseResult("optimized", "chat", "h200", repeat=r, server_session=sid, started_at=float(r),
                        metrics={"energy_per_output_token_j": 0.108 * (1 + change) * math.exp(rng.gauss(0, 0.005))})
            for r in range(n)]


def test_gate_direction_more_joules_per_token_is_regressed_fewer_is_not() -> None:
    rng = random.Random(14)
    base = baseline_from_phases(_energy_run("b0", 3, rng) + _energy_run("b1", 3, rng))
    settings = GateSettings(gpu_class="h200", gated=("energy_per_output_token_j",))
    worse = compare(_energy_run("c", 4, rng, change=+0.20), base, settings)
    assert worse.status == REGRESSED and [r.metric for r in worse.regressions] == ["energy_per_output_token_j"]
    assert worse.regressions[0].margin == pytest.approx(METRICS["energy_per_output_token_j"].min_effect)
    better = compare(_energy_run("c", 4, rng, change=-0.20), base, settings)
    assert better.status == PASS and not better.regressions
    same = compare(_energy_run("c", 4, rng), base, settings)
    assert same.status == PASS


def test_energy_missing_on_a_gpu_run_fails_and_on_the_cpu_path_is_not_applicable() -> None:
    rng = random.Random(15)
    gpu = _energy_run("c", 3, rng)
    for p in gpu:
        del p.metrics["energy_per_output_token_j"]
        p.unavailable["energy_per_output_token_j"] = "GPU 0 does not report its total energy"
    verdict = compare(gpu, None, GateSettings(gpu_class="h200"))
    row = next(r for r in verdict.rows if r.metric == "energy_per_output_token_j")
    assert row.verdict == MISSING and not verdict.passed
    cpu = [PhaseResult("cpu-tiny", "cpu-closed", "cpu", metrics={"output_throughput": 30.0}, repeat=r,
                       server_session="c", unavailable={"nvml": "Driver Not Loaded"}) for r in range(3)]
    cpu_verdict = compare(cpu, None, load_gate_settings("cpu", REPO / "pyproject.toml"))
    assert cpu_verdict.status == NEW and not cpu_verdict.by_verdict(MISSING)


# --- report --------------------------------------------------------------------------------------------

def test_the_phase_table_and_summary_show_energy_power_and_throttling() -> None:
    metrics = {"completed": 10.0, "total_output_tokens": 2560.0, "energy_per_output_token_j": 0.1234,
               "avg_power_w": 512.3, "energy_j": 316.0, "throttle_sw_power_cap_pct": 23.0,
               "throttle_hw_slowdown_pct": 0.0, "throttle_sw_thermal_pct": 0.0, "throttle_hw_thermal_pct": 1.5,
               "throttle_hw_power_brake_pct": 0.0}
    text = format_table(metrics)
    assert "Energy per output token (J/token):" in text and "0.1234" in text
    assert "Average GPU power (W):" in text and "512.3" in text
    assert "SW power cap 23.0%, HW thermal slowdown 1.5%" in text
    calm = format_table({**metrics, "throttle_sw_power_cap_pct": 0.0, "throttle_hw_thermal_pct": 0.0})
    assert "Throttled (power/thermal, % of samples):" in calm and calm.split("samples):")[1].split()[0] == "none"
    assert "Energy and throttling" not in format_table({"completed": 10.0})  # CPU: no NVML, no block

    phase = PhaseResult("optimized", "chat", "h200", metrics=metrics, valid=False,
                        invalid_reasons=["GPU 0 throttled by SW power cap in 23% of samples (limit 5%)"])
    md = render_summary([phase])
    assert "| energy_per_output_token_j | 0.1234 J/token |" in md and "| avg_power_w | 512.3 W |" in md
    assert "GPU clocks held down by power or heat: SW power cap 23.0%, HW thermal slowdown 1.5%" in md
    assert "INVALID: GPU 0 throttled by SW power cap in 23% of samples (limit 5%)" in md


def test_a_power_cap_flag_counts_only_where_the_clock_was_held_down() -> None:
    """The H200 case: SW power cap flagged in 11 of 182 samples, 10 of them one step (1,965 MHz) below the
    1,980 MHz maximum and one at 1,890 MHz. By its clocks the window was throttled in 1 sample, not 11."""
    from types import SimpleNamespace

    from perfgate.telemetry.throttle import clock_event_shares

    samples = ([SimpleNamespace(gpu=0, clock_event_reasons=0, sm_clock_mhz=1980.0)] * 171
               + [SimpleNamespace(gpu=0, clock_event_reasons=SW_POWER_CAP, sm_clock_mhz=1965.0)] * 10
               + [SimpleNamespace(gpu=0, clock_event_reasons=SW_POWER_CAP, sm_clock_mhz=1890.0)])
    shares = clock_event_shares(samples, [0], {0: 1980.0})
    assert shares.metrics()["throttle_sw_power_cap_pct"] == pytest.approx(100 / 182)
    reasons, note = throttle_verdict(shares)
    assert reasons == [] and "SW power cap flagged in 6.0%" in note and "2% below its maximum" in note
    # The same flags with the clock far down (or unknown) are throttling.
    down = [SimpleNamespace(gpu=0, clock_event_reasons=SW_POWER_CAP, sm_clock_mhz=1860.0)] * 11
    reasons, _ = throttle_verdict(clock_event_shares(samples[:171] + down, [0], {0: 1980.0}))
    assert reasons and "SW power cap in 6.0% of samples" in reasons[0]
    reasons, _ = throttle_verdict(clock_event_shares(samples, [0], None))
    assert reasons and "SW power cap in 6.0%" in reasons[0]
