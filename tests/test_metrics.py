"""Metrics: the same numbers as ``vllm bench serve``'s own ``calculate_metrics`` on the same requests."""

from __future__ import annotations

import math
import random

import pytest

from perfgate.core.catalog import METRICS
from perfgate.core.records import RequestRecord
from perfgate.load.metrics import compute_metrics, format_table, is_flushed_stream, latency_stats, regime_note


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


def streamed(index: int, out: int, gap_s: float, *, sent: float = 10.0, ttft_s: float = 0.05) -> RequestRecord:
    """A completed request whose ``out`` tokens arrived ``gap_s`` apart (0: all in one read)."""
    times = [sent + ttft_s + k * gap_s for k in range(out)]
    return RequestRecord(index=index, scheduled=sent, sent=sent, token_times=times, first_token=times[0],
                         end=times[-1], prompt_tokens_expected=16, output_tokens_expected=out,
                         prompt_tokens=16, output_tokens=out, ignore_eos=True, status=200)


def test_flushed_streams_are_detected_in_the_flushed_regime() -> None:
    # The CPU build's flushed regime: each stream's 64 token events read at one instant (one timestamp)...
    records = [streamed(i, 64, 0.0, sent=10.0 + i) for i in range(6)]
    # ... or a few microseconds apart (Locust stamps each line of one read), or one event carrying all.
    records += [streamed(6, 64, 2e-6), streamed(7, 64, 0.0)]
    records[7].token_times = records[7].token_times[:1]
    # Single-token outputs say nothing about flushing; failures are left out.
    records += [streamed(8, 1, 0.0), streamed(9, 64, 0.0)]
    records[9].error = "stream"
    m = compute_metrics(records, 2.0)
    assert m["flushed_stream_pct"] == pytest.approx(100.0)
    assert m["median_tpot_ms"] == pytest.approx(0.0, abs=1e-3)
    note = regime_note(m)
    assert note is not None and note.startswith("streams flushed whole: 100 % of requests")
    assert "median TPOT 0.00 ms" in note and "not comparable" in note
    assert "Streams flushed whole (%):" in format_table(m) and f"note: {note}" in format_table(m)


def test_normal_streams_are_not_flagged() -> None:
    # The other regime: tokens ~ one decode step apart (even a fast GPU step is far above 0.05 ms).
    records = [streamed(i, 64, 0.012) for i in range(5)] + [streamed(5, 64, 0.0002)]
    m = compute_metrics(records, 2.0)
    assert m["flushed_stream_pct"] == 0.0
    assert regime_note(m) is None and "note:" not in format_table(m)


def test_a_stream_with_one_late_token_is_not_flushed() -> None:
    rec = streamed(0, 8, 0.0)
    rec.token_times[-1] += 0.010  # the last token came in a later read
    rec.end = rec.token_times[-1]
    assert is_flushed_stream(rec) is False
    assert is_flushed_stream(streamed(1, 8, 0.0)) is True
    assert is_flushed_stream(streamed(2, 1, 0.0)) is None


@pytest.mark.parametrize(("flushed", "pct", "noted"), [(3, 75.0, True), (2, 50.0, True), (1, 25.0, False)])
def test_mixed_windows_report_the_share_and_note_from_half(flushed: int, pct: float, noted: bool) -> None:
    records = [streamed(i, 32, 0.0 if i < flushed else 0.02) for i in range(4)] + [streamed(4, 1, 0.0)]
    m = compute_metrics(records, 1.0)
    assert m["flushed_stream_pct"] == pytest.approx(pct)
    note = regime_note(m)
    assert (note is not None) == noted
    if noted:
        assert f"{pct:.0f} % of requests got every token in one read" in note


def test_no_eligible_stream_leaves_the_key_out() -> None:
    m = compute_metrics([streamed(0, 1, 0.0)], 1.0)
    assert "flushed_stream_pct" not in m and regime_note(m) is None
