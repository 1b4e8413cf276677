"""NVML: what the GPUs did during one measured window, sampled in a background thread.

``NvmlSampler.start()`` / ``stop()`` bracket the measured phase, so start-up and warm-up never leak
into the statistics. Without NVML or a GPU the result says so (``available=False`` plus the reason):
GPU SLOs then skip with that reason instead of passing on zeros.

How several GPUs (tensor parallel) become one figure — each tick samples every GPU, then combines:

- utilization and SM clock: the mean over GPUs (how much of the job's silicon was busy);
- memory (device and process tree): the fullest card, because a card's own capacity is what runs out
  and the VRAM SLOs are per GPU class, i.e. per card;
- power: the sum over GPUs (the job's draw);
- temperature: the hottest card.

Per-GPU figures are kept apart in ``NvmlResult.per_gpu`` (``gpu_util_pct_mean[gpu1]``), never in the
flat metrics dict that SLOs read. Energy (the driver's counter, read at both ends of the window) is
``perfgate.telemetry.energy``; clock-event (throttle) reasons, read with every sample, ``...throttle``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from perfgate.core.hardware import CPU_CLASS, classify
from perfgate.telemetry.energy import EnergyReading, read_energy, window_energy
from perfgate.telemetry.throttle import (
    THROTTLE_KEYS,
    ClockEventShares,
    clock_event_shares,
    read_clock_event_reasons,
)

GIB = float(2**30)

# Per-tick field -> how ticks over several GPUs are combined into one value.
_COMBINE: dict[str, Callable[[list[float]], float]] = {
    "util_pct": lambda v: sum(v) / len(v),
    "mem_used_gib": max,
    "mem_process_gib": max,
    "power_w": sum,
    "sm_clock_mhz": lambda v: sum(v) / len(v),
    "temperature_c": max,
}


@dataclass
class NvmlSample:
    """One reading of one GPU; ``None`` where the card does not report the field."""

    t: float  # time.time(), the clock the load engine and /metrics samples use too
    gpu: int
    util_pct: float | None = None
    mem_used_gib: float | None = None
    mem_process_gib: float | None = None  # None when no pids_provider or no process matched
    power_w: float | None = None
    sm_clock_mhz: float | None = None
    temperature_c: float | None = None
    clock_event_reasons: int | None = None  # bitmask, perfgate.telemetry.throttle.CLOCK_EVENT_REASONS


@dataclass
class NvmlResult:
    available: bool
    reason: str = ""  # why not available (whole source), "" when available
    metrics: dict[str, float] = field(default_factory=dict)  # catalog keys, combined over GPUs
    per_gpu: dict[str, float] = field(default_factory=dict)  # "gpu_util_pct_mean[gpu1]": ...
    # Catalog keys that could not be measured although NVML works, with the reason.
    unavailable_metrics: dict[str, str] = field(default_factory=dict)
    samples: list[NvmlSample] = field(default_factory=list)
    gpu_indices: list[int] = field(default_factory=list)
    clock_events: ClockEventShares = field(default_factory=ClockEventShares)
    started_at: float = 0.0
    stopped_at: float = 0.0

    def samples_as_dicts(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.samples]


@dataclass(frozen=True)
class GpuInfo:
    index: int
    name: str
    uuid: str
    memory_total_gib: float
    power_limit_w: float | None
    max_sm_clock_mhz: float | None
    max_mem_clock_mhz: float | None


@dataclass
class GpuDetection:
    """The GPUs NVML sees, or why none can be seen."""

    available: bool
    reason: str = ""
    gpus: list[GpuInfo] = field(default_factory=list)
    driver_version: str = ""
    cuda_driver_version: str = ""

    @property
    def gpu_class(self) -> str:
        """The GPU class key of the first GPU (``perfgate.core.hardware.classify``), ``"cpu"`` without GPUs."""

        return classify(self.gpus[0].name) if self.gpus else CPU_CLASS


def _load_nvml(nvml: ModuleType | None) -> tuple[ModuleType | None, str]:
    """pynvml (or the injected stand-in) initialised, or None and the reason in plain words."""
    if nvml is None:
        try:
            import pynvml as nvml  # type: ignore[no-redef]
        except ImportError as exc:
            return None, f"pynvml is not importable ({exc}); install nvidia-ml-py"
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 -- NVMLError_LibraryNotFound, DriverNotLoaded, ...: all mean 'no GPU'
        return None, f"NVML could not start: {exc} (no NVIDIA driver or GPU on this machine)"
    return nvml, ""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _try(fn: Callable[..., Any], *args: Any) -> Any:
    """A field this card does not support (NVMLError_NotSupported, ...) reads as None, not 0."""
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 -- any NVMLError (NotSupported, NoPermission) means "not reported"
        return None


def _visible_indices(nvml: ModuleType, count: int) -> list[int]:
    """NVML indexes are physical; honour CUDA_VISIBLE_DEVICES (indexes or UUIDs) as vLLM does."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not visible:
        return list(range(count))
    wanted = [v.strip() for v in visible.split(",") if v.strip()]
    if all(v.isdigit() for v in wanted):
        return [int(v) for v in wanted if int(v) < count]
    by_uuid = {_text(_try(nvml.nvmlDeviceGetUUID, nvml.nvmlDeviceGetHandleByIndex(i))): i for i in range(count)}
    return [by_uuid[v] for v in wanted if v in by_uuid]


