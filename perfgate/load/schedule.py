"""What a scenario sends and when: its requests, drawn from a prompt stream, and the open loop's arrival times.

The same ``PromptStream`` and part name rebuild byte-identical requests; every other part (warm-up batches,
sweep points, Locust workers) gets prompts no earlier request sent (vLLM's prefix cache would serve them).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import numpy as np

from perfgate.core.records import RequestSpec
from perfgate.load.prompts import PromptBuilder
from perfgate.load.scenario import Scenario
from perfgate.load.stream import PromptStream


def arrival_offsets(n: int, rate: float, burstiness: float, seed: int) -> list[float]:
    """Seconds from the window start at which each request is due (vLLM's ``get_request`` schedule)."""
    gaps = np.random.default_rng(seed).gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=n)
    offsets = np.cumsum(gaps)
    if n and offsets[-1] > 0:
        offsets *= (n / rate) / offsets[-1]  # so the achieved rate is the asked one, whatever the seed
    return offsets.tolist()


def request_specs(scenario: Scenario, builder: PromptBuilder, model: str, stream: PromptStream,
                  name: str = "measure", count: int | None = None, *,
                  prefix_name: str | None = None) -> Iterator[RequestSpec]:
    """The scenario's requests, drawn from the part ``name`` of ``stream`` ("measure", "warmup0", ...).

    The same stream and name give byte-identical requests; another repeat, nonce, scenario or name gives
    other prompts from their first token. A scenario's ``shared_prefix_tokens`` open every request with one
    prefix, drawn from ``prefix_name`` (default: ``name``): shared within a phase, never across phases.

    The LENGTHS (prompt and output tokens of request i) come from the seed and ``name`` alone (not the nonce
    or the repeat), so every repeat and every run of a scenario is the same workload with other text. Drawn
    per repeat, they made the workload itself vary: on an H200, open-loop chat (outputs 32-512 tokens, 120
    requests) showed 4.9 % repeat-to-repeat CV in output throughput and 9.2 % in median E2E from that alone.
    """
    if not isinstance(stream, PromptStream):
        raise TypeError(f"request_specs needs a PromptStream, not {type(stream).__name__} "
                        "(PromptStream(scenario.seed, new_nonce(), repeat))")
    rng = stream.rng(f"{scenario.name}:{name}")
    lengths = random.Random(f"{stream.seed}:{scenario.name}:{name}:lengths")
    prefix = ""
    if scenario.shared_prefix_tokens:
        prefix = builder.prefix_text(scenario.shared_prefix_tokens,
                                     stream.rng(f"{scenario.name}:{prefix_name or name}:prefix"))
    sampling = scenario.sampling.body()
    for i in itertools.count() if count is None else range(count):
        prompt_len, output_len = scenario.prompt_tokens.sample(lengths), scenario.output_tokens.sample(lengths)
        prompt = builder.build(prompt_len, rng, prefix)
        yield RequestSpec.build(i, model=model, path=scenario.endpoint, prompt_tokens=prompt.tokens,
                                max_tokens=output_len, text=prompt.text,
                                messages=prompt.messages, ignore_eos=scenario.ignore_eos, sampling=sampling)
