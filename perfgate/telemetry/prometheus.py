"""vLLM's Prometheus ``/metrics``: what the scheduler did during one measured window.

A "before" snapshot at ``start()``, gauges sampled every ``interval_s`` while the load runs, an "after"
snapshot at ``stop()``. Counters and histograms become window figures as after - before deltas, so
start-up and warm-up traffic never count; gauges (running batch, waiting queue, KV-cache use) become
statistics over the samples. Metric names are checked against vLLM 0.32's source; older names
(``gpu_cache_usage_perc``, ``gpu_prefix_cache_*``, ``time_per_output_token_seconds``) are read too.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

# Each metric: the names vLLM has exposed it under, newest first (without a counter's ``_total``).
RUNNING = ("vllm:num_requests_running",)
WAITING = ("vllm:num_requests_waiting",)
KV_USAGE = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
PREEMPTIONS = ("vllm:num_preemptions",)
PREFIX_HITS = ("vllm:prefix_cache_hits", "vllm:gpu_prefix_cache_hits")
PREFIX_QUERIES = ("vllm:prefix_cache_queries", "vllm:gpu_prefix_cache_queries")
REQUEST_SUCCESS = ("vllm:request_success",)
GENERATION_TOKENS = ("vllm:generation_tokens",)
PROMPT_TOKENS = ("vllm:prompt_tokens",)
FLOPS = ("vllm:estimated_flops_per_gpu",)
READ_BYTES = ("vllm:estimated_read_bytes_per_gpu",)
WRITE_BYTES = ("vllm:estimated_write_bytes_per_gpu",)
# Histograms (name of the family; its samples are <name>_sum / _count).
HISTOGRAM_MEANS_MS = {
    "server_mean_ttft_ms": ("vllm:time_to_first_token_seconds",),
    "server_mean_itl_ms": ("vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"),
    "server_mean_e2el_ms": ("vllm:e2e_request_latency_seconds",),
    "server_mean_queue_ms": ("vllm:request_queue_time_seconds",),
}
ITERATION_TOKENS = ("vllm:iteration_tokens_total",)  # a histogram whose family name ends in _total
# A request that ended this way did not complete from the client's point of view.
_NOT_COMPLETED_REASONS = {"abort", "error"}


@dataclass
class Snapshot:
    """One scrape: sample name -> [(labels, value)], ``_created`` samples dropped."""

    t: float
    samples: dict[str, list[tuple[dict[str, str], float]]]
    scrape_ms: float | None = None  # how long the server took to answer

    @property
    def is_vllm(self) -> bool:
        return any(name.startswith("vllm:") for name in self.samples)

    def _series(self, names: tuple[str, ...], suffixes: tuple[str, ...]) -> list[tuple[dict[str, str], float]] | None:
        for name in names:
            for suffix in suffixes:
                if name + suffix in self.samples:
                    return self.samples[name + suffix]
        return None

    def counter(self, names: tuple[str, ...], exclude: dict[str, set[str]] | None = None) -> float | None:
        """Sum over label sets (engines, finish reasons); counters appear with or without ``_total``."""
        series = self._series(names, ("_total", ""))
        if series is None:
            return None
        exclude = exclude or {}
        return sum(v for labels, v in series if not any(labels.get(k) in bad for k, bad in exclude.items()))

    def series_count(self, names: tuple[str, ...]) -> int:
        return len(self._series(names, ("_total", "")) or ())

    def gauge(self, names: tuple[str, ...], combine: str = "sum") -> float | None:
        series = self._series(names, ("",))
        if not series:
            return None
        values = [v for _, v in series]
        return max(values) if combine == "max" else sum(values)

    def histogram(self, names: tuple[str, ...]) -> tuple[float, float] | None:
        """(sum, count) over label sets."""
        sums, counts = self._series(names, ("_sum",)), self._series(names, ("_count",))
        if sums is None or counts is None:
            return None
        return sum(v for _, v in sums), sum(v for _, v in counts)


def parse_metrics(text: str, t: float | None = None) -> Snapshot:
    """Prometheus text exposition -> Snapshot; ValueError when the text is not Prometheus format."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return Snapshot(t=time.time() if t is None else t, samples=samples)