def detect_gpus(nvml: ModuleType | None = None) -> GpuDetection:
    """What NVML reports about each visible GPU, for the environment fingerprint and the GPU class."""
    lib, reason = _load_nvml(nvml)
    if lib is None:
        return GpuDetection(available=False, reason=reason)
    try:
        count = lib.nvmlDeviceGetCount()
        if count == 0:
            return GpuDetection(available=False, reason="NVML started but reports no GPU")
        gpus = []
        for index in _visible_indices(lib, count):
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            power_mw = _try(lib.nvmlDeviceGetEnforcedPowerLimit, handle)
            gpus.append(GpuInfo(
                index=index,
                name=_text(lib.nvmlDeviceGetName(handle)),
                uuid=_text(_try(lib.nvmlDeviceGetUUID, handle) or ""),
                memory_total_gib=lib.nvmlDeviceGetMemoryInfo(handle).total / GIB,
                power_limit_w=power_mw / 1000.0 if power_mw is not None else None,
                max_sm_clock_mhz=_try(lib.nvmlDeviceGetMaxClockInfo, handle, lib.NVML_CLOCK_SM),
                max_mem_clock_mhz=_try(lib.nvmlDeviceGetMaxClockInfo, handle, lib.NVML_CLOCK_MEM),
            ))
        cuda = _try(lib.nvmlSystemGetCudaDriverVersion)
        return GpuDetection(
            available=bool(gpus),
            reason="" if gpus else "CUDA_VISIBLE_DEVICES hides every GPU NVML sees",
            gpus=gpus,
            driver_version=_text(_try(lib.nvmlSystemGetDriverVersion) or ""),
            cuda_driver_version=f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else "",
        )
    except Exception as exc:  # noqa: BLE001 -- an NVML failure is a reason, never a crash
        return GpuDetection(available=False, reason=f"NVML failed while listing GPUs: {exc}")
    finally:
        _try(lib.nvmlShutdown)


