"""Metrics: the same numbers as ``vllm bench serve``'s own ``calculate_metrics`` on the same requests."""

from __future__ import annotations

import math
import random

import pytest

from perfgate.catalog import METRICS
from perfgate.load.request import RequestRecord
from perfgate.metrics import compute_metrics, format_table, latency_stats


def synthetic_records(n: int = 40, seed: int = 3) -> list[RequestRecord]:
    rng = random.Random(seed)
    records = []
    t = 100.0
    for i in range(n):
        sent = t + rng.uniform(0, 0.05)
        out = rng.choice([1, 2, 5, 17, 64])
        times = [sent + rng.uniform(0.01, 0.3)]
        for _ in range(out - 1):
            times.append(times[-1] + rng.uniform(0.001, 0.04))
        rec = RequestRecord(index=i, scheduled=sent - rng.uniform(0, 0.002), sent=sent, token_times=times,
                            first_token=times[0], end=times[-1], prompt_tokens_expected=32,
                            output_tokens_expected=out, prompt_tokens=32, output_tokens=out, status=200)
        records.append(rec)
        t += 0.1
    if n > 11:
        records[5].error, records[5].first_token = "http_5xx", None
        records[9].error = "timeout"
        records[11].error = "stream"
    return records


def vllm_metrics(records: list[RequestRecord], duration: float, goodput: dict[str, float]) -> dict[str, float]:
    """Run vLLM's own calculate_metrics on equivalent RequestFuncOutputs; flatten to its JSON keys."""
    serve = pytest.importorskip("vllm.benchmarks.serve")
    from vllm.benchmarks.lib.endpoint_request_func import RequestFuncOutput

    outputs = []
    for r in records:
        o = RequestFuncOutput(success=r.success, prompt_len=r.prompt_tokens or 0, start_time=r.sent)
        if r.success:
            o.ttft, o.latency, o.itl, o.output_tokens = r.ttft, r.latency, r.itl, r.output_tokens
        outputs.append(o)
    metrics, _ = serve.calculate_metrics(input_requests=[], outputs=outputs, dur_s=duration, tokenizer=None,
                                         selected_percentiles=[50, 90, 95, 99], goodput_config_dict=goodput)
    flat: dict[str, float] = {}
    for key, value in vars(metrics).items():
        if key.startswith("percentiles_"):
            name = key.removeprefix("percentiles_")
            flat.update({f"p{int(p)}_{name}": v for p, v in value})
        elif isinstance(value, (int, float)):
            flat[key] = value
    flat["total_input_tokens"], flat["total_output_tokens"] = flat.pop("total_input"), flat.pop("total_output")
    return flat


def test_matches_vllm_bench_serve_definitions() -> None:
    records = synthetic_records()
    goodput = {"ttft": 200.0, "tpot": 20.0, "e2el": 900.0}
    ours = compute_metrics(records, 4.2, goodput_slos_ms=goodput)
    theirs = vllm_metrics(records, 4.2, goodput)
    shared = [k for k in theirs if k in ours]
    # Every vllm key that perfgate also has; the latency families and throughputs must be among them.
    for must in ("completed", "failed", "request_throughput", "output_throughput", "total_token_throughput",
                 "request_goodput", "mean_ttft_ms", "median_tpot_ms", "p99_itl_ms", "std_e2el_ms", "p95_e2el_ms"):
        assert must in shared
    for key in shared:
        assert math.isclose(ours[key], theirs[key], rel_tol=1e-9, abs_tol=1e-9), key


def test_every_key_is_in_the_catalog() -> None:
    ours = compute_metrics(synthetic_records(), 4.2, goodput_slos_ms={"ttft": 100.0})
    unknown = set(ours) - set(METRICS)
    assert not unknown


def test_error_classes_and_mismatches_are_counted() -> None:
    records = synthetic_records()
    records[0].output_tokens = records[0].output_tokens_expected + 1  # served more than asked
    records[1].prompt_tokens = 33
    m = compute_metrics(records, 4.0)
    assert (m["errors_http_5xx"], m["errors_timeout"], m["errors_stream"], m["errors_connect"]) == (1, 1, 1, 0)
    assert m["failed"] == 3 and m["completed"] == 37
    assert m["error_rate"] == pytest.approx(3 / 40)
    assert m["token_count_mismatches"] == 2


def test_latency_from_scheduled_includes_client_lateness() -> None:
    records = synthetic_records()
    for r in records:
        r.scheduled = r.sent - 0.5  # the client sent everything 500 ms late
    m = compute_metrics(records, 4.0)
    assert m["p50_send_lag_ms"] == pytest.approx(500.0)
    assert m["median_e2el_from_scheduled_ms"] - m["median_e2el_ms"] == pytest.approx(500.0, abs=60)
    assert m["mean_ttft_from_scheduled_ms"] == pytest.approx(m["mean_ttft_ms"] + 500.0)


def test_no_completed_request_leaves_latency_keys_out() -> None:
    records = synthetic_records(4)
    for r in records:
        r.error = "connect"
    m = compute_metrics(records, 1.0)
    assert m["completed"] == 0 and m["errors_connect"] == 4
    assert "p99_ttft_ms" not in m and "mean_e2el_ms" not in m  # never a fake 0 ms that passes an SLO


def test_latency_stats_and_table() -> None:
    stats = latency_stats("ttft", [0.1, 0.2, 0.3])
    assert stats["median_ttft_ms"] == pytest.approx(200.0) and stats["p50_ttft_ms"] == pytest.approx(200.0)
    assert latency_stats("ttft", []) == {}
    table = format_table(compute_metrics(synthetic_records(), 4.0))
    assert "Median TTFT (ms):" in table and "errors_http_5xx:" in table