@dataclass
class ServerMetricsResult:
    available: bool
    reason: str = ""
    metrics: dict[str, float] = field(default_factory=dict)  # catalog keys
    unavailable_metrics: dict[str, str] = field(default_factory=dict)
    # Raw counter deltas over the window, for efficiency.py: flops_per_gpu, read_bytes_per_gpu,
    # write_bytes_per_gpu, engine_steps, prompt_tokens, generation_tokens, requests.
    deltas: dict[str, float] = field(default_factory=dict)
    duration_s: float = 0.0  # after.t - before.t
    samples: list[dict[str, Any]] = field(default_factory=list)  # time series for the timeline
    scrape_errors: list[str] = field(default_factory=list)


# The families a timeline row reads. Each tick parses only these: prometheus_client's parser is pure Python,
# and parsing vLLM's whole /metrics (dozens of histograms) in the sampling thread held the GIL long enough
# to delay the load generator's sends by 100-350 ms on a 2-core machine (an open-loop CPU phase went INVALID).
ROW_FAMILIES = RUNNING + WAITING + KV_USAGE + REQUEST_SUCCESS + GENERATION_TOKENS + PREEMPTIONS


def only_families(text: str, families: tuple[str, ...]) -> str:
    """The lines of a Prometheus text exposition that belong to ``families`` (names, counters without _total)."""
    keep = []
    for line in text.splitlines():
        if line.startswith("#"):
            parts = line.split(" ", 3)
            name = parts[2] if len(parts) > 2 else ""
        else:
            name = line.split("{", 1)[0].split(" ", 1)[0]
        if name.startswith(families):
            keep.append(line)
    return "\n".join(keep) + "\n"


def _sample_row(snap: Snapshot, before: Snapshot) -> dict[str, Any]:
    """The timeline row for one scrape: gauges, and counters as deltas since the window began."""
    kv = snap.gauge(KV_USAGE, combine="max")

    def since(names: tuple[str, ...], **kw: Any) -> float | None:
        now, then = snap.counter(names, **kw), before.counter(names, **kw)
        return None if now is None or then is None else now - then

    return {
        "t": snap.t,
        "scrape_ms": snap.scrape_ms,
        "running": snap.gauge(RUNNING),
        "waiting": snap.gauge(WAITING),
        "kv_cache_usage_pct": kv * 100.0 if kv is not None else None,
        "requests_completed": since(REQUEST_SUCCESS, exclude={"finished_reason": _NOT_COMPLETED_REASONS}),
        "generation_tokens": since(GENERATION_TOKENS),
        "preemptions": since(PREEMPTIONS),
    }


MIN_GAUGE_SAMPLES = 8


