"""NVML sampling: the "no NVML" path with the real pynvml of this machine, and a stand-in NVML module
with fake devices (the one stub the project allows: there is no GPU here) for statistics and windowing."""

from __future__ import annotations

import time
import types

import pytest

from perfgate.telemetry import Telemetry, detect_gpus, unavailable_reason
from perfgate.telemetry.nvml import GIB, NvmlSample, NvmlSampler, summarize


class FakeNvmlError(Exception):
    pass


class FakeDevice:
    def __init__(self, name: str = "NVIDIA A10G", total_gib: float = 24.0) -> None:
        self.name = name
        self.total = int(total_gib * GIB)
        self.util = 0
        self.used = 0
        self.power_mw: int | None = 100_000  # None: the card does not report power
        self.sm_clock = 1500
        self.temp = 40
        self.procs: list[tuple[int, int | None]] = []  # (pid, bytes)
        self.energy_mj: int | None = 5_000_000  # total-energy counter; None: not supported (pre-Volta)
        self.clock_reasons: int | None = 0  # clock-event reasons bitmask; None: not supported


class FakeNvml(types.ModuleType):
    """The slice of pynvml that perfgate calls, over FakeDevices; counts calls to see when sampling stops."""

    NVML_CLOCK_SM = 1
    NVML_CLOCK_MEM = 2
    NVML_TEMPERATURE_GPU = 0

    def __init__(self, devices: list[FakeDevice], init_error: str | None = None) -> None:
        super().__init__("fake_pynvml")
        self.devices = devices
        self.init_error = init_error
        self.calls = 0
        self.shutdowns = 0

    def nvmlInit(self) -> None:
        if self.init_error:
            raise FakeNvmlError(self.init_error)

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeDevice:
        return self.devices[i]

    def nvmlDeviceGetName(self, h: FakeDevice) -> str:
        return h.name

    def nvmlDeviceGetUUID(self, h: FakeDevice) -> str:
        return f"GPU-{self.devices.index(h)}"

    def nvmlDeviceGetUtilizationRates(self, h: FakeDevice) -> types.SimpleNamespace:
        self.calls += 1
        return types.SimpleNamespace(gpu=h.util, memory=0)

    def nvmlDeviceGetMemoryInfo(self, h: FakeDevice) -> types.SimpleNamespace:
        return types.SimpleNamespace(total=h.total, used=h.used, free=h.total - h.used)

    def nvmlDeviceGetPowerUsage(self, h: FakeDevice) -> int:
        if h.power_mw is None:
            raise FakeNvmlError("Not Supported")
        return h.power_mw

    def nvmlDeviceGetClockInfo(self, h: FakeDevice, kind: int) -> int:
        return h.sm_clock

    def nvmlDeviceGetTemperature(self, h: FakeDevice, kind: int) -> int:
        return h.temp

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeDevice) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(pid=p, usedGpuMemory=b) for p, b in h.procs]

    def nvmlDeviceGetEnforcedPowerLimit(self, h: FakeDevice) -> int:
        return 300_000

    def nvmlDeviceGetMaxClockInfo(self, h: FakeDevice, kind: int) -> int:
        return 1710 if kind == self.NVML_CLOCK_SM else 6251

    def nvmlDeviceGetTotalEnergyConsumption(self, h: FakeDevice) -> int:
        if h.energy_mj is None:
            raise FakeNvmlError("Not Supported")
        return h.energy_mj

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: FakeDevice) -> int:
        if h.clock_reasons is None:
            raise FakeNvmlError("Not Supported")
        return h.clock_reasons

    def nvmlSystemGetDriverVersion(self) -> str:
        return "550.54.15"

    def nvmlSystemGetCudaDriverVersion(self) -> int:
        return 12040


@pytest.fixture(autouse=True)
def _no_visible_devices_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:  # noqa: BLE001 -- any NVML failure means no GPU here
        return False


# --- the real pynvml of this machine ---------------------------------------------------------------

