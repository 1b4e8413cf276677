"""Where a phase's prompts come from: the scenario's seed, the run's nonce and the repeat index.

vLLM caches the KV blocks of every prompt it has seen (automatic prefix caching), so a repeat that
re-sends an earlier repeat's prompts measures a warm cache, not the workload (H200: 94 % of prompt
tokens served from the cache, +28 % throughput, -67 % median TTFT). Every random draw of a phase is
therefore seeded by ``seed:nonce:repeat:name``: a fresh nonce per run and a repeat index per phase give
prompts no earlier request on that server sent, while the same three values rebuild byte-identical ones.
"""

from __future__ import annotations

import random
import secrets
from dataclasses import asdict, dataclass
from typing import Any


def new_nonce() -> str:
    """A fresh run nonce (8 hex digits): prompts of this run differ from every earlier run's."""
    return secrets.token_hex(4)


@dataclass(frozen=True)
class PromptStream:
    """The seed material of one phase's prompts (``as_dict()`` is recorded with the phase)."""

    seed: int
    nonce: str
    repeat: int = 0

    def rng(self, name: str) -> random.Random:
        """The random source of one named stream ("<scenario>:measure", "<scenario>:warmup0", ...)."""
        return random.Random(f"{self.seed}:{self.nonce}:{self.repeat}:{name}")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
