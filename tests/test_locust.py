"""Locust LLM users, run headless as a child process, measured from their raw records.

The record helpers are tested directly; everything else runs the real thing: ``python -m locust`` with
perf_tests/locustfile.py against real vLLM (CPU build, tiny synthetic model), one server for the module.
Locust is never imported here: that would monkey-patch this process through gevent.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import pytest

from perfgate._errors import ConfigError
from perfgate.core.records import RequestRecord
from perfgate.load.locust_runner import (
    LocustRunError,
    Stage,
    load_records,
    parse_ramp,
    record_line,
    run_locust,
    stage_at,
    worker_records_path,
)
from perfgate.load.scenario import ClosedLoop, Fixed, Scenario, Warmup
from perfgate.load.stream import PromptStream


def _scenario(endpoint: str = "/v1/completions", prompt: int = 32, output: int = 16) -> Scenario:
    return Scenario(name="locust-test", description="locust test: small fixed requests", endpoint=endpoint,
                    prompt_tokens=Fixed(value=prompt), output_tokens=Fixed(value=output), ignore_eos=True,
                    load=ClosedLoop(concurrency=2), duration_s=10, warmup=Warmup(requests=0),
                    request_timeout_s=120)


def _assert_locust_not_imported() -> None:
    assert "locust" not in sys.modules, "locust was imported into the test process"
    if "gevent" in sys.modules:  # imported by something else: it must not have patched this process
        import gevent.monkey

        assert not gevent.monkey.is_anything_patched()


# --- helpers, no server ---------------------------------------------------------------------------------

def test_parse_ramp_reads_stages_and_rejects_bad_ones() -> None:
    assert parse_ramp("2:1:10, 8:2.5:20") == [Stage(2, 1.0, 10.0), Stage(8, 2.5, 20.0)]
    for bad in ("2:1", "a:1:10", "2:0:10", "2:1:-5", ""):
        with pytest.raises(ConfigError) as err:
            parse_ramp(bad)
        assert "USERS:SPAWN_RATE:SECONDS" in str(err.value)


def test_stage_at_follows_the_ramp_then_ends_it() -> None:
    stages = parse_ramp("2:1:10,8:2:20")
    assert stage_at(stages, 0) == stages[0] and stage_at(stages, 9.9) == stages[0]
    assert stage_at(stages, 10) == stages[1] and stage_at(stages, 29.9) == stages[1]
    assert stage_at(stages, 30) is None


def test_load_records_merges_workers_and_keeps_every_field(tmp_path: Path) -> None:
    main = tmp_path / "records.jsonl"
    a = RequestRecord(index=0, scheduled=2.0, sent=2.0, first_token=2.1, token_times=[2.1, 2.2], end=2.2,
                      prompt_tokens_expected=8, output_tokens_expected=2, prompt_tokens=8, output_tokens=2,
                      status=200)
    b = RequestRecord(index=0, scheduled=1.0, sent=1.0, status=503, error="http_5xx", error_detail="HTTP 503")
    worker_records_path(main, 11).write_text(record_line(a, pid=11) + "\n")
    # The last line of a killed process can be torn: it is skipped, not fatal.
    worker_records_path(main, 12).write_text(record_line(b, pid=12) + "\n" + record_line(a)[:30])
    records = load_records(main)
    assert [r.sent for r in records] == [1.0, 2.0] and [r.index for r in records] == [0, 1]
    assert records[0].error == "http_5xx" and records[1].token_times == [2.1, 2.2]
    assert records[1].ttft == pytest.approx(0.1)
    # A bad line that is not the last one is an error naming the file and line.
    worker_records_path(main, 13).write_text("not json\n" + record_line(a) + "\n")
    with pytest.raises(ConfigError) as err:
        load_records(main)
    assert "worker-13" in str(err.value) and "line 1" in str(err.value)


@pytest.mark.slow
def test_a_locust_that_cannot_start_fails_naming_the_cause(tmp_path: Path) -> None:
    with pytest.raises(LocustRunError) as err:
        run_locust("http://127.0.0.1:9", _scenario(), model="tiny", tokenizer=str(tmp_path / "no-such-tokenizer"),
                   users=1, run_time_s=2, results_dir=tmp_path, timeout_s=120)
    assert "cannot load a tokenizer" in str(err.value)  # the user's own error, from the child's log
    assert err.value.result is not None and err.value.result.returncode == 2
    _assert_locust_not_imported()


# --- against real vLLM on the CPU -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory):
    from perfgate.models import resolve_model
    from perfgate.serving.profile import load_profile
    from perfgate.serving.server import VllmServer

    log = tmp_path_factory.mktemp("locust-vllm") / "vllm.log"
    server = VllmServer(load_profile("cpu-tiny"), resolve_model("synthetic:tiny"), log_path=log)
    try:
        server.start()
        server.wait_healthy()
        yield server
    finally:
        server.stop()


def _max_in_flight(records: list[RequestRecord], until: float) -> int:
    """Most requests in flight at once among those sent before ``until``."""
    spans = [(r.sent, r.closed or r.end or r.sent) for r in records if r.sent < until]
    return max((sum(1 for s, e in spans if s <= t < e) for t, _ in spans), default=0)


@pytest.mark.cpu
@pytest.mark.slow
def test_locust_ramp_streams_and_records_what_the_server_did(vllm, tmp_path: Path) -> None:
    scenario = _scenario()
    result = run_locust(vllm.base_url, scenario, model="tiny", tokenizer="synthetic:tiny",
                        ramp="2:2:8,4:2:12", warmup_s=4, results_dir=tmp_path,
                        prompt_stream=PromptStream(0, "10c05700", 2))
    _assert_locust_not_imported()
    assert result.returncode == 0, result.log_tail()
    # The run's prompt stream reached the users (they log it when they prepare their requests).
    assert result.prompt_stream == {"seed": 0, "nonce": "10c05700", "repeat": 2}
    assert "'nonce': '10c05700', 'repeat': 2" in result.log.read_text(), result.log_tail()
    records = result.records
    assert records and result.warmup_records, result.log_tail()
    assert all(r.error is None for r in records), [r.error_detail for r in records if r.error][:3]
    for r in records:
        assert r.status == 200 and r.ttft is not None and r.latency is not None
        assert 0 < r.ttft <= r.latency, r
        assert r.prompt_tokens == 32 and r.output_tokens == 16  # ignore_eos: exactly what was asked
        # vLLM may put several tokens in one chunk when it generates faster than it streams.
        assert 1 <= len(r.token_times) <= 16 and r.token_times == sorted(r.token_times)
    assert result.valid, result.invalid_reasons
    assert result.metrics["completed"] == len(records) and result.metrics["token_count_mismatches"] == 0
    assert result.metrics["median_ttft_ms"] <= result.metrics["median_e2el_ms"]
    # The ramp: at most 2 users during the first stage (8 s; a second of margin), more after it.
    everything = sorted(result.warmup_records + records, key=lambda r: r.sent)
    assert _max_in_flight(everything, everything[0].sent + 7.0) <= 2
    assert _max_in_flight(everything, float("inf")) >= 3
    # Locust's own view (bucketed, for people): the three LLM rows. Requests that finish during the stop
    # timeout are in the records but can miss Locust's final CSV, so its count is at most the records'.
    rows = {row["Name"]: row for row in csv.DictReader(result.stats_csv["stats"].open())}
    assert {"ttft", "itl", "e2e"} <= set(rows)
    assert 0 < int(rows["e2e"]["Request Count"]) <= len(everything) and int(rows["e2e"]["Failure Count"]) == 0
    assert json.loads((tmp_path / "locust_scenario.json").read_text())["name"] == "locust-test"


@pytest.mark.cpu
@pytest.mark.slow
def test_locust_distributed_workers_chat(vllm, tmp_path: Path) -> None:
    scenario = _scenario(endpoint="/v1/chat/completions", prompt=48, output=8)
    result = run_locust(vllm.base_url, scenario, model="tiny", tokenizer="synthetic:tiny", users=2, spawn_rate=2,
                        run_time_s=8, processes=2, results_dir=tmp_path)
    _assert_locust_not_imported()
    assert result.returncode == 0, result.log_tail()
    files = sorted(tmp_path.glob("locust_records.worker-*.jsonl"))
    assert len(files) == 2 and all(f.read_text().strip() for f in files), result.log_tail()  # one user each
    assert result.records and all(r.success for r in result.records), result.log_tail()
    assert all(r.prompt_tokens == 48 and r.output_tokens == 8 for r in result.records)
    assert len({r.index for r in result.records}) == len(result.records)  # renumbered across workers


@pytest.mark.cpu
@pytest.mark.slow
def test_locust_http_errors_are_classified(vllm, tmp_path: Path) -> None:
    result = run_locust(vllm.base_url, _scenario(), model="no-such-model", tokenizer="synthetic:tiny", users=1,
                        run_time_s=2, results_dir=tmp_path)
    assert result.records and {r.error for r in result.records} == {"http_4xx"}
    assert result.records[0].status == 404 and "no-such-model" in result.records[0].error_detail
    assert result.metrics["errors_http_4xx"] == len(result.records) and result.metrics["completed"] == 0
    assert not result.valid and "no request completed" in result.invalid_reasons[0]
    assert result.returncode == 3  # Locust's "some requests failed" exit, not a crash
