"""One timeline per phase: what the client did, what the GPUs did and what the scheduler did, on one clock.

Every stamp is ``time.time()`` (unix seconds) — the load engine's request events, the NVML samples and
the /metrics samples all use it — so a plot needs only ``t - t0``. Saved as JSON next to the phase's
results for the report's plots.

Layout (``schema_version`` 1)::

    {"schema_version": 1, "clock": "unix seconds (time.time())", "t0": <window start>,
     "window": {"start": .., "end": ..},
     "load":   [{"scheduled": .., "sent": .., "first_token": .., "end": .., ...}, ...],
     "nvml":   {"available": bool, "reason": str, "gpus": [0, 1], "samples": [{"t", "gpu", "util_pct",
                "mem_used_gib", "mem_process_gib", "power_w", "sm_clock_mhz", "temperature_c",
                "clock_event_reasons"}, ...]},
     "server": {"available": bool, "reason": str, "samples": [{"t", "running", "waiting",
                "kv_cache_usage_pct", "requests_completed", "generation_tokens", "preemptions"}, ...]}}
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from perfgate.core.phase import write_json_atomic
from perfgate.telemetry.nvml import NvmlResult
from perfgate.telemetry.prometheus import ServerMetricsResult

TIMELINE_SCHEMA_VERSION = 1
_LOAD_STAMPS = ("scheduled", "sent", "first_token", "end")


def _as_dict(event: Any) -> dict[str, Any]:
    if isinstance(event, dict):
        return dict(event)
    if dataclasses.is_dataclass(event) and not isinstance(event, type):
        return dataclasses.asdict(event)
    raise TypeError(f"a load event must be a dict or a dataclass, got {type(event).__name__}")


def build_timeline(load_events: Iterable[Any] | None, nvml_result: NvmlResult | None,
                   server_result: ServerMetricsResult | None, *,
                   window: tuple[float, float] | None = None) -> dict[str, Any]:
    """Join the three sources; a missing source appears with ``available: false`` and its reason."""
    load = [_as_dict(e) for e in (load_events or [])]
    nvml: dict[str, Any] = {"available": False, "reason": "not sampled", "gpus": [], "samples": []}
    if nvml_result is not None:
        nvml = {"available": nvml_result.available, "reason": nvml_result.reason,
                "gpus": list(nvml_result.gpu_indices), "samples": nvml_result.samples_as_dicts()}
    server: dict[str, Any] = {"available": False, "reason": "not scraped", "samples": []}
    if server_result is not None:
        server = {"available": server_result.available, "reason": server_result.reason,
                  "samples": list(server_result.samples)}

    if window is None:  # the span of everything recorded
        stamps = [s["t"] for s in nvml["samples"]] + [s["t"] for s in server["samples"]]
        stamps += [e[k] for e in load for k in _LOAD_STAMPS if isinstance(e.get(k), (int, float))]
        window = (min(stamps), max(stamps)) if stamps else (0.0, 0.0)
    return {
        "schema_version": TIMELINE_SCHEMA_VERSION,
        "clock": "unix seconds (time.time())",
        "t0": window[0],
        "window": {"start": window[0], "end": window[1]},
        "load": load,
        "nvml": nvml,
        "server": server,
    }


def write_timeline(path: Path | str, timeline: dict[str, Any]) -> Path:
    """Write atomically (a reader never sees half a file); returns the path."""
    path = Path(path)
    write_json_atomic(path, timeline)
    return path
