"""Baselines: the file format, loading errors, refusing bad runs, atomic concurrent refresh, the CLI."""

from __future__ import annotations

import json
import multiprocessing
import random
from pathlib import Path

import pytest

from perfgate._errors import BaselineError, InvalidRunError
from perfgate.baseline import (
    SCHEMA_VERSION,
    baseline_path,
    diff_baselines,
    find_baseline,
    load_baseline,
    load_request_latencies,
    write_baseline,
)
from perfgate.cli import main
from perfgate.phase import PhaseResult, write_json_atomic

FP = {"gpu_model": None, "vllm_version": "0.32.0", "torch_version": "2.13.0",
      "profile_command": "vllm serve tiny --max-num-seqs 32"}


def run_phases(n: int = 3, seed: int = 0, results_dir: Path | None = None, scale: float = 1.0) -> list[PhaseResult]:
    rng = random.Random(seed)
    phases = []
    for r in range(n):
        metrics = {"request_throughput": 3.1 * rng.uniform(0.9, 1.1) / scale,
                   "p99_e2el_ms": 2100 * rng.uniform(0.9, 1.1) * scale, "error_rate": 0.0, "completed": 48,
                   "duration": 15.2 * rng.uniform(0.9, 1.1)}
        artifacts = {}
        if results_dir is not None:
            records = [{"index": i, "phase": "measure", "ttft": rng.uniform(0.05, 0.4) * scale,
                        "latency": rng.uniform(1.0, 2.2) * scale, "error": None} for i in range(40)]
            records.append({"index": 99, "phase": "warmup", "ttft": 9.0, "latency": 30.0, "error": None})
            records.append({"index": 98, "phase": "measure", "ttft": None, "latency": None, "error": "timeout"})
            rel = f"records-r{r}.json"
            (results_dir / rel).write_text(json.dumps(records))
            artifacts["records"] = rel
        phases.append(PhaseResult("cpu-tiny", "cpu-closed", "cpu", metrics=metrics, repeat=r, fingerprint=dict(FP),
                                  artifacts=artifacts, started_at=1000.0 + r))
    return phases


def test_write_and_load_round_trip_keeps_repeats_and_fingerprint(tmp_path):
    path = baseline_path("cpu", "cpu-tiny", "cpu-closed", tmp_path / "baselines")
    assert path == tmp_path / "baselines" / "cpu" / "cpu-tiny" / "cpu-closed.json"
    phases = run_phases(3, results_dir=tmp_path)
    diff = write_baseline(path, phases, results_dir=tmp_path)
    assert "new baseline" in diff and "request_throughput" in diff
    b = load_baseline(path)
    assert b.schema_version == SCHEMA_VERSION and b.repeats == 3
    assert b.metrics["request_throughput"] == pytest.approx([p.metrics["request_throughput"] for p in phases], rel=1e-5)
    assert b.fingerprint["profile_command"] == FP["profile_command"] and b.vllm_version == "0.32.0"
    # CDF quantiles over the 120 successful measured requests (warm-up and failed ones left out).
    q = b.latency_quantiles["e2el_ms"]
    assert len(q) == 101 and 1000 <= q[0] <= q[-1] <= 2200
    assert find_baseline("cpu", "cpu-tiny", "cpu-closed", tmp_path / "baselines").repeats == 3
    assert find_baseline("cpu", "cpu-tiny", "nope", tmp_path / "baselines") is None


def test_records_as_written_by_the_load_engine(tmp_path):
    (tmp_path / "r.json").write_text(json.dumps([{"sent": 10.0, "first_token": 10.25, "end": 11.5, "error": None},
                                                 {"ttft_ms": 80.0, "e2el_ms": 900.0}]))
    phase = PhaseResult("p", "s", "cpu", artifacts={"records": "r.json"})
    got = load_request_latencies(phase, tmp_path)
    assert got["ttft_ms"] == pytest.approx([250.0, 80.0]) and got["e2el_ms"] == pytest.approx([1500.0, 900.0])
    assert load_request_latencies(PhaseResult("p", "s", "cpu", artifacts={"records": "gone.json"}), tmp_path) == {}


@pytest.mark.parametrize("content,expect", [
    ("{ not json", "corrupt baseline"),
    ('{"schema_version": 999, "metrics": {}}', "schema_version is 999"),
    ("[1, 2]", "top level is not an object"),
    (json.dumps({"schema_version": SCHEMA_VERSION, "gpu_class": "cpu", "profile": "p", "scenario": "s",
                 "repeats": 1, "metrics": {"p99_latency": [1.0]}}), "unknown metric(s) p99_latency"),
    (json.dumps({"schema_version": SCHEMA_VERSION, "gpu_class": "cpu", "profile": "p", "scenario": "s",
                 "metrics": {}}), "field 'repeats'"),
])
def test_bad_baseline_files_name_the_file_and_the_fix(tmp_path, content, expect):
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(BaselineError) as err:
        load_baseline(path)
    text = str(err.value)
    assert expect in text and str(path) in text
    assert "perfgate baselines refresh" in text and "--perfgate-update-baselines" in text


