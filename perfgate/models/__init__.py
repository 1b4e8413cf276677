"""Synthetic models: a real architecture's ``config.json`` plus a tokenizer, served with
``--load-format dummy`` (random weights of the real shapes: same memory, same speed, no download).

``resolve_model("synthetic:qwen3-4b-instruct-2507")`` writes the model directory once into the cache and
returns its path; a local directory is returned as it is; anything else is taken as a hub id.
"""

from __future__ import annotations

from perfgate.models.catalog import SYNTHETIC_MODELS, SyntheticModel
from perfgate.models.synth import models_cache_dir, resolve_model, write_model

__all__ = ["SYNTHETIC_MODELS", "SyntheticModel", "models_cache_dir", "resolve_model", "write_model"]
