"""Clock-event (throttle) reasons: why the GPU held its clocks down during a measured window.

The NVML sampler reads ``nvmlDeviceGetCurrentClocksEventReasons`` (``...ClocksThrottleReasons`` in older
nvidia-ml-py and drivers) with every sample: a bitmask of the reasons active at that instant. Per phase and
GPU, each reason's share of the samples is kept.

Only power and thermal reasons are throttling — the card ran slower than the server asked for because it hit
its power cap or got too hot, so the figures describe the room, not the server:

    SW power cap 0x4, HW slowdown 0x8, SW thermal slowdown 0x20, HW thermal slowdown 0x40, HW power brake 0x80

GPU idle, application clocks, sync boost and display clocks are the card's normal state (idle between
requests, clocks an operator pinned), recorded in the phase's notes and never judged.

A phase is INVALID when any throttling reason was active in more than ``limit_pct`` of one GPU's samples
(``[tool.perfgate.gate] throttle_limit_pct``, default 5 %). Not zero: one sample (100 ms) can catch a
brief excursion — a burst of prefills pushing power over the cap for a moment — that barely moves the
window's figures, and a zero limit would discard such a phase; 5 % of a 60 s window is 3 s of held-down
clocks, which is throttling that shows in the figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

DEFAULT_THROTTLE_LIMIT_PCT = 5.0

# bit -> (name, is it throttling). Names as nvidia-smi -q prints them, shortened.
CLOCK_EVENT_REASONS: dict[int, tuple[str, bool]] = {
    0x1: ("GPU idle", False),
    0x2: ("application clocks setting", False),
    0x4: ("SW power cap", True),
    0x8: ("HW slowdown", True),
    0x10: ("sync boost", False),
    0x20: ("SW thermal slowdown", True),
    0x40: ("HW thermal slowdown", True),
    0x80: ("HW power brake", True),
    0x100: ("display clock setting", False),
}
# The phase metric of each throttling reason: its share of samples (%) on the worst GPU.
THROTTLE_KEYS: dict[int, str] = {
    0x4: "throttle_sw_power_cap_pct",
    0x8: "throttle_hw_slowdown_pct",
    0x20: "throttle_sw_thermal_pct",
    0x40: "throttle_hw_thermal_pct",
    0x80: "throttle_hw_power_brake_pct",
}
_READERS = ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons")


def read_clock_event_reasons(lib: ModuleType, handle: Any) -> int | None:
    """The active reasons' bitmask now, None where neither NVML call answers (not supported, too old)."""
    for name in _READERS:
        fn = getattr(lib, name, None)
        if fn is None:
            continue
        try:
            return int(fn(handle))
        except Exception:  # noqa: BLE001, S112 -- FunctionNotFound (old driver), NotSupported: try the next
            continue
    return None


def reason_name(bit: int) -> str:
    return CLOCK_EVENT_REASONS.get(bit, (f"reason 0x{bit:x}", False))[0]


def _pct(share: float) -> str:
    """A share as a percent a reader compares with the limit: ``23%``, ``5.4%`` (not a rounded ``5%``)."""
    v = 100.0 * share
    return f"{v:.0f}%" if v >= 10 or v == 0 else f"{v:.1f}%"


def throttled_text(metrics: dict[str, float]) -> str:
    """``SW power cap 23.0%, HW slowdown 1.2%`` from a phase's ``THROTTLE_KEYS`` (those seen), else ``""``."""
    return ", ".join(f"{reason_name(bit)} {metrics[key]:.1f}%" for bit, key in THROTTLE_KEYS.items()
                     if metrics.get(key))


@dataclass
class ClockEventShares:
    """Per GPU: how many samples read the reasons, and each active reason's share of them (0..1)."""

    samples: dict[int, int] = field(default_factory=dict)
    shares: dict[int, dict[int, float]] = field(default_factory=dict)  # gpu -> bit -> share

    def metrics(self) -> dict[str, float]:
        """``THROTTLE_KEYS`` in % of samples, the worst GPU's (empty when no GPU reported reasons)."""
        if not self.samples:
            return {}
        return {key: 100.0 * max(self.shares.get(g, {}).get(bit, 0.0) for g in self.samples)
                for bit, key in THROTTLE_KEYS.items()}

    def per_gpu(self) -> dict[str, float]:
        return {f"{key}[gpu{g}]": 100.0 * self.shares.get(g, {}).get(bit, 0.0)
                for g in self.samples for bit, key in THROTTLE_KEYS.items()}


def clock_event_shares(samples: Iterable[Any], gpu_indices: Sequence[int]) -> ClockEventShares:
    """Count each reason bit over the samples (``NvmlSample``-like: ``gpu`` and ``clock_event_reasons``)."""
    counts: dict[int, dict[int, int]] = {}
    read: dict[int, int] = {}
    for s in samples:
        mask = getattr(s, "clock_event_reasons", None)
        if mask is None or s.gpu not in gpu_indices:
            continue
        read[s.gpu] = read.get(s.gpu, 0) + 1
        per = counts.setdefault(s.gpu, {})
        bit = 1
        while bit <= mask:
            if mask & bit:
                per[bit] = per.get(bit, 0) + 1
            bit <<= 1
    return ClockEventShares(samples=read, shares={g: {b: c / read[g] for b, c in sorted(per.items())}
                                                  for g, per in counts.items()})


def throttle_verdict(shares: ClockEventShares, limit_pct: float = DEFAULT_THROTTLE_LIMIT_PCT
                     ) -> tuple[list[str], str]:
    """(why the phase is invalid — empty when it is not; a note naming every active reason per GPU)."""
    if not shares.samples:
        return [], "clock-event reasons not read (the GPU does not report them)"
    reasons, parts = [], []
    for g in sorted(shares.samples):
        active = shares.shares.get(g, {})
        for bit, share in active.items():
            if CLOCK_EVENT_REASONS.get(bit, ("", False))[1] and 100.0 * share > limit_pct:
                reasons.append(f"GPU {g} throttled by {reason_name(bit)} in {_pct(share)} of samples "
                               f"(limit {limit_pct:g}%): its clocks were held down by power or heat, so the "
                               "figures describe the room, not the server")
        listed = ", ".join(f"{reason_name(b)} {_pct(s)}" for b, s in active.items())
        parts.append(f"GPU {g}: {listed or 'none'}")
    note = (f"clock-event reasons, share of {sum(shares.samples.values())} NVML samples: " + "; ".join(parts)
            + f" (power/thermal throttling above {limit_pct:g}% makes the phase invalid)")
    return reasons, note
