"""MBU and MFU: how much of the chip's memory bandwidth and tensor FLOPs the served model really used.

NVML's "utilization" is the share of time *any* kernel ran; it says 100 % for a GPU that is busy with a
tiny batch. MBU (bytes moved / peak bandwidth) and MFU (FLOPs / peak bf16 FLOPs) say how much work was done,
against the datasheet peaks in ``perfgate.core.hardware``.

Two sources, in this order:

1. vLLM's own estimates, ``vllm:estimated_flops_per_gpu_total`` and ``vllm:estimated_{read,write}_bytes_
   per_gpu_total`` (filled only when the server runs with ``--enable-mfu-metrics``). Bandwidth counts reads
   and writes, as vLLM's own PromQL recipe does.
2. Otherwise an estimate from the model's ``config.json`` and the window's token counts (dense decoder,
   gated MLP — Llama/Qwen/Mistral style; mixture-of-experts configs are not estimated):

   - FLOPs = 2 × layer params × tokens fed through the layers (P + G − 1 per request: the last
     generated token is never fed back) + 2 × lm_head params × G (only sampled positions reach the
     head) + 4 × layers × heads × head_dim × Σ attended context, with Σ context per request
     ≈ P²/2 (causal prefill) + G·P + G²/2 (decode) for mean prompt P and output G. Prefix-cache hits
     are not subtracted (a slight over-estimate with caching on). On the tiny model this matches
     vLLM's own ``estimated_flops`` counter to 0.1 %.
   - bytes = engine steps × weight bytes (every step streams the weights once)
     + KV bytes per token × per-request (P + G·P + G²/2) (prefill writes, decode reads the context).
     Activations are not counted (on the tiny model: 8 % below vLLM's read+write counters; weights
     dominate on real models).
     Engine steps come from ``vllm:iteration_tokens_total``'s count, else generated tokens / mean batch.
   - per GPU: divided by the tensor-parallel size.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfgate._errors import ConfigError
from perfgate.core.hardware import gpu_class as lookup_gpu_class
from perfgate.models.shape import ModelShape
from perfgate.models.shape import model_shape as shared_model_shape


@dataclass
class EfficiencyResult:
    metrics: dict[str, float] = field(default_factory=dict)  # mbu_pct, mfu_pct
    unavailable: dict[str, str] = field(default_factory=dict)  # key -> reason
    source: str = ""  # "vllm-counters" or "estimate-from-config"
    # The figures behind the percentages, kept for the report ("achieved 312 GB/s of 600").
    details: dict[str, float] = field(default_factory=dict)


def model_shape(config: dict[str, Any], dtype: str | None = None) -> ModelShape:
    """The shared config reader (``perfgate.models.shape``), refusing mixture-of-experts configs (their
    active parameters vary per token); ValueError naming what is missing or unsupported."""
    try:
        shape = shared_model_shape(config, dtype)
    except ConfigError as exc:
        raise ValueError(exc.message) from None
    if shape.experts:
        raise ValueError("mixture-of-experts configs are not estimated (active parameters vary per token)")
    return shape


def load_model_shape(model_dir: str | Path, dtype: str | None = None) -> ModelShape:
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    return model_shape(config, dtype)


def estimate_work(shape: ModelShape, *, requests: float, prompt_tokens: float, generation_tokens: float,
                  engine_steps: float, tensor_parallel_size: int = 1) -> tuple[float, float]:
    """(FLOPs per GPU, bytes per GPU) for a window, by the formulas in the module doc."""
    p = prompt_tokens / requests
    g = generation_tokens / requests
    context_attended = requests * (p * p / 2 + g * p + g * g / 2)
    fed = max(0.0, prompt_tokens + generation_tokens - requests)
    flops = (2.0 * shape.layer_params * fed + 2.0 * shape.lm_head_params * generation_tokens
             + 4.0 * shape.layers * shape.heads * shape.head_dim * context_attended)
    kv_traffic = shape.kv_bytes_per_token * requests * (p + g * p + g * g / 2)
    bytes_moved = engine_steps * shape.weight_bytes_per_step + kv_traffic
    return flops / tensor_parallel_size, bytes_moved / tensor_parallel_size


def compute_efficiency(gpu_class: str, duration_s: float, deltas: dict[str, float], *,
                       shape: ModelShape | None = None, shape_error: str = "",
                       running_batch_mean: float | None = None,
                       tensor_parallel_size: int = 1) -> EfficiencyResult:
    """MBU/MFU for one window from /metrics counter deltas (see ``ServerMetricsResult.deltas``)."""
    res = EfficiencyResult()
    peaks = lookup_gpu_class(gpu_class)
    if peaks is None:
        why = f"no peak FLOPs/bandwidth for GPU class {gpu_class!r} (only the cards in perfgate.core.hardware)"
        res.unavailable = {"mbu_pct": why, "mfu_pct": why}
        return res
    if duration_s <= 0:
        res.unavailable = dict.fromkeys(("mbu_pct", "mfu_pct"), "the measured window has no duration")
        return res

    flops = deltas.get("flops_per_gpu", 0.0)
    moved = deltas.get("read_bytes_per_gpu", 0.0) + deltas.get("write_bytes_per_gpu", 0.0)
    if flops > 0 and moved > 0:
        res.source = "vllm-counters"
    else:
        missing = _estimate_blocker(deltas, shape, shape_error, running_batch_mean)
        if missing:
            why = ("vLLM's estimated_* counters are zero or absent (start it with --enable-mfu-metrics) "
                   f"and the estimate cannot be made: {missing}")
            res.unavailable = {"mbu_pct": why, "mfu_pct": why}
            return res
        assert shape is not None
        steps = deltas.get("engine_steps") or deltas["generation_tokens"] / (running_batch_mean or 1.0)
        flops, moved = estimate_work(shape, requests=deltas["requests"], prompt_tokens=deltas["prompt_tokens"],
                                     generation_tokens=deltas["generation_tokens"], engine_steps=steps,
                                     tensor_parallel_size=tensor_parallel_size)
        res.source = "estimate-from-config"
    tflops = flops / duration_s / 1e12
    gbs = moved / duration_s / 1e9
    res.metrics = {"mfu_pct": 100.0 * tflops / peaks.bf16_tflops,
                   "mbu_pct": 100.0 * gbs / peaks.mem_bandwidth_gbs}
    res.details = {"achieved_tflops_per_gpu": tflops, "achieved_gbs_per_gpu": gbs,
                   "peak_bf16_tflops": peaks.bf16_tflops, "peak_mem_bandwidth_gbs": peaks.mem_bandwidth_gbs}
    return res


def _estimate_blocker(deltas: dict[str, float], shape: ModelShape | None, shape_error: str,
                      running_batch_mean: float | None) -> str:
    if shape is None:
        return shape_error or "no model config.json was given"
    if not deltas.get("requests"):
        return "no request completed in the window"
    if "prompt_tokens" not in deltas or "generation_tokens" not in deltas:
        return "the server's token counters are missing"
    if not deltas.get("engine_steps") and not running_batch_mean:
        return "neither the engine step count nor the mean running batch is known"
    return ""
