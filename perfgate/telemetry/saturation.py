"""Is the server over capacity in this phase? So a failed latency SLO says *why* it failed.

Two signs, from the /metrics samples of the window:

- **preemption**: vLLM evicted running requests because the KV cache was full (they are recomputed
  later, which costs latency);
- **a growing waiting queue**: requests arrived faster than the server finished them. Judged over the
  part of the window in which the client was still sending (pass ``send_end``), because once sending
  stops every queue drains and the tail of the window would hide the growth. "Growing" means: the mean of
  the last third is above the mean of the first third by at least ``min_growth`` requests and by
  ``min_growth_ratio``, the least-squares slope is positive, and the peak reaches ``min_peak``.

Too few samples -> ``saturated=None`` (not judged), never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class SaturationThresholds:
    min_samples: int = 6  # at least two per third
    min_peak: float = 2.0  # a queue of one request now and then is normal scheduling
    min_growth: float = 1.0  # requests, last-third mean minus first-third mean
    min_growth_ratio: float = 1.5  # last-third mean / first-third mean (first third 0 counts as growth)


DEFAULT_THRESHOLDS = SaturationThresholds()


@dataclass
class SaturationVerdict:
    saturated: bool | None
    reasons: list[str] = field(default_factory=list)


def assess_saturation(rows: list[dict[str, Any]], preemptions: float | None, *,
                      send_end: float | None = None,
                      thresholds: SaturationThresholds = DEFAULT_THRESHOLDS) -> SaturationVerdict:
    """``rows``: /metrics samples (``t``, ``waiting``) as ``ServerMetricsResult.samples`` holds them."""
    reasons: list[str] = []
    if preemptions:
        reasons.append(f"the server preempted {preemptions:.0f} request(s) in the window: the KV cache was "
                       "full, so running requests were evicted and recomputed")

    points = [(r["t"], float(r["waiting"])) for r in rows
              if r.get("waiting") is not None and (send_end is None or r["t"] <= send_end)]
    if len(points) < thresholds.min_samples:
        if reasons:
            return SaturationVerdict(True, reasons)
        why = (f"only {len(points)} waiting-queue sample(s) while the client was sending "
               f"(need {thresholds.min_samples}): saturation not judged")
        return SaturationVerdict(None, [why])

    t = np.array([p[0] for p in points])
    waiting = np.array([p[1] for p in points])
    third = len(waiting) // 3
    first, last = float(waiting[:third].mean()), float(waiting[-third:].mean())
    peak = float(waiting.max())
    slope = float(np.polyfit(t - t[0], waiting, 1)[0]) if np.ptp(t) > 0 else 0.0
    grows = (last - first >= thresholds.min_growth
             and (first == 0 or last / first >= thresholds.min_growth_ratio)
             and slope > 0 and peak >= thresholds.min_peak)
    if grows:
        reasons.append(f"the waiting queue grew through the window, from {first:.1f} requests (first third) "
                       f"to {last:.1f} (last third), peak {peak:.0f}, +{slope:.2f} requests/s: requests "
                       "arrived faster than the server finished them")
    return SaturationVerdict(bool(reasons), reasons)