class NvmlSampler:
    """Samples every ``interval_s`` between ``start()`` and ``stop()`` in a daemon thread.

    ``pids_provider`` returns the PIDs of the vLLM process tree (the server and its engine workers);
    device memory used by those PIDs is ``vram_process_gib_peak``. ``nvml`` injects a stand-in module
    (tests on machines without a GPU); by default ``pynvml`` is used.
    """

    def __init__(
        self,
        interval_s: float = 0.1,
        gpu_indices: list[int] | None = None,
        pids_provider: Callable[[], set[int]] | None = None,
        nvml: ModuleType | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"NVML sampling interval must be > 0 s, got {interval_s}")
        self.interval_s = interval_s
        self._requested = gpu_indices
        self._pids_provider = pids_provider
        self._nvml_injected = nvml
        self._lib: ModuleType | None = None
        self._reason = ""
        self._handles: list[tuple[int, Any]] = []
        self._samples: list[NvmlSample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started_at = 0.0
        self._process_errors: list[str] = []
        self._energy_start: EnergyReading | None = None
        self._max_sm_clock: dict[int, float | None] = {}

    def start(self) -> None:
        """Begin the window; never raises for a missing GPU (``stop()`` then reports why)."""
        if self._thread is not None:
            raise RuntimeError("NvmlSampler.start() called twice; use one sampler per phase")
        self._started_at = time.time()
        self._lib, self._reason = _load_nvml(self._nvml_injected)
        if self._lib is None:
            return
        try:
            count = self._lib.nvmlDeviceGetCount()
            indices = self._requested if self._requested is not None else _visible_indices(self._lib, count)
            missing = [i for i in indices if i >= count]
            if missing or not indices:
                raise LookupError(f"GPU index {missing or indices} not present (NVML sees {count} GPUs)")
            self._handles = [(i, self._lib.nvmlDeviceGetHandleByIndex(i)) for i in indices]
        except Exception as exc:  # noqa: BLE001 -- NVMLError or a bad index: reported, not raised
            self._reason = f"NVML could not open the GPUs: {exc}"
            _try(self._lib.nvmlShutdown)
            self._lib = None
            return
        self._energy_start = read_energy(self._lib, self._handles)
        # A throttle flag counts only where the clock sat below its maximum (perfgate.telemetry.throttle).
        self._max_sm_clock = {i: _try(self._lib.nvmlDeviceGetMaxClockInfo, h, self._lib.NVML_CLOCK_SM)
                              for i, h in self._handles}
        self._sample_all()  # a reading at the very start of the window
        self._thread = threading.Thread(target=self._run, name="perfgate-nvml", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # Sleep to the next tick of a fixed grid so slow NVML calls do not stretch the interval.
        next_tick = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_tick - time.monotonic())):
            self._sample_all()
            next_tick += self.interval_s

    def _process_pids(self) -> set[int] | None:
        if self._pids_provider is None:
            return None
        try:
            return set(self._pids_provider())
        except Exception as exc:  # noqa: BLE001 -- e.g. a process exited mid-walk: skip this tick's reading
            self._process_errors.append(str(exc))
            return set()

    def _sample_all(self) -> None:
        lib = self._lib
        assert lib is not None
        t = time.time()
        pids = self._process_pids()
        for index, handle in self._handles:
            rates = _try(lib.nvmlDeviceGetUtilizationRates, handle)
            memory = _try(lib.nvmlDeviceGetMemoryInfo, handle)
            power_mw = _try(lib.nvmlDeviceGetPowerUsage, handle)
            sm_clock = _try(lib.nvmlDeviceGetClockInfo, handle, lib.NVML_CLOCK_SM)
            temperature = _try(lib.nvmlDeviceGetTemperature, handle, lib.NVML_TEMPERATURE_GPU)
            self._samples.append(NvmlSample(
                t=t,
                gpu=index,
                util_pct=float(rates.gpu) if rates is not None else None,
                mem_used_gib=memory.used / GIB if memory is not None else None,
                mem_process_gib=self._process_memory(handle, pids),
                power_w=power_mw / 1000.0 if power_mw is not None else None,
                sm_clock_mhz=float(sm_clock) if sm_clock is not None else None,
                temperature_c=float(temperature) if temperature is not None else None,
                clock_event_reasons=read_clock_event_reasons(lib, handle),
            ))

    def _process_memory(self, handle: Any, pids: set[int] | None) -> float | None:
        """Memory of the vLLM tree's processes on this GPU; None (not 0) when none of them is listed."""
        if not pids:
            return None
        assert self._lib is not None
        procs = _try(self._lib.nvmlDeviceGetComputeRunningProcesses, handle)
        if procs is None:
            return None
        # usedGpuMemory is None when the driver may not say (e.g. no permission in a container).
        ours = [p.usedGpuMemory for p in procs if p.pid in pids and p.usedGpuMemory is not None]
        return sum(ours) / GIB if ours else None

    def stop(self) -> NvmlResult:
        """End the window and return its samples and statistics."""
        stopped_at = time.time()
        if self._lib is None:
            return NvmlResult(available=False, reason=self._reason or "NvmlSampler.stop() before start()",
                              started_at=self._started_at, stopped_at=stopped_at)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=max(5.0, 10 * self.interval_s))
        self._sample_all()  # and one at the very end
        energy = window_energy(self._energy_start, read_energy(self._lib, self._handles),
                               [i for i, _ in self._handles])
        _try(self._lib.nvmlShutdown)
        self._lib = None
        result = summarize(self._samples, [i for i, _ in self._handles],
                           process_tracked=self._pids_provider is not None, max_sm_clock_mhz=self._max_sm_clock)
        result.started_at, result.stopped_at = self._started_at, stopped_at
        if result.available:
            result.metrics.update(energy.metrics)
            result.per_gpu.update(energy.per_gpu)
            result.unavailable_metrics.update(energy.unavailable)
        return result