def test_real_nvml_is_unavailable_with_reason_or_reads_a_gpu() -> None:
    sampler = NvmlSampler(interval_s=0.05)
    sampler.start()
    time.sleep(0.15)
    result = sampler.stop()
    if _nvml_works():  # a GPU host: the real path must produce readings
        assert result.available and result.metrics["vram_used_gib_peak"] > 0
        assert detect_gpus().gpus
        for key in ("energy_j", "throttle_sw_power_cap_pct"):  # read, or missing with the reason
            assert key in result.metrics or result.unavailable_metrics[key], key
    else:
        assert result.available is False
        assert "NVML" in result.reason
        assert result.metrics == {} and result.samples == []  # no zero that passes for a reading
        detection = detect_gpus()
        assert detection.available is False and detection.reason and detection.gpu_class == "cpu"


async def test_telemetry_without_gpu_or_metrics_marks_every_source_unavailable() -> None:
    tele = Telemetry(None, gpu_class="cpu", nvml=FakeNvml([], init_error="Driver Not Loaded"))
    await tele.start()
    result = await tele.stop()
    assert result.metrics == {}
    assert "Driver Not Loaded" in result.unavailable["nvml"]
    assert "Driver Not Loaded" in unavailable_reason(result.unavailable, "gpu_util_pct_mean")
    assert unavailable_reason(result.unavailable, "running_batch_mean") == result.unavailable["server"]
    assert "mbu_pct" in result.unavailable and result.saturated is None


# --- a stand-in NVML that fails ---------------------------------------------------------------------

def test_nvml_init_failure_is_reported_not_raised() -> None:
    fake = FakeNvml([FakeDevice()], init_error="NVML Shared Library Not Found")
    sampler = NvmlSampler(nvml=fake)
    sampler.start()
    result = sampler.stop()
    assert result.available is False and "NVML Shared Library Not Found" in result.reason
    detection = detect_gpus(fake)
    assert detection.available is False and "NVML Shared Library Not Found" in detection.reason


def test_missing_gpu_index_is_reported() -> None:
    fake = FakeNvml([FakeDevice()])
    sampler = NvmlSampler(gpu_indices=[3], nvml=fake)
    sampler.start()
    result = sampler.stop()
    assert result.available is False and "3" in result.reason and "1 GPUs" in result.reason
    assert fake.shutdowns == 1


# --- statistics over known samples -----------------------------------------------------------------

def test_two_gpu_statistics_combine_as_documented() -> None:
    util = {0: [10, 20, 30, 40], 1: [30, 40, 50, 60]}
    mem = {0: [5.0, 6.0, 7.0, 8.0], 1: [4.0, 9.0, 4.0, 4.0]}
    samples = [NvmlSample(t=100.0 + k, gpu=g, util_pct=util[g][k], mem_used_gib=mem[g][k], power_w=100.0 + g,
                          sm_clock_mhz=1000.0 + 100 * g, temperature_c=50.0 + 10 * g)
               for k in range(4) for g in (0, 1)]
    res = summarize(samples, [0, 1], process_tracked=False)
    m = res.metrics
    # utilization: mean over GPUs per tick -> 20, 30, 40, 50
    assert m["gpu_util_pct_mean"] == pytest.approx(35.0)
    assert m["gpu_util_pct_p50"] == pytest.approx(35.0)
    assert m["gpu_util_pct_p95"] == pytest.approx(48.5)
    assert m["gpu_util_pct_peak"] == pytest.approx(50.0)
    # memory: the fullest card per tick -> 5, 9, 7, 8
    assert m["vram_used_gib_peak"] == pytest.approx(9.0)
    assert m["vram_used_gib_mean"] == pytest.approx(7.25)
    assert m["power_w_mean"] == pytest.approx(201.0)  # summed over GPUs
    assert m["sm_clock_mhz_mean"] == pytest.approx(1050.0)
    assert m["temperature_c_peak"] == pytest.approx(60.0)
    # per-GPU figures are kept apart from the flat dict
    assert res.per_gpu["gpu_util_pct_mean[gpu1]"] == pytest.approx(45.0)
    assert res.per_gpu["vram_used_gib_peak[gpu0]"] == pytest.approx(8.0)
    assert not any("[" in k for k in m)
    assert "no vLLM process tree" in res.unavailable_metrics["vram_process_gib_peak"]