def test_refuses_invalid_run_and_keeps_the_old_file(tmp_path):
    path = tmp_path / "b.json"
    write_baseline(path, run_phases(3))
    before = path.read_bytes()
    bad = run_phases(3, seed=1)
    bad[2].valid, bad[2].invalid_reasons = False, ["achieved 71% of the offered rate"]
    with pytest.raises(InvalidRunError, match="achieved 71%"):
        write_baseline(path, bad)
    with pytest.raises(BaselineError, match="failed run: SLO failed: p99_e2el_ms"):
        write_baseline(path, run_phases(3, seed=1), failed="SLO failed: p99_e2el_ms")
    with pytest.raises(BaselineError, match="at least 3 repeats"):
        write_baseline(path, run_phases(2, seed=1))
    errors = run_phases(3, seed=1)
    errors[0].metrics["error_rate"] = 0.2
    with pytest.raises(BaselineError, match="error_rate"):
        write_baseline(path, errors)
    mixed = run_phases(3, seed=1)
    mixed[1].scenario = "other"
    with pytest.raises(BaselineError, match="several keys"):
        write_baseline(path, mixed)
    assert path.read_bytes() == before


def test_diff_shows_before_after_and_fingerprint_changes(tmp_path):
    path = tmp_path / "b.json"
    write_baseline(path, run_phases(3))
    slower = run_phases(3, seed=2, scale=1.5)
    for p in slower:
        p.fingerprint["torch_version"] = "2.14.0"
    diff = write_baseline(path, slower)
    assert "refreshed" in diff and "torch_version: '2.13.0' -> '2.14.0'" in diff
    line = next(x for x in diff.splitlines() if x.strip().startswith("p99_e2el_ms"))
    assert "ms" in line and "+" in line.split()[-1]
    assert "new baseline" in diff_baselines(None, load_baseline(path))


def test_unreadable_old_file_is_replaced_and_said(tmp_path):
    path = tmp_path / "b.json"
    path.write_text("{ torn")
    diff = write_baseline(path, run_phases(3))
    assert "could not be read and is replaced" in diff and load_baseline(path).repeats == 3


def _writer(path: str, seed: int, rounds: int) -> None:
    for i in range(rounds):
        write_baseline(Path(path), run_phases(3 + (seed + i) % 3, seed=seed))


def test_two_refreshes_at_once_never_tear_the_file(tmp_path):
    """Two processes refresh the same baseline while a reader loads it: every read is one whole file."""
    path = tmp_path / "b.json"
    write_baseline(path, run_phases(3))
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_writer, args=(str(path), seed, 60)) for seed in (1, 2)]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers) or reads < 20:
        b = load_baseline(path)  # raises BaselineError on a torn file
        assert len(b.metrics["request_throughput"]) == b.repeats
        reads += 1
    for w in writers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no temp files left


def _save_run(results: Path, phases: list[PhaseResult], slo_failed: bool = False) -> None:
    for p in phases:
        write_json_atomic(results / f"{p.profile}__{p.scenario}__r{p.repeat}.json", p.to_dict())
    slo = [{"key": phases[0].key, "passed": not slo_failed,
            "rows": [{"metric": "p99_e2el_ms", "status": "fail" if slo_failed else "pass"}]}]
    write_json_atomic(results / "run.json", {"schema_version": 1, "phases": [], "slo": slo})


def test_cli_refresh_from_results_and_show(tmp_path, capsys):
    results, bdir = tmp_path / "results", tmp_path / "baselines"
    results.mkdir()
    _save_run(results, run_phases(3, results_dir=results))
    assert main(["baselines", "--dir", str(bdir), "refresh", "--from", str(results)]) == 0
    out = capsys.readouterr().out
    assert "new baseline" in out and (bdir / "cpu" / "cpu-tiny" / "cpu-closed.json").is_file()
    assert main(["baselines", "--dir", str(bdir), "show", "cpu-tiny"]) == 0
    out = capsys.readouterr().out
    assert "cpu/cpu-tiny/cpu-closed: 3 repeats" in out and "detectable regression" in out
    assert "p99_e2el_ms" in out


def test_cli_refresh_refuses_a_run_whose_slos_failed(tmp_path, capsys):
    results, bdir = tmp_path / "results", tmp_path / "baselines"
    results.mkdir()
    _save_run(results, run_phases(3), slo_failed=True)
    assert main(["baselines", "--dir", str(bdir), "refresh", "--from", str(results)]) == 1
    assert "refused cpu/cpu-tiny/cpu-closed" in capsys.readouterr().out
    assert not (bdir / "cpu").exists()
    assert main(["baselines", "--dir", str(bdir), "refresh", "--from", str(tmp_path / "nope")]) == 2
    assert "results directory not found" in capsys.readouterr().err
