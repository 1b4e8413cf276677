"""The load generator: requests (``request``), prompts of exact length (``prompts``), the engine (``engine``).

Flat public API; the engine's names are imported lazily because ``perfgate.metrics`` (which the engine
uses) imports ``perfgate.load.request``.
"""

from __future__ import annotations

from typing import Any

from perfgate.load.prompts import Prompt, PromptBuilder, load_tokenizer
from perfgate.load.request import ERROR_CLASSES, RequestRecord, RequestSpec, send_request

_ENGINE = ("LoadResult", "SweepPoint", "SweepResult", "arrival_offsets", "check_bounds", "closed_loop",
           "make_client", "open_loop", "request_specs", "run_load", "run_sweep")

__all__ = ["ERROR_CLASSES", "LoadResult", "Prompt", "PromptBuilder", "RequestRecord", "RequestSpec", "SweepPoint",
           "SweepResult", "arrival_offsets", "check_bounds", "closed_loop", "load_tokenizer", "make_client",
           "open_loop", "request_specs", "run_load", "run_sweep", "send_request"]


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        from perfgate.load import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'perfgate.load' has no attribute '{name}'")