def test_unsupported_field_is_unavailable_not_zero() -> None:
    dev = FakeDevice()
    dev.power_mw = None
    sampler = NvmlSampler(nvml=FakeNvml([dev]))
    sampler.start()
    result = sampler.stop()
    assert result.available
    assert "power_w_mean" not in result.metrics and "power_w_peak" not in result.metrics
    assert "does not report" in result.unavailable_metrics["power_w_mean"]


def test_process_tree_memory() -> None:
    dev = FakeDevice()
    dev.procs = [(111, int(2 * GIB)), (222, int(1 * GIB)), (999, int(5 * GIB)), (333, None)]
    ours = NvmlSampler(pids_provider=lambda: {111, 222, 333}, nvml=FakeNvml([dev]))
    ours.start()
    assert ours.stop().metrics["vram_process_gib_peak"] == pytest.approx(3.0)

    strangers = NvmlSampler(pids_provider=lambda: {4242}, nvml=FakeNvml([dev]))
    strangers.start()
    res = strangers.stop()
    assert "vram_process_gib_peak" not in res.metrics
    assert "PID namespace" in res.unavailable_metrics["vram_process_gib_peak"]


def test_detect_gpus_reads_the_fake_devices() -> None:
    fake = FakeNvml([FakeDevice("NVIDIA H100 80GB HBM3", 79.6), FakeDevice("NVIDIA H100 80GB HBM3", 79.6)])
    det = detect_gpus(fake)
    assert det.available and len(det.gpus) == 2
    assert det.gpu_class == "h100"
    assert det.gpus[1].memory_total_gib == pytest.approx(79.6, rel=1e-6)
    assert det.gpus[0].power_limit_w == 300.0 and det.gpus[0].max_sm_clock_mhz == 1710
    assert det.driver_version == "550.54.15" and det.cuda_driver_version == "12.4"


def test_cuda_visible_devices_selects_the_sampled_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1")
    sampler = NvmlSampler(nvml=FakeNvml([FakeDevice(), FakeDevice()]))
    sampler.start()
    result = sampler.stop()
    assert result.gpu_indices == [1] and {s.gpu for s in result.samples} == {1}


# --- windowing: only what happens between start() and stop() counts ------------------------------

def test_statistics_cover_exactly_the_window() -> None:
    dev = FakeDevice()
    fake = FakeNvml([dev])
    sampler = NvmlSampler(interval_s=0.02, nvml=fake)
    dev.util, dev.used = 50, int(10 * GIB)
    before = time.time()
    sampler.start()
    time.sleep(0.1)
    dev.util, dev.used = 70, int(12 * GIB)  # the busy part of the phase
    time.sleep(0.1)
    result = sampler.stop()
    after = time.time()
    calls_at_stop = fake.calls

    dev.util, dev.used = 100, int(20 * GIB)  # after the window: must never be seen
    time.sleep(0.1)
    assert fake.calls == calls_at_stop, "the sampler kept sampling after stop()"
    assert fake.shutdowns == 1
    assert len(result.samples) >= 3
    assert all(before <= s.t <= after for s in result.samples)
    assert result.metrics["gpu_util_pct_peak"] == 70.0
    assert min(s.util_pct for s in result.samples) == 50.0
    assert result.metrics["vram_used_gib_peak"] == pytest.approx(12.0)
    assert 50.0 < result.metrics["gpu_util_pct_mean"] < 70.0


async def test_facade_with_fake_gpu_fills_nvml_keys() -> None:
    dev = FakeDevice()
    dev.util, dev.used = 60, int(8 * GIB)
    tele = Telemetry(None, gpu_class="a10g", nvml=FakeNvml([dev]), nvml_interval_s=0.02)
    await tele.start()
    result = await tele.stop()
    assert result.metrics["gpu_util_pct_mean"] == 60.0
    assert result.metrics["vram_used_gib_peak"] == pytest.approx(8.0)
    assert "nvml" not in result.unavailable
    assert result.timeline()["nvml"]["samples"]
