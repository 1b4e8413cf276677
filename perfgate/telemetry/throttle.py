"""Clock-event (throttle) reasons: why the GPU held its clocks down during a measured window.

The NVML sampler reads ``nvmlDeviceGetCurrentClocksEventReasons`` (``...ClocksThrottleReasons`` in older
nvidia-ml-py and drivers) with every sample: a bitmask of the reasons active at that instant. Per phase and
GPU, each reason's share of the samples is kept.

Only power and thermal reasons are throttling — the card ran slower than the server asked for because it hit
its power cap or got too hot, so the figures describe the room, not the server:

    SW power cap 0x4, HW slowdown 0x8, SW thermal slowdown 0x20, HW thermal slowdown 0x40, HW power brake 0x80

GPU idle, application clocks, sync boost and display clocks are the card's normal state (idle between
requests, clocks an operator pinned), recorded in the phase's notes and never judged.

A throttling reason counts in a sample only when that sample's SM clock is more than ``HELD_DOWN_FRACTION``
(2 %) below the GPU's maximum SM clock (where NVML reports both): NVML raises "SW power cap" while the
clock is still one step below its maximum. Measured on an H200 (vLLM 0.25.1, chat at 48 req/s): 11 of 182
samples flagged SW power cap, 10 of them at 1,965 MHz against a 1,980 MHz maximum (-0.8 %), the window's
mean clock 1,978.7 MHz; by the flag alone that window was "throttled" in 6 % of samples, by its clocks in
0.5 %. At 64 req/s the flagged samples went down to 1,860 MHz (-6 %): that is throttling.

A phase is INVALID when any throttling reason held the clocks down in more than ``limit_pct`` of one GPU's samples
(``[tool.perfgate.gate] throttle_limit_pct``, default 5 %). Not zero: one sample (100 ms) can catch a
brief excursion — a burst of prefills pushing power over the cap for a moment — that barely moves the
window's figures, and a zero limit would discard such a phase; 5 % of a 60 s window is 3 s of held-down
clocks, which is throttling that shows in the figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

DEFAULT_THROTTLE_LIMIT_PCT = 5.0
HELD_DOWN_FRACTION = 0.02  # a flagged sample counts when its SM clock is below (1 - this) x the maximum

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
    # gpu -> bit -> share; a throttling bit counts only in samples whose clock it held down
    shares: dict[int, dict[int, float]] = field(default_factory=dict)
    # gpu -> throttling bit -> share of samples flagged at all (the clock held down or not), for the note
    flagged: dict[int, dict[int, float]] = field(default_factory=dict)

    def metrics(self) -> dict[str, float]:
        """``THROTTLE_KEYS`` in % of samples, the worst GPU's (empty when no GPU reported reasons)."""
        if not self.samples:
            return {}
        return {key: 100.0 * max(self.shares.get(g, {}).get(bit, 0.0) for g in self.samples)
                for bit, key in THROTTLE_KEYS.items()}

    def per_gpu(self) -> dict[str, float]:
        return {f"{key}[gpu{g}]": 100.0 * self.shares.get(g, {}).get(bit, 0.0)
                for g in self.samples for bit, key in THROTTLE_KEYS.items()}


def _held_down(sample: Any, max_clock: float | None) -> bool:
    """Whether the sample's SM clock sits clearly below the maximum; unknown clocks count as held down."""
    clock = getattr(sample, "sm_clock_mhz", None)
    if clock is None or not max_clock:
        return True
    return clock < (1.0 - HELD_DOWN_FRACTION) * max_clock


def clock_event_shares(samples: Iterable[Any], gpu_indices: Sequence[int],
                       max_sm_clock_mhz: Mapping[int, float | None] | None = None) -> ClockEventShares:
    """Count each reason bit over the samples (``NvmlSample``-like: ``gpu``, ``clock_event_reasons``,
    ``sm_clock_mhz``); a throttling bit only where the clock was held down (see the module doc)."""
    counts: dict[int, dict[int, int]] = {}
    flagged: dict[int, dict[int, int]] = {}
    read: dict[int, int] = {}
    max_clocks = max_sm_clock_mhz or {}
    for s in samples:
        mask = getattr(s, "clock_event_reasons", None)
        if mask is None or s.gpu not in gpu_indices:
            continue
        read[s.gpu] = read.get(s.gpu, 0) + 1
        per, flags = counts.setdefault(s.gpu, {}), flagged.setdefault(s.gpu, {})
        held = _held_down(s, max_clocks.get(s.gpu))
        bit = 1
        while bit <= mask:
            if mask & bit:
                throttling = CLOCK_EVENT_REASONS.get(bit, ("", False))[1]
                if throttling:
                    flags[bit] = flags.get(bit, 0) + 1
                if held or not throttling:
                    per[bit] = per.get(bit, 0) + 1
            bit <<= 1
    return ClockEventShares(samples=read,
                            shares={g: {b: c / read[g] for b, c in sorted(per.items())} for g, per in counts.items()},
                            flagged={g: {b: c / read[g] for b, c in sorted(per.items())} for g, per in flagged.items()})


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
        if held_less := [f"{reason_name(b)} flagged in {_pct(f)}" for b, f in shares.flagged.get(g, {}).items()
                         if f > active.get(b, 0.0)]:
            listed += (", " if listed else "") + "; ".join(held_less) + (
                f" (counted only where the SM clock was over {HELD_DOWN_FRACTION:.0%} below its maximum)")
        parts.append(f"GPU {g}: {listed or 'none'}")
    note = (f"clock-event reasons, share of {sum(shares.samples.values())} NVML samples: " + "; ".join(parts)
            + f" (power/thermal throttling above {limit_pct:g}% makes the phase invalid)")
    return reasons, note
