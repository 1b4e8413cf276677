"""A model's shape from its Hugging Face ``config.json``: the one reader behind the KV doctor, the MBU/MFU
estimate and the physical floors of SLO bounds.

Dense and mixture-of-experts decoders of the Llama/Qwen/Mistral family (gated MLP). MLA attention
(DeepSeek's ``kv_lora_rank``) is refused: its KV size follows other rules. Errors are ``ConfigError``s that
name the file and the missing or unsupported field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perfgate._errors import ConfigError

# Bytes per weight element of the dtypes vLLM serves dense weights in.
WEIGHT_DTYPE_BYTES: dict[str, float] = {"bfloat16": 2.0, "float16": 2.0, "half": 2.0, "float32": 4.0,
                                        "float": 4.0, "fp8": 1.0, "fp8_e4m3": 1.0, "fp8_e5m2": 1.0}


@dataclass(frozen=True)
class ModelShape:
    """What the KV, weight and FLOP arithmetic needs from a decoder's config.json."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    dtype_bytes: float = 2.0
    dtype: str = "bfloat16"  # the checkpoint's torch_dtype (or the dtype asked for)
    tied_embeddings: bool = False
    max_positions: int = 0
    attention_bias: bool = False
    qk_norm: bool = False  # Qwen3: q_norm and k_norm per layer
    experts: int = 0  # 0: dense
    moe_intermediate: int = 0
    path: str = ""

    @classmethod
    def from_dir(cls, model_dir: Path | str, dtype: str | None = None) -> ModelShape:
        return read_model_shape(model_dir, dtype)

    @property
    def layer_params(self) -> float:
        """Matmul parameters of the decoder layers (q, k, v, o and the gated MLP; norms are noise)."""
        attn = self.hidden * self.heads * self.head_dim * 2 + self.hidden * self.kv_heads * self.head_dim * 2
        return float(self.layers * (attn + 3 * self.hidden * self.intermediate))

    @property
    def lm_head_params(self) -> float:
        return float(self.vocab * self.hidden)

    @property
    def weight_bytes_per_step(self) -> float:
        """Weights a dense decode step streams (the embedding table is only gathered, so not counted)."""
        return (self.layer_params + self.lm_head_params) * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        return 2.0 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def params(self) -> int:
        """Every parameter of the decoder (Qwen3-4B: 4.02 B), for dummy weights that have no files."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * q + 2 * self.hidden * kv + q * self.hidden
        if self.attention_bias:
            attention += q + 2 * kv
        if self.qk_norm:
            attention += 2 * self.head_dim
        if self.experts:
            mlp = self.experts * 3 * self.hidden * self.moe_intermediate + self.experts * self.hidden
        else:
            mlp = 3 * self.hidden * self.intermediate  # gate, up, down
        per_layer = attention + mlp + 2 * self.hidden  # + two RMSNorms
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return embeddings + self.layers * per_layer + self.hidden


def model_shape(config: dict[str, Any], dtype: str | None = None, source: str = "config.json") -> ModelShape:
    """Read a config.json dict; ``dtype`` overrides the checkpoint's. ConfigError names what is missing."""
    cfg = config.get("text_config", config)  # multimodal wrappers keep the decoder here
    if "kv_lora_rank" in cfg:
        raise ConfigError("MLA attention (DeepSeek-style kv_lora_rank) is not modelled", source=source,
                          fix="check KV capacity and speed in vLLM's start-up log instead")
    dtype_name = str(dtype or cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16").replace("torch.", "")
    if dtype_name not in WEIGHT_DTYPE_BYTES:
        raise ConfigError(f"unknown dtype {dtype_name!r}", source=source,
                          fix=f"use one of: {', '.join(WEIGHT_DTYPE_BYTES)}")
    try:
        heads, hidden = int(cfg["num_attention_heads"]), int(cfg["hidden_size"])
        layers, vocab = int(cfg["num_hidden_layers"]), int(cfg["vocab_size"])
        intermediate = int(cfg["intermediate_size"])
    except KeyError as exc:
        raise ConfigError(f"config.json has no {exc.args[0]}", source=source,
                          fix="use the model's own config.json") from None
    experts = int(cfg.get("num_experts") or cfg.get("num_local_experts") or cfg.get("n_routed_experts") or 0)
    return ModelShape(hidden=hidden, layers=layers, heads=heads,
                      kv_heads=int(cfg.get("num_key_value_heads") or heads),
                      head_dim=int(cfg.get("head_dim") or hidden // heads), intermediate=intermediate,
                      vocab=vocab, dtype_bytes=WEIGHT_DTYPE_BYTES[dtype_name], dtype=dtype_name,
                      tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
                      max_positions=int(cfg.get("max_position_embeddings") or 0),
                      attention_bias=bool(cfg.get("attention_bias")),
                      qk_norm=cfg.get("model_type") in ("qwen3", "qwen3_moe"), experts=experts,
                      moe_intermediate=int(cfg.get("moe_intermediate_size") or intermediate), path=source)


def read_model_shape(model_dir: Path | str, dtype: str | None = None) -> ModelShape:
    """The shape in ``model_dir/config.json``; ConfigError naming the file when it is absent or broken."""
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("model directory has no config.json", source=str(model_dir),
                          fix="point the profile's `model` at a Hugging Face model directory") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read config.json: {exc}", source=str(path)) from None
    if not isinstance(config, dict):
        raise ConfigError("config.json is not a JSON object", source=str(path))
    return model_shape(config, dtype, source=str(path))
