"""Energy of a measured window, from NVML's total-energy counter: joules, average power, joules per token.

``nvmlDeviceGetTotalEnergyConsumption`` counts millijoules since the driver loaded (Volta and newer). The
sampler reads it on every GPU it samples at the window's very start and very end; the job's energy is the
sum of the per-GPU differences. This is an integral the driver keeps, so unlike the sampled power
(``power_w_mean``, one reading every 100 ms) it misses no spike between two samples.

- ``energy_j``: the window's energy, summed over GPUs (``energy_j[gpu1]`` per GPU in ``per_gpu``);
- ``avg_power_w``: ``energy_j`` / the seconds between the two readings;
- ``energy_per_output_token_j``: ``energy_j`` / the phase's ``total_output_tokens`` (generated tokens of
  completed requests), added once the load's figures exist (``add_energy_per_token``).

A counter that cannot be read on any GPU leaves all three missing with the reason (half the GPUs' energy is
not the job's). So does one that went backwards (the driver reloaded, or it wrapped) or did not move at all
(a GPU always draws power, so a still counter is not a reading of zero): never a number that passes for one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

ENERGY_KEYS: tuple[str, ...] = ("energy_j", "avg_power_w", "energy_per_output_token_j")
PER_TOKEN_KEY = "energy_per_output_token_j"


@dataclass(frozen=True)
class EnergyReading:
    """The counter of each GPU at one instant: millijoules, or the reason it could not be read."""

    t: float  # time.time() when the counters were read
    mj: dict[int, int] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)


def read_energy(lib: ModuleType, handles: Sequence[tuple[int, Any]]) -> EnergyReading:
    """Read every GPU's total-energy counter now; a GPU that cannot say lands in ``errors``, never raises."""
    t = time.time()
    mj: dict[int, int] = {}
    errors: dict[int, str] = {}
    for index, handle in handles:
        try:
            mj[index] = int(lib.nvmlDeviceGetTotalEnergyConsumption(handle))
        except Exception as exc:  # noqa: BLE001 -- NotSupported (pre-Volta), NoPermission, an old binding
            errors[index] = f"{type(exc).__name__}: {exc}".rstrip(": ")
    return EnergyReading(t, mj, errors)


@dataclass
class WindowEnergy:
    metrics: dict[str, float] = field(default_factory=dict)  # energy_j, avg_power_w
    per_gpu: dict[str, float] = field(default_factory=dict)  # "energy_j[gpu0]": ...
    unavailable: dict[str, str] = field(default_factory=dict)  # each of ENERGY_KEYS -> why, when missing


def window_energy(start: EnergyReading | None, end: EnergyReading | None,
                  gpu_indices: Sequence[int]) -> WindowEnergy:
    """The window's energy from the counters at its start and end, or every energy key missing with why."""
    out = WindowEnergy()
    why = _problem(start, end, gpu_indices)
    if why is not None:
        out.unavailable = {k: why for k in ENERGY_KEYS}
        return out
    assert start is not None and end is not None
    joules = {g: (end.mj[g] - start.mj[g]) / 1000.0 for g in gpu_indices}
    out.metrics["energy_j"] = sum(joules.values())
    out.per_gpu = {f"energy_j[gpu{g}]": j for g, j in joules.items()}
    seconds = end.t - start.t
    if seconds > 0:
        out.metrics["avg_power_w"] = out.metrics["energy_j"] / seconds
    else:
        out.unavailable["avg_power_w"] = "the energy counters were read at the same instant (an empty window)"
    return out


def _problem(start: EnergyReading | None, end: EnergyReading | None,
             gpu_indices: Sequence[int]) -> str | None:
    """Why the window's energy is unknown, or None when every GPU's counter moved forward."""
    if not gpu_indices:
        return "no GPU was sampled"
    if start is None or end is None:
        return "the energy counters were not read at both ends of the window"
    for g in gpu_indices:
        error = start.errors.get(g) or end.errors.get(g)
        if error is not None or g not in start.mj or g not in end.mj:
            return (f"GPU {g} does not report its total energy (nvmlDeviceGetTotalEnergyConsumption: "
                    f"{error or 'no reading'}; the counter needs a Volta or newer GPU)")
        delta = end.mj[g] - start.mj[g]
        if delta < 0:
            return (f"GPU {g}'s energy counter went backwards ({start.mj[g]} mJ at the start, {end.mj[g]} mJ "
                    "at the end: the driver reloaded or the counter wrapped), so the window's energy is "
                    "unknown")
        if delta == 0:
            return (f"GPU {g}'s energy counter did not move in {end.t - start.t:.1f} s (a GPU always draws "
                    "power: the driver does not update it here), so the window's energy is unknown")
    return None


def add_energy_per_token(metrics: dict[str, float], unavailable: dict[str, str]) -> None:
    """``energy_per_output_token_j`` from a phase's ``energy_j`` and ``total_output_tokens`` (both in
    ``metrics``); missing with the reason otherwise. Nothing is added when NVML as a whole was unavailable:
    its source-wide reason (``unavailable["nvml"]``) already explains every NVML key."""
    if PER_TOKEN_KEY in metrics:
        return
    energy, tokens = metrics.get("energy_j"), metrics.get("total_output_tokens")
    if energy is None:
        if "energy_j" in unavailable:
            unavailable[PER_TOKEN_KEY] = unavailable["energy_j"]
        return
    if not tokens or tokens <= 0:
        unavailable[PER_TOKEN_KEY] = "no output tokens were generated by completed requests in the window"
        return
    metrics[PER_TOKEN_KEY] = energy / tokens
