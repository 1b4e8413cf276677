"""Telemetry for one measured phase: NVML, vLLM's /metrics, MBU/MFU, saturation, and the timeline.

Usage (what the phase fixture does)::

    tele = Telemetry(server.metrics_url, pids_provider=server.pids, gpu_class=gpu_class,
                     model_dir=model_path)
    await tele.start()            # after warm-up, right before the measured load
    records = await engine.run(...)
    result = await tele.stop(load_events=events)
    result.apply_to(phase)        # metrics, unavailable, saturated -> PhaseResult
    write_timeline(results_dir / "timeline.json", result.timeline(events))

Nothing here raises for a missing GPU, NVML or /metrics: each source that cannot be read lands in
``unavailable`` with the reason (source-wide as ``"nvml"`` / ``"server"``, or per metric key), and its
keys are simply absent from ``metrics`` — never a zero that passes for a reading.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from perfgate.core.catalog import METRICS
from perfgate.telemetry.efficiency import EfficiencyResult, ModelShape, compute_efficiency, load_model_shape
from perfgate.telemetry.nvml import GpuDetection, GpuInfo, NvmlResult, NvmlSampler, detect_gpus
from perfgate.telemetry.prometheus import MetricsScraper, ServerMetricsResult, parse_metrics
from perfgate.telemetry.saturation import (
    DEFAULT_THRESHOLDS,
    SaturationThresholds,
    SaturationVerdict,
    assess_saturation,
)
from perfgate.telemetry.timeline import build_timeline, write_timeline

__all__ = [
    "EfficiencyResult", "GpuDetection", "GpuInfo", "MetricsScraper", "ModelShape", "NvmlResult",
    "NvmlSampler", "SaturationThresholds", "SaturationVerdict", "ServerMetricsResult", "Telemetry",
    "TelemetryResult", "assess_saturation", "build_timeline", "compute_efficiency", "detect_gpus",
    "load_model_shape", "parse_metrics", "unavailable_reason", "write_timeline",
]


@dataclass
class TelemetryResult:
    metrics: dict[str, float] = field(default_factory=dict)  # catalog keys
    unavailable: dict[str, str] = field(default_factory=dict)  # "nvml"/"server" or a metric key -> why
    saturated: bool | None = None
    saturation_reasons: list[str] = field(default_factory=list)
    per_gpu: dict[str, float] = field(default_factory=dict)  # "gpu_util_pct_mean[gpu1]": ...
    efficiency_source: str = ""  # "vllm-counters" | "estimate-from-config" | ""
    efficiency_details: dict[str, float] = field(default_factory=dict)
    window: tuple[float, float] = (0.0, 0.0)  # time.time() at start() and stop()
    # The raw results, for the timeline and for debugging.
    nvml: NvmlResult | None = None
    server: ServerMetricsResult | None = None

    @property
    def timeline_parts(self) -> dict[str, Any]:
        """The NVML and /metrics halves of the timeline (the load events are added by ``timeline()``)."""
        return build_timeline(None, self.nvml, self.server, window=self.window)

    def timeline(self, load_events: Iterable[Any] | None = None) -> dict[str, Any]:
        return build_timeline(load_events, self.nvml, self.server, window=self.window)

    def apply_to(self, phase: Any) -> None:
        """Merge into a ``perfgate.core.phase.PhaseResult`` (metrics, unavailable, saturation, notes)."""
        phase.metrics.update(self.metrics)
        phase.unavailable.update(self.unavailable)
        phase.saturated = self.saturated
        phase.saturation_reasons = list(self.saturation_reasons)
        if self.efficiency_source == "estimate-from-config":
            phase.notes.append("MBU/MFU estimated from config.json and token counts "
                               "(start vLLM with --enable-mfu-metrics for its own counters)")


def unavailable_reason(unavailable: dict[str, str], key: str) -> str | None:
    """Why ``key`` was not measured: its own entry, else its whole source's (``"nvml"``, ``"server"``)."""
    if key in unavailable:
        return unavailable[key]

    spec = METRICS.get(key)
    return unavailable.get(spec.source) if spec is not None else None


