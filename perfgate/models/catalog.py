"""The synthetic model catalogue: exact architectures, by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SyntheticModel:
    name: str
    description: str
    config: dict[str, Any]
    # Special tokens and their ids. Qwen3's own ids are kept so generation_config matches the real model.
    bos: tuple[str, int]
    eos: tuple[str, int]
    im_start: tuple[str, int]
    extra_words: tuple[str, ...] = field(default=("system", "user", "assistant"))


def _qwen3(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "head_dim": 128,
        "hidden_act": "silu",
        "hidden_size": 2560,
        "initializer_range": 0.02,
        "intermediate_size": 9728,
        "max_position_embeddings": 262144,
        "max_window_layers": 36,
        "num_attention_heads": 32,
        "num_hidden_layers": 36,
        "num_key_value_heads": 8,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 5000000,
        "sliding_window": None,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": 151936,
    }
    config.update(overrides)
    return config


SYNTHETIC_MODELS: dict[str, SyntheticModel] = {
    m.name: m
    for m in (
        SyntheticModel(
            name="qwen3-4b-instruct-2507",
            description="Qwen3-4B-Instruct-2507's exact architecture (36 layers, hidden 2560, 8 KV heads, "
                        "vocab 151,936, tied embeddings, rope theta 5e6, 262,144 positions, bf16)",
            config=_qwen3(),
            bos=("<|endoftext|>", 151643),
            eos=("<|im_end|>", 151645),
            im_start=("<|im_start|>", 151644),
        ),
        SyntheticModel(
            name="tiny",
            description="a 2-layer Qwen3 (hidden 256, 4 heads, 2 KV heads, vocab 4,096) that serves on two CPU cores",
            config=_qwen3(hidden_size=256, intermediate_size=512, num_hidden_layers=2, max_window_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=64, vocab_size=4096,
                          max_position_embeddings=4096, rope_theta=1000000, bos_token_id=4093,
                          eos_token_id=4095),
            bos=("<|endoftext|>", 4093),
            eos=("<|im_end|>", 4095),
            im_start=("<|im_start|>", 4094),
        ),
    )
}
