"""The load side: requests of exact length (``prompts``, ``schedule``), how they are sent (``request``, ``sse``,
``fasthttp``, ``client``), the async engine (``drivers``, ``warmup``, ``engine``, ``sweep``) and Locust
(``locust_runner``; ``locust_user`` only inside a Locust process).

Imports run one way: ``perfgate.core.records`` and ``perfgate.load.metrics`` sit below this package and import
nothing of it, so this flat API imports the engine directly.
"""

from __future__ import annotations

from perfgate.core.records import ERROR_CLASSES, RequestRecord, RequestSpec
from perfgate.load.client import make_client
from perfgate.load.drivers import closed_loop, open_loop
from perfgate.load.engine import LoadResult, run_load
from perfgate.load.prompts import Prompt, PromptBuilder, load_tokenizer
from perfgate.load.request import send_request
from perfgate.load.schedule import arrival_offsets, request_specs
from perfgate.load.sweep import SweepPoint, SweepResult, check_bounds, run_sweep
from perfgate.load.warmup import warm_up

__all__ = ["ERROR_CLASSES", "LoadResult", "Prompt", "PromptBuilder", "RequestRecord", "RequestSpec", "SweepPoint",
           "SweepResult", "arrival_offsets", "check_bounds", "closed_loop", "load_tokenizer", "make_client",
           "open_loop", "request_specs", "run_load", "run_sweep", "send_request", "warm_up"]