def summarize(before: Snapshot, after: Snapshot | None, rows: list[dict[str, Any]],
              after_error: str = "", min_gauge_samples: int = MIN_GAUGE_SAMPLES) -> ServerMetricsResult:
    """Window figures from the two snapshots (deltas) and the sampled rows (gauge statistics)."""
    res = ServerMetricsResult(available=True, samples=rows)
    m, missing = res.metrics, res.unavailable_metrics

    def gauge_stats(column: str, stats: dict[str, str], what: str) -> None:
        values = [r[column] for r in rows if r.get(column) is not None]
        if not values:
            missing.update({k: f"{what} is not in this server's /metrics" for k in stats})
            return
        if len(values) < min_gauge_samples:
            # A P95 or a mean of a handful of instants is luck, not a measurement (a 6 s CPU window
            # sampled every 2 s once read running_batch_p95 = 0 against a baseline of 6.8).
            missing.update({k: f"only {len(values)} /metrics samples in the window (needs "
                               f"{min_gauge_samples}): too few for {stat}" for k, stat in stats.items()})
            return
        arr = np.asarray(values, dtype=float)
        for key, stat in stats.items():
            m[key] = float({"mean": arr.mean(), "p95": np.percentile(arr, 95), "peak": arr.max()}[stat])

    gauge_stats("running", {"running_batch_mean": "mean", "running_batch_p95": "p95"}, RUNNING[0])
    gauge_stats("waiting", {"waiting_queue_mean": "mean", "waiting_queue_peak": "peak"}, WAITING[0])
    gauge_stats("kv_cache_usage_pct", {"kv_cache_usage_pct_peak": "peak"}, KV_USAGE[0])

    counter_keys = ["preemptions", "prefix_cache_hit_pct", "server_requests_completed",
                    "server_generation_tokens", "server_prompt_tokens", "tokens_per_step_mean",
                    *HISTOGRAM_MEANS_MS]
    if after is None:
        missing.update({k: f"the closing /metrics scrape failed ({after_error})" for k in counter_keys})
        return res
    res.duration_s = after.t - before.t

    def delta(names: tuple[str, ...], **kw: Any) -> float | None:
        a, b = after.counter(names, **kw), before.counter(names, **kw)
        if a is None or b is None:
            return None
        if a < b:  # a counter went backwards: the server restarted inside the window
            raise _CounterReset(names[0])
        return a - b

    def hist_delta(names: tuple[str, ...]) -> tuple[float, float] | None:
        a, b = after.histogram(names), before.histogram(names)
        if a is None or b is None:
            return None
        if a[1] < b[1]:
            raise _CounterReset(names[0])
        return a[0] - b[0], a[1] - b[1]

    try:
        for key, names in (("preemptions", PREEMPTIONS), ("server_generation_tokens", GENERATION_TOKENS),
                           ("server_prompt_tokens", PROMPT_TOKENS)):
            value = delta(names)
            if value is None:
                missing[key] = f"{names[0]}_total is not in this server's /metrics"
            else:
                m[key] = value
        done = delta(REQUEST_SUCCESS, exclude={"finished_reason": _NOT_COMPLETED_REASONS})
        if done is None:
            missing["server_requests_completed"] = "vllm:request_success_total is not in this server's /metrics"
        else:
            m["server_requests_completed"] = done
        hits, queries = delta(PREFIX_HITS), delta(PREFIX_QUERIES)
        if hits is None or queries is None:
            missing["prefix_cache_hit_pct"] = "vllm:prefix_cache_hits/queries are not in this server's /metrics"
        elif queries == 0:
            missing["prefix_cache_hit_pct"] = "no prefix-cache lookups in the window (prefix caching off?)"
        else:
            m["prefix_cache_hit_pct"] = 100.0 * hits / queries
        for key, names in HISTOGRAM_MEANS_MS.items():
            h = hist_delta(names)
            if h is None:
                missing[key] = f"{names[0]} is not in this server's /metrics"
            elif h[1] == 0:
                missing[key] = f"no observation of {names[0]} in the window"
            else:
                m[key] = 1000.0 * h[0] / h[1]
        steps = hist_delta(ITERATION_TOKENS)
        if steps is None or steps[1] == 0:
            missing["tokens_per_step_mean"] = (f"{ITERATION_TOKENS[0]} is not in this server's /metrics"
                                               if steps is None else "no engine step in the window")
        else:
            m["tokens_per_step_mean"] = steps[0] / steps[1]
            res.deltas["engine_steps"] = steps[1]
        for name, names in (("flops_per_gpu", FLOPS), ("read_bytes_per_gpu", READ_BYTES),
                            ("write_bytes_per_gpu", WRITE_BYTES)):
            value = delta(names)
            if value is not None:  # one series per engine, each already per GPU: average them
                res.deltas[name] = value / max(1, after.series_count(names))
        for name, names in (("prompt_tokens", PROMPT_TOKENS), ("generation_tokens", GENERATION_TOKENS),
                            ("preemptions", PREEMPTIONS)):
            value = delta(names)
            if value is not None:
                res.deltas[name] = value
        if done is not None:
            res.deltas["requests"] = done
    except _CounterReset as reset:
        for k in counter_keys:
            m.pop(k, None)
            missing[k] = f"{reset.name} went backwards: the server restarted inside the window"
        res.deltas.clear()
    return res


class _CounterReset(Exception):
    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(name)