class Telemetry:
    """NVML sampler + /metrics scraper for one phase, and the figures derived from both.

    ``gpu_class`` picks the peaks for MBU/MFU (``"cpu"`` -> unavailable); ``model_dir`` (the served model's
    directory) lets MBU/MFU be estimated when vLLM's own counters are off. ``nvml`` injects a stand-in
    NVML module (tests); ``metrics_url=None`` skips /metrics.
    """

    def __init__(self, metrics_url: str | None, *, pids_provider: Callable[[], set[int]] | None = None,
                 gpu_class: str = "cpu", model_dir: str | Path | None = None,
                 nvml_interval_s: float = 0.1, metrics_interval_s: float = 0.5, api_key: str | None = None,
                 gpu_indices: list[int] | None = None, tensor_parallel_size: int = 1,
                 dtype: str | None = None, saturation: SaturationThresholds = DEFAULT_THRESHOLDS,
                 nvml: ModuleType | None = None) -> None:
        self.gpu_class = gpu_class
        self.tensor_parallel_size = tensor_parallel_size
        self._sampler = NvmlSampler(nvml_interval_s, gpu_indices, pids_provider, nvml=nvml)
        self._scraper = (MetricsScraper(metrics_url, metrics_interval_s, api_key=api_key)
                         if metrics_url else None)
        self._thresholds = saturation
        self._shape: ModelShape | None = None
        self._shape_error = "no model directory was given"
        if model_dir is not None:
            try:
                self._shape = load_model_shape(model_dir, dtype)
            except ValueError as exc:
                self._shape_error = str(exc)
        self._started_at = 0.0

    async def start(self) -> None:
        self._started_at = time.time()
        await asyncio.to_thread(self._sampler.start)  # nvmlInit can take a noticeable moment
        if self._scraper is not None:
            await self._scraper.start()

    async def stop(self, load_events: Iterable[Any] | None = None) -> TelemetryResult:
        """End the window. ``load_events`` (with ``sent`` stamps) bound the saturation check to the sending
        period; they are not stored here — pass them to ``TelemetryResult.timeline()``."""
        server = await self._scraper.stop() if self._scraper is not None else None
        nvml = await asyncio.to_thread(self._sampler.stop)
        out = TelemetryResult(window=(self._started_at, time.time()), nvml=nvml, server=server)

        if nvml.available:
            out.metrics.update(nvml.metrics)
            out.per_gpu = dict(nvml.per_gpu)
            out.unavailable.update(nvml.unavailable_metrics)
        else:
            out.unavailable["nvml"] = nvml.reason

        if server is None:
            out.unavailable["server"] = "no /metrics URL was given"
        elif not server.available:
            out.unavailable["server"] = server.reason
        else:
            out.metrics.update(server.metrics)
            out.unavailable.update(server.unavailable_metrics)

        self._efficiency(out, server)
        self._saturation(out, server, load_events)
        return out

    def _efficiency(self, out: TelemetryResult, server: ServerMetricsResult | None) -> None:
        if server is None or not server.available:
            why = "vLLM's /metrics could not be read, so the window's work is unknown"
            out.unavailable.update({"mbu_pct": why, "mfu_pct": why})
            return
        eff = compute_efficiency(self.gpu_class, server.duration_s, server.deltas, shape=self._shape,
                                 shape_error=self._shape_error,
                                 running_batch_mean=server.metrics.get("running_batch_mean"),
                                 tensor_parallel_size=self.tensor_parallel_size)
        out.metrics.update(eff.metrics)
        out.unavailable.update(eff.unavailable)
        out.efficiency_source = eff.source
        out.efficiency_details = eff.details

    def _saturation(self, out: TelemetryResult, server: ServerMetricsResult | None,
                    load_events: Iterable[Any] | None) -> None:
        if server is None or not server.available:
            out.saturated, out.saturation_reasons = None, ["not judged: vLLM's /metrics could not be read"]
            return
        sent = [e.get("sent") if isinstance(e, dict) else getattr(e, "sent", None) for e in (load_events or [])]
        sent_stamps = [s for s in sent if isinstance(s, (int, float))]
        verdict = assess_saturation(server.samples, server.metrics.get("preemptions"),
                                    send_end=max(sent_stamps) if sent_stamps else None,
                                    thresholds=self._thresholds)
        out.saturated, out.saturation_reasons = verdict.saturated, verdict.reasons
