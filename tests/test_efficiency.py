"""MBU/MFU arithmetic with known numbers, and the saturation check on synthetic /metrics series."""

from __future__ import annotations

import json

import pytest

from perfgate.telemetry.efficiency import (
    ModelShape,
    compute_efficiency,
    estimate_work,
    load_model_shape,
    model_shape,
)
from perfgate.telemetry.saturation import assess_saturation

QWEN3_4B = {"hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32,
            "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 9728, "vocab_size": 151936,
            "torch_dtype": "bfloat16", "tie_word_embeddings": True}


# --- model shape ----------------------------------------------------------------------------------

def test_qwen3_4b_shape_matches_the_known_kv_size_and_weights() -> None:
    shape = model_shape(QWEN3_4B)
    assert shape.kv_bytes_per_token == 144 * 1024  # 36 layers x 8 KV heads x 128 x 2 (K,V) x 2 B
    # q,o: 2560*4096*2; k,v: 2560*1024*2; MLP: 3*2560*9728; x36 layers; + lm_head 151936*2560
    assert shape.layer_params == 36 * (2560 * 4096 * 2 + 2560 * 1024 * 2 + 3 * 2560 * 9728)
    assert shape.weight_bytes_per_step == (shape.layer_params + 151936 * 2560) * 2


def test_shape_reads_text_config_and_defaults() -> None:
    cfg = {"text_config": {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                           "intermediate_size": 128, "vocab_size": 100}}
    shape = model_shape(cfg)
    assert shape.kv_heads == 4 and shape.head_dim == 16 and shape.dtype_bytes == 2.0
    assert model_shape(cfg, dtype="float32").dtype_bytes == 4.0


@pytest.mark.parametrize("cfg, words", [
    ({**QWEN3_4B, "num_experts": 128}, "mixture-of-experts"),
    ({k: v for k, v in QWEN3_4B.items() if k != "intermediate_size"}, "intermediate_size"),
    ({**QWEN3_4B, "torch_dtype": "int3"}, "unknown dtype"),
])
def test_shape_errors_name_the_problem(cfg: dict, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        model_shape(cfg)


def test_load_model_shape_names_the_file(tmp_path) -> None:
    with pytest.raises(ValueError, match="config.json"):
        load_model_shape(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_4B))
    assert load_model_shape(tmp_path).layers == 36


# --- the estimate ---------------------------------------------------------------------------------

def test_estimate_by_hand() -> None:
    shape = ModelShape(hidden=10, layers=1, heads=1, kv_heads=1, head_dim=10, intermediate=10, vocab=5,
                       dtype_bytes=2.0)
    # layer params: q,o 10*10*2=200; k,v 200; MLP 3*10*10=300 -> 700. lm_head 50.
    assert shape.layer_params == 700 and shape.lm_head_params == 50
    flops, moved = estimate_work(shape, requests=2, prompt_tokens=8, generation_tokens=4, engine_steps=3,
                                 tensor_parallel_size=1)
    # per request P=4, G=2: fed 4+2-1=5 -> 10 for two; context 2*(8+8+2)=36
    assert flops == 2 * 700 * 10 + 2 * 50 * 4 + 4 * 1 * 1 * 10 * 36
    # 3 steps x 750 params x 2 B + KV 40 B/token x 2 x (4 + 8 + 2)
    assert moved == 3 * 750 * 2 + 40 * 2 * 14
    flops_tp, moved_tp = estimate_work(shape, requests=2, prompt_tokens=8, generation_tokens=4,
                                       engine_steps=3, tensor_parallel_size=2)
    assert (flops_tp, moved_tp) == (flops / 2, moved / 2)


# --- MBU / MFU ------------------------------------------------------------------------------------

def test_counters_give_mbu_and_mfu_against_the_class_peaks() -> None:
    # A10G: 125 TFLOP/s bf16, 600 GB/s. 1e15 FLOPs in 10 s = 100 TF/s -> 80 %.
    # (2.5e12 read + 0.5e12 written) in 10 s = 300 GB/s -> 50 %.
    res = compute_efficiency("a10g", 10.0, {"flops_per_gpu": 1e15, "read_bytes_per_gpu": 2.5e12,
                                            "write_bytes_per_gpu": 0.5e12})
    assert res.source == "vllm-counters"
    assert res.metrics["mfu_pct"] == pytest.approx(80.0)
    assert res.metrics["mbu_pct"] == pytest.approx(50.0)
    assert res.details["achieved_gbs_per_gpu"] == pytest.approx(300.0)