class MetricsScraper:
    """Scrapes ``metrics_url`` (e.g. ``http://127.0.0.1:8000/metrics``) around and during a window.

    Sampling runs in its own thread with a blocking client, not as a task on the caller's event loop:
    measured on the CPU path, httpx streams that always have data ready never yield, so a scrape task
    on the load engine's loop got no turn until the load was over (no sample at all mid-load).

    Never raises for an unreachable or non-vLLM endpoint: ``stop()`` reports it as unavailable with the
    reason, so a dead server fails the test through its own error, not a telemetry traceback.
    """

    def __init__(self, metrics_url: str, interval_s: float = 0.5, api_key: str | None = None,
                 timeout_s: float = 5.0) -> None:
        if interval_s <= 0:
            raise ValueError(f"/metrics sampling interval must be > 0 s, got {interval_s}")
        self.metrics_url = metrics_url
        self.interval_s = interval_s
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._timeout_s = timeout_s
        self._client: httpx.Client | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._before: Snapshot | None = None
        self._reason = ""
        self._rows: list[dict[str, Any]] = []
        self._errors: list[str] = []

    def scrape(self, families: tuple[str, ...] | None = None) -> Snapshot:
        """One blocking scrape (of ``families`` only, when given); ValueError with a plain-words cause for
        anything that is not vLLM's /metrics."""
        assert self._client is not None, "start() first"
        sent = time.time()
        try:
            resp = self._client.get(self.metrics_url, headers=self._headers)
        except httpx.HTTPError as exc:
            raise ValueError(f"cannot reach {self.metrics_url}: {type(exc).__name__}: {exc}") from None
        if resp.status_code != 200:
            raise ValueError(f"{self.metrics_url} answered HTTP {resp.status_code}")
        received = time.time()
        try:
            text = resp.text if families is None else only_families(resp.text, families)
            snap = parse_metrics(text, (sent + received) / 2)  # gauges were read in between
        except ValueError as exc:
            raise ValueError(f"{self.metrics_url} is not Prometheus text ({exc})") from None
        if not snap.is_vllm:
            raise ValueError(f"{self.metrics_url} has no vllm:* metrics: it is not a vLLM server's /metrics")
        # A slow answer means a busy API server: the reading is then less sure to be mid-load.
        snap.scrape_ms = 1000.0 * (received - sent)
        return snap

    async def start(self) -> None:
        await asyncio.to_thread(self.start_blocking)

    def start_blocking(self) -> None:
        if self._client is not None:
            raise RuntimeError("MetricsScraper.start() called twice; use one scraper per phase")
        self._client = httpx.Client(timeout=self._timeout_s)
        try:
            self._before = self.scrape()
        except ValueError as exc:
            self._reason = str(exc)
            return
        self._rows.append(_sample_row(self._before, self._before))
        self._thread = threading.Thread(target=self._sample_loop, name="perfgate-metrics", daemon=True)
        self._thread.start()

    def _sample_loop(self) -> None:
        assert self._before is not None
        next_tick = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_tick - time.monotonic())):
            try:
                self._rows.append(_sample_row(self.scrape(ROW_FAMILIES), self._before))
            except ValueError as exc:  # the server may be briefly busy or killed; keep sampling
                self._errors.append(f"{time.time():.3f}: {exc}")
            # a slow scrape skips ticks instead of firing a burst to catch up
            next_tick = max(next_tick + self.interval_s, time.monotonic())

    async def stop(self) -> ServerMetricsResult:
        return await asyncio.to_thread(self.stop_blocking)

    def stop_blocking(self) -> ServerMetricsResult:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self._timeout_s + 5)
        try:
            if self._before is None:
                return ServerMetricsResult(available=False,
                                           reason=self._reason or "MetricsScraper.stop() before start()")
            after, after_error = None, ""
            try:
                after = self.scrape()
                self._rows.append(_sample_row(after, self._before))
            except ValueError as exc:
                after_error = str(exc)
            result = summarize(self._before, after, self._rows, after_error)
            result.scrape_errors = self._errors
            return result
        finally:
            if self._client is not None:
                self._client.close()
