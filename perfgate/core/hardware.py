"""GPU classes: how a card's NVML name maps to the key SLOs and baselines use, and its peak figures.

Peaks are datasheet dense bf16 tensor TFLOP/s (no sparsity) and HBM/GDDR bandwidth; MFU and MBU are
reported against them. A card that is not in the table gets the class ``other`` and no peaks, so
MFU/MBU are reported unavailable rather than against a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class GpuClass:
    key: str  # the key used in slos/, baselines/ and profiles' [gpu.<key>] overrides
    pattern: str  # regex over the NVML device name
    memory_gib: float  # nominal memory, for `perfgate doctor --gpu-class`
    bf16_tflops: float
    mem_bandwidth_gbs: float


GPU_CLASSES: tuple[GpuClass, ...] = (
    GpuClass("a10g", r"\bA10G\b", 22.5, 125.0, 600.0),
    GpuClass("l4", r"\bL4\b", 22.5, 121.0, 300.0),
    GpuClass("l40s", r"\bL40S\b", 44.5, 362.0, 864.0),
    GpuClass("a100-40gb", r"\bA100\b.*\b40GB\b", 39.5, 312.0, 1555.0),
    GpuClass("a100", r"\bA100\b", 79.2, 312.0, 2039.0),
    GpuClass("h100-pcie", r"\bH100\b.*\bPCIe\b", 79.6, 756.0, 2000.0),
    GpuClass("h100", r"\bH100\b", 79.6, 989.0, 3350.0),
    GpuClass("h200", r"\bH200\b", 140.4, 989.0, 4800.0),
)

CPU_CLASS = "cpu"
OTHER_CLASS = "other"


def classify(device_name: str) -> str:
    """``"NVIDIA H100 80GB HBM3"`` -> ``"h100"``; unknown cards -> ``"other"``."""
    for gpu in GPU_CLASSES:
        if re.search(gpu.pattern, device_name, re.IGNORECASE):
            return gpu.key
    return OTHER_CLASS


def gpu_class(key: str) -> GpuClass | None:
    return next((g for g in GPU_CLASSES if g.key == key), None)


def known_class_keys() -> list[str]:
    return [g.key for g in GPU_CLASSES] + [CPU_CLASS]


def parse_memory(text: str) -> float:
    """``"24GiB"``, ``"24 GB"``, ``"80g"`` or ``"24"`` -> GiB as float. GB is read as GiB's decimal cousin."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(gib|gb|g|mib|mb|m)?\s*", text, re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot read {text!r} as a memory size; write e.g. 24GiB, 80GB or 81559MiB")
    value, unit = float(m.group(1)), (m.group(2) or "gib").lower()
    if unit in ("gib", "g"):
        return value
    if unit == "gb":
        return value * 1e9 / 2**30
    if unit == "mib" or unit == "m":
        return value / 1024
    return value * 1e6 / 2**30  # mb