# (field, catalog key prefix, statistics wanted)
_STATS: list[tuple[str, str, tuple[str, ...]]] = [
    ("util_pct", "gpu_util_pct", ("mean", "p50", "p95", "peak")),
    ("mem_used_gib", "vram_used_gib", ("mean", "peak")),
    ("mem_process_gib", "vram_process_gib", ("peak",)),
    ("power_w", "power_w", ("mean", "peak")),
    ("sm_clock_mhz", "sm_clock_mhz", ("mean",)),
    ("temperature_c", "temperature_c", ("peak",)),
]


def _stats(values: list[float], wanted: tuple[str, ...]) -> dict[str, float]:
    arr = np.asarray(values, dtype=float)
    funcs = {"mean": arr.mean, "peak": arr.max, "p50": lambda: np.percentile(arr, 50),
             "p95": lambda: np.percentile(arr, 95)}
    return {w: float(funcs[w]()) for w in wanted}


def summarize(samples: list[NvmlSample], gpu_indices: list[int], process_tracked: bool = True,
              max_sm_clock_mhz: dict[int, float | None] | None = None) -> NvmlResult:
    """Statistics over a window's samples: combined over GPUs per tick (see the module doc), and per GPU."""
    if not samples:
        return NvmlResult(available=False, reason="no NVML sample was taken in the window",
                          gpu_indices=gpu_indices)
    by_tick: dict[float, list[NvmlSample]] = {}
    for s in samples:
        by_tick.setdefault(s.t, []).append(s)
    result = NvmlResult(available=True, samples=list(samples), gpu_indices=gpu_indices,
                        clock_events=clock_event_shares(samples, gpu_indices, max_sm_clock_mhz))
    if result.clock_events.samples:
        result.metrics.update(result.clock_events.metrics())
        result.per_gpu.update(result.clock_events.per_gpu())
    else:
        result.unavailable_metrics.update({k: "the GPU does not report clock-event (throttle) reasons"
                                           for k in THROTTLE_KEYS.values()})
    for name, prefix, wanted in _STATS:
        combined = []
        for tick in by_tick.values():
            values = [getattr(s, name) for s in tick if getattr(s, name) is not None]
            if values:
                combined.append(_COMBINE[name](values))
        if not combined:
            if name == "mem_process_gib" and not process_tracked:
                why = "no vLLM process tree was given to the sampler"
            elif name == "mem_process_gib":
                why = ("no GPU compute process belongs to the vLLM process tree (PIDs hidden by a container "
                       "PID namespace, or the driver withholds per-process memory)")
            else:
                why = "the GPU does not report this field"
            result.unavailable_metrics.update({f"{prefix}_{w}": why for w in wanted})
            continue
        for stat, value in _stats(combined, wanted).items():
            result.metrics[f"{prefix}_{stat}"] = value
        for gpu in gpu_indices:
            values = [getattr(s, name) for s in samples if s.gpu == gpu and getattr(s, name) is not None]
            if values:
                for stat, value in _stats(values, wanted).items():
                    result.per_gpu[f"{prefix}_{stat}[gpu{gpu}]"] = value
    return result