def test_zero_counters_fall_back_to_the_estimate() -> None:
    shape = model_shape(QWEN3_4B)
    deltas = {"flops_per_gpu": 0.0, "read_bytes_per_gpu": 0.0, "requests": 10, "prompt_tokens": 1280,
              "generation_tokens": 2560, "engine_steps": 300}
    res = compute_efficiency("h100", 5.0, deltas, shape=shape)
    assert res.source == "estimate-from-config"
    flops, moved = estimate_work(shape, requests=10, prompt_tokens=1280, generation_tokens=2560,
                                 engine_steps=300)
    assert res.metrics["mfu_pct"] == pytest.approx(100 * flops / 5.0 / 989e12)
    assert res.metrics["mbu_pct"] == pytest.approx(100 * moved / 5.0 / 3350e9)
    # no step count: steps = generated tokens / mean running batch
    no_steps = {k: v for k, v in deltas.items() if k != "engine_steps"}
    by_batch = compute_efficiency("h100", 5.0, no_steps, shape=shape, running_batch_mean=2560 / 300)
    assert by_batch.metrics["mbu_pct"] == pytest.approx(res.metrics["mbu_pct"])


@pytest.mark.parametrize("gpu_class", ["cpu", "other", "b300"])
def test_no_peaks_means_unavailable_with_reason(gpu_class: str) -> None:
    res = compute_efficiency(gpu_class, 10.0, {"flops_per_gpu": 1e15, "read_bytes_per_gpu": 1e12})
    assert res.metrics == {}
    assert gpu_class in res.unavailable["mfu_pct"] and gpu_class in res.unavailable["mbu_pct"]


def test_no_counters_and_no_config_says_how_to_fix() -> None:
    res = compute_efficiency("a10g", 10.0, {"flops_per_gpu": 0.0, "requests": 3})
    assert res.metrics == {}
    assert "--enable-mfu-metrics" in res.unavailable["mbu_pct"]
    assert "config.json" in res.unavailable["mbu_pct"]


# --- saturation -----------------------------------------------------------------------------------

def _rows(waiting: list[float], t0: float = 1000.0, dt: float = 0.5) -> list[dict]:
    return [{"t": t0 + i * dt, "waiting": w, "running": 8.0} for i, w in enumerate(waiting)]


def test_growing_queue_is_saturated_and_says_why() -> None:
    verdict = assess_saturation(_rows([0, 0, 1, 2, 3, 5, 6, 8, 10, 12]), preemptions=0)
    assert verdict.saturated is True
    assert len(verdict.reasons) == 1 and "waiting queue grew" in verdict.reasons[0]


@pytest.mark.parametrize("waiting", [
    [0] * 12,  # idle queue
    [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0],  # normal scheduling jitter
    [4, 4, 4, 4, 4, 4, 4, 4, 4],  # a steady queue (closed loop above max-num-seqs) does not grow
    [6, 5, 4, 3, 2, 1, 0, 0, 0],  # draining
])
def test_stable_or_shrinking_queue_is_not_saturated(waiting: list[float]) -> None:
    verdict = assess_saturation(_rows(waiting), preemptions=0)
    assert verdict.saturated is False and verdict.reasons == []


def test_preemptions_saturate_even_with_few_samples() -> None:
    verdict = assess_saturation(_rows([0, 0]), preemptions=3)
    assert verdict.saturated is True and "preempted 3" in verdict.reasons[0]


def test_too_few_samples_are_not_judged() -> None:
    verdict = assess_saturation(_rows([0, 5, 9]), preemptions=0)
    assert verdict.saturated is None and "not judged" in verdict.reasons[0]


def test_only_the_sending_period_is_judged() -> None:
    # grows while the client sends (t <= 1004.5), then drains after sending stopped
    rows = _rows([0, 1, 2, 4, 6, 8, 10, 12, 14, 16, 10, 4, 0, 0, 0, 0, 0, 0, 0, 0])
    assert assess_saturation(rows, 0, send_end=1004.5).saturated is True
    assert assess_saturation(rows, 0).saturated is False  # the drain hides it without send_end
