"""Baselines: the file format, loading errors, refusing bad runs, atomic concurrent refresh, the CLI."""

from __future__ import annotations

import json
import multiprocessing
import random
from pathlib import Path

import pytest

from perfgate._errors import BaselineError, InvalidRunError
from perfgate.cli import main
from perfgate.core.catalog import METRICS
from perfgate.core.method import METHOD_VERSION
from perfgate.core.phase import PhaseResult, write_json_atomic
from perfgate.verdict.baseline import (
    SCHEMA_VERSION,
    Baseline,
    baseline_from_phases,
    baseline_path,
    diff_baselines,
    find_baseline,
    load_baseline,
    load_request_latencies,
    write_baseline,
)

FP = {"gpu_model": None, "vllm_version": "0.32.0", "torch_version": "2.13.0",
      "profile_command": "vllm serve tiny --max-num-seqs 32"}


def run_phases(n: int = 3, seed: int = 0, results_dir: Path | None = None, scale: float = 1.0, sessions: int = 2,
               session_prefix: str = "session", t0: float = 1000.0) -> list[PhaseResult]:
    """``n`` repeats split in order over ``sessions`` server sessions (3 over 2: the first two in one)."""
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
                                  artifacts=artifacts, started_at=t0 + r,
                                  server_session=f"{session_prefix}-{r * sessions // n}"))
    return phases


def test_write_and_load_round_trip_keeps_repeats_and_fingerprint(tmp_path):
    path = baseline_path("cpu", "cpu-tiny", "cpu-closed", tmp_path / "baselines")
    assert path == tmp_path / "baselines" / "cpu" / "cpu-tiny" / "cpu-closed.json"
    phases = run_phases(3, results_dir=tmp_path)
    diff = write_baseline(path, phases, results_dir=tmp_path)
    assert "new baseline" in diff and "request_throughput" in diff
    b = load_baseline(path)
    assert b.schema_version == SCHEMA_VERSION and b.repeats == 3 and b.method_version == METHOD_VERSION
    # Which server session each repeat came from: written to the file, in the order measured.
    raw = json.loads(path.read_text())
    assert raw["sessions"] == ["session-0", "session-1"] and raw["session_of_repeat"] == [0, 0, 1]
    assert b.sessions == raw["sessions"] and b.session_of_repeat == [0, 0, 1] and b.session_count == 2
    assert "3 repeats in 2 server sessions" in diff
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
    (json.dumps({"schema_version": SCHEMA_VERSION, "method_version": METHOD_VERSION, "gpu_class": "cpu",
                 "profile": "p", "scenario": "s", "repeats": 1, "metrics": {"p99_latency": [1.0]}}),
     "unknown metric(s) p99_latency"),
    (json.dumps({"schema_version": SCHEMA_VERSION, "method_version": METHOD_VERSION, "gpu_class": "cpu",
                 "profile": "p", "scenario": "s", "metrics": {}}), "field 'repeats'"),
    (json.dumps({"schema_version": SCHEMA_VERSION, "method_version": METHOD_VERSION, "gpu_class": "cpu",
                 "profile": "p", "scenario": "s", "repeats": 2, "session_of_repeat": "0,1", "metrics": {}}),
     "field 'session_of_repeat'"),
])
def test_bad_baseline_files_name_the_file_and_the_fix(tmp_path, content, expect):
    path = tmp_path / "b.json"
    path.write_text(content)
    with pytest.raises(BaselineError) as err:
        load_baseline(path)
    text = str(err.value)
    assert expect in text and str(path) in text
    assert "perfgate baselines refresh" in text and "--perfgate-update-baselines" in text


@pytest.mark.parametrize("schema,method", [(1, None), (SCHEMA_VERSION, 1)])
def test_files_of_measurement_method_1_are_refused_with_the_rerecord_message(tmp_path, schema, method):
    """A schema-1 file (written before method_version existed: method 1) or a method-1 file is refused with
    the way to re-record it, not read as if its figures meant what this perfgate measures."""
    good = tmp_path / "good.json"
    write_baseline(good, run_phases(3))
    data = json.loads(good.read_text())
    data["schema_version"] = schema
    for key in ("method_version", "sessions", "session_of_repeat"):
        data.pop(key)
    if method is not None:
        data["method_version"] = method
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    with pytest.raises(BaselineError) as err:
        load_baseline(path)
    text = str(err.value)
    assert str(path) in text and "measurement method 1" in text and f"method {METHOD_VERSION}" in text
    assert "re-record it with this perfgate" in text and "--perfgate-update-baselines" in text
    assert "two server sessions" in text and "perfgate baselines refresh --from" in text


def test_one_server_session_is_refused_naming_how_to_record_two(tmp_path):
    path = tmp_path / "b.json"
    for one_session in (run_phases(3, sessions=1), [PhaseResult(**{**vars(p), "server_session": ""})
                                                    for p in run_phases(3)]):
        with pytest.raises(BaselineError) as err:
            write_baseline(path, one_session)
        text = str(err.value)
        assert "needs repeats from at least 2 server sessions" in text and "got 1" in text
        assert "--perfgate-update-baselines" in text and "perfgate baselines refresh --from RUN1 --from RUN2" in text
    assert not path.exists()
    with pytest.raises(BaselineError, match="at least 3 server sessions"):
        write_baseline(path, run_phases(4), min_sessions=3)
    # An in-run A/B asks for one session explicitly: allowed, and the file says it was one session.
    write_baseline(path, run_phases(3, sessions=1), min_sessions=1)
    b = load_baseline(path)
    assert b.sessions == ["session-0"] and b.session_of_repeat == [0, 0, 0] and b.session_count == 1


def test_session_of_repeat_follows_measurement_order_when_phases_arrive_shuffled():
    phases = run_phases(6, sessions=3)
    shuffled = phases[:]
    random.Random(7).shuffle(shuffled)
    assert shuffled != phases
    b = baseline_from_phases(shuffled)
    assert b.sessions == ["session-0", "session-1", "session-2"] and b.session_of_repeat == [0, 0, 1, 1, 2, 2]
    expected = [[phases[i].metrics["p99_e2el_ms"], phases[i + 1].metrics["p99_e2el_ms"]] for i in (0, 2, 4)]
    assert b.by_session("p99_e2el_ms") == [pytest.approx(g, rel=1e-5) for g in expected]


def test_by_session_groups_each_metric_by_server_session():
    def make(**kw) -> Baseline:
        return Baseline(gpu_class="cpu", profile="p", scenario="s", repeats=4,
                        metrics={"p99_e2el_ms": [1.0, 2.0, 3.0, 4.0]}, **kw)

    b = make(sessions=["a", "b"], session_of_repeat=[0, 1, 0, 1])
    assert b.by_session("p99_e2el_ms") == [[1.0, 3.0], [2.0, 4.0]] and b.session_count == 2
    assert b.by_session("failed") == []  # a metric the baseline does not hold
    # Sessions unknown, or not one per repeat: one group (the gate then knows repeat noise only).
    assert make().by_session("p99_e2el_ms") == [[1.0, 2.0, 3.0, 4.0]] and make().session_count == 1
    assert make(sessions=["a"], session_of_repeat=[0, 0]).by_session("p99_e2el_ms") == [[1.0, 2.0, 3.0, 4.0]]


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


def _save_run(results: Path, phases: list[PhaseResult], slo_failed: bool = False,
              gate_status: str | None = None) -> None:
    """A finished run's layout: phases/, the session.json manifest that lists them, run.json's verdicts."""
    results.mkdir(parents=True, exist_ok=True)
    listed = []
    for p in phases:
        rel = f"phases/{p.profile}__{p.scenario}__r{p.repeat}.json"
        write_json_atomic(results / rel, p.to_dict())
        listed.append(rel)
    write_json_atomic(results / "session.json", {"run_id": results.name, "phases": listed})
    slo = [{"key": phases[0].key, "passed": not slo_failed,
            "rows": [{"metric": "p99_e2el_ms", "status": "fail" if slo_failed else "pass"}]}]
    gate = [{"key": phases[0].key, "status": gate_status, "reasons": [f"gate said {gate_status}"]}] \
        if gate_status else []
    write_json_atomic(results / "run.json", {"schema_version": 1, "phases": [], "slo": slo, "gate": gate})


@pytest.fixture
def gate_pyproject(tmp_path, monkeypatch) -> Path:
    """Gate settings of the CLI tests' own (not the repo's, which a person may tune)."""
    path = tmp_path / "pyproject.toml"
    path.write_text("[tool.perfgate.gate]\nrepeats = 3\nmax_repeats = 6\nbaseline_sessions = 2\n")
    monkeypatch.setenv("PERFGATE_PYPROJECT", str(path))
    return path


def test_cli_refresh_from_results_and_show(tmp_path, capsys, gate_pyproject):
    from perfgate.verdict.gate import sensitivity
    from perfgate.verdict.gate_settings import load_gate_settings

    results, bdir = tmp_path / "results", tmp_path / "baselines"
    results.mkdir()
    _save_run(results, run_phases(3, results_dir=results))
    assert main(["baselines", "--dir", str(bdir), "refresh", "--from", str(results)]) == 0
    out = capsys.readouterr().out
    path = bdir / "cpu" / "cpu-tiny" / "cpu-closed.json"
    assert "new baseline" in out and "3 repeats in 2 server sessions" in out and path.is_file()
    assert main(["baselines", "--dir", str(bdir), "show", "cpu-tiny"]) == 0
    out = capsys.readouterr().out
    assert "cpu/cpu-tiny/cpu-closed: 3 repeats" in out
    assert "3 repeats in 2 server session(s); a run of 3 repeats, alpha 0.05" in out
    header = next(line for line in out.splitlines() if line.split()[:1] == ["metric"])
    assert header.split() == ["metric", "mean", "within", "session", "margin", "detectable", "A/A", "alarm"]
    # The figures are the gate's own arithmetic for this baseline and a run of 3 repeats.
    expected = {r.metric: r for r in sensitivity(load_baseline(path), load_gate_settings("cpu"), 3)}
    e2e = expected["p99_e2el_ms"]
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["p99_e2el_ms"])
    assert row[-3] == f"{e2e.margin * 100:+.0f}%" == f"+{METRICS['p99_e2el_ms'].min_effect * 100:.0f}%"
    assert row[-2] == f"{e2e.detectable * 100:+.1f}%" and row[-1] == f"{e2e.false_alarm * 100:.2f}%"
    assert e2e.detectable > e2e.margin  # a 3-repeat run cannot resolve exactly the margin
    assert "request_throughput" not in out  # report-only (a duplicate of output_throughput): not gated
    # More repeats in the run resolve a smaller change.
    assert main(["baselines", "--dir", str(bdir), "show", "cpu-tiny", "--repeats", "12"]) == 0
    row12 = next(line.split() for line in capsys.readouterr().out.splitlines()
                 if line.split()[:1] == ["p99_e2el_ms"])
    assert float(row12[-2].rstrip("%")) < float(row[-2].rstrip("%"))


def test_cli_refresh_merges_two_runs_of_separate_server_sessions(tmp_path, capsys, gate_pyproject):
    """Attached servers (--vllm-url) cannot be restarted by perfgate: one run per server session, merged."""
    run1, run2, bdir = tmp_path / "run1", tmp_path / "run2", tmp_path / "baselines"
    run1.mkdir()
    run2.mkdir()
    _save_run(run1, run_phases(2, seed=1, results_dir=run1, sessions=1, session_prefix="attached-a"))
    # The second run's requests are twice as slow: its records must be pooled into the CDF too (its records
    # files are found relative to its own directory, not the first --from).
    _save_run(run2, run_phases(2, seed=2, results_dir=run2, sessions=1, session_prefix="attached-b", t0=5000.0,
                               scale=2.0))
    path = bdir / "cpu" / "cpu-tiny" / "cpu-closed.json"
    for single in (run1, run2):  # either alone is one server session: refused
        assert main(["baselines", "--dir", str(bdir), "refresh", "--from", str(single), "--min-repeats", "2"]) == 1
        out = capsys.readouterr().out
        assert "refused cpu/cpu-tiny/cpu-closed" in out and "at least 2 server sessions" in out
    assert not path.exists()
    assert main(["baselines", "--dir", str(bdir), "refresh", "--from", str(run1), "--from", str(run2)]) == 0
    out = capsys.readouterr().out
    assert "new baseline (4 repeats in 2 server sessions" in out
    b = load_baseline(path)
    assert b.repeats == 4 and b.sessions == ["attached-a-0", "attached-b-0"] and b.session_of_repeat == [0, 0, 1, 1]
    assert len(b.by_session("p99_e2el_ms")) == 2
    q = b.latency_quantiles["e2el_ms"]
    assert q[0] < 2200 < q[-1] <= 4400  # run1's requests (1.0-2.2 s) and run2's (2.0-4.4 s)


def test_cli_refresh_refuses_a_run_whose_slos_failed(tmp_path, capsys):
    results, bdir = tmp_path / "results", tmp_path / "baselines"
    _save_run(results, run_phases(3), slo_failed=True)
    assert main(["baselines", "--dir", str(bdir), "refresh", "--from", str(results)]) == 1
    assert "refused cpu/cpu-tiny/cpu-closed" in capsys.readouterr().out
    assert not (bdir / "cpu").exists()
    assert main(["baselines", "--dir", str(bdir), "refresh", "--from", str(tmp_path / "nope")]) == 2
    assert "results directory not found" in capsys.readouterr().err


@pytest.mark.parametrize("status", ["regressed", "inconclusive", "invalid"])
def test_cli_refresh_refuses_a_run_whose_gate_did_not_pass(tmp_path, capsys, gate_pyproject, status):
    good, bad, bdir = tmp_path / "good", tmp_path / "bad", tmp_path / "baselines"
    _save_run(good, run_phases(2, seed=1, sessions=1, session_prefix="a"), gate_status="pass")
    _save_run(bad, run_phases(2, seed=2, sessions=1, session_prefix="b", t0=5000.0), gate_status=status)
    args = ["baselines", "--dir", str(bdir), "refresh", "--from", str(good), "--from", str(bad)]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "refused cpu/cpu-tiny/cpu-closed" in out
    assert f"its baseline gate was {status.upper()}" in out and str(bad) in out
    assert not (bdir / "cpu").exists()
    # The same runs with a passing gate merge (so the refusal above was the gate's status, nothing else).
    _save_run(bad, run_phases(2, seed=2, sessions=1, session_prefix="b", t0=5000.0), gate_status="pass")
    assert main(args) == 0 and load_baseline(bdir / "cpu" / "cpu-tiny" / "cpu-closed.json").repeats == 4


def test_cli_show_lists_a_refused_old_baseline_among_the_others(tmp_path, capsys):
    bdir = tmp_path / "baselines"
    old = bdir / "h100" / "optimized" / "chat.json"
    old.parent.mkdir(parents=True)
    old.write_text(json.dumps({"schema_version": 1, "gpu_class": "h100", "profile": "optimized", "scenario": "chat",
                               "repeats": 3, "metrics": {}}))
    assert main(["baselines", "--dir", str(bdir), "show"]) == 0
    out = capsys.readouterr().out
    assert "h100/optimized/chat: REFUSED" in out and "measurement method 1" in out and "--perfgate-update-baselines" in out


def test_cli_refresh_accepts_a_regression_only_with_a_reason_and_stores_it(tmp_path, capsys, gate_pyproject):
    results, bdir = tmp_path / "results", tmp_path / "baselines"
    results.mkdir()
    _save_run(results, run_phases(3, results_dir=results), gate_status="regressed")
    refresh = ["baselines", "--dir", str(bdir), "refresh", "--from", str(results)]
    assert main(refresh) == 1
    out = capsys.readouterr().out
    assert "refused cpu/cpu-tiny/cpu-closed" in out and "its baseline gate was REGRESSED" in out
    assert "--accept-regression WHY" in out and not (bdir / "cpu").exists()
    why = "vLLM 0.26 fixes a wrong-output bug at 5 % throughput"
    assert main([*refresh, "--accept-regression", why]) == 0
    out = capsys.readouterr().out
    assert f"accepted although its gate failed: {why} (its baseline gate was REGRESSED in {results})" in out
    stored = load_baseline(bdir / "cpu" / "cpu-tiny" / "cpu-closed.json")
    assert stored.accepted_regression.startswith(why)
    assert main(["baselines", "--dir", str(bdir), "show"]) == 0
    assert f"accepted although its gate failed: {why}" in capsys.readouterr().out
    # A later refresh from a passing run stores no reason: the acceptance belonged to that run.
    _save_run(results, run_phases(3, seed=5, results_dir=results), gate_status="pass")
    assert main([*refresh, "--accept-regression", "not needed"]) == 0
    capsys.readouterr()
    assert load_baseline(bdir / "cpu" / "cpu-tiny" / "cpu-closed.json").accepted_regression == ""


def test_cli_refresh_never_accepts_an_invalid_run(tmp_path, capsys, gate_pyproject):
    results, bdir = tmp_path / "results", tmp_path / "baselines"
    results.mkdir()
    _save_run(results, run_phases(3, results_dir=results), gate_status="invalid")
    assert main(["baselines", "--dir", str(bdir), "refresh", "--from", str(results), "--accept-regression", "x"]) == 1
    assert "its baseline gate was INVALID (gate said invalid)" in capsys.readouterr().out
    assert not (bdir / "cpu").exists()


def test_cli_refresh_reads_only_the_declared_phases_never_a_nested_ab_run(tmp_path, capsys, gate_pyproject):
    """The CPU A/B test measures a slowed copy of cpu-tiny under results/ab/B: same key, other server."""
    results, bdir = tmp_path / "results", tmp_path / "baselines"
    results.mkdir()
    own = run_phases(3, results_dir=results)
    _save_run(results, own, gate_status="pass")
    for side, scale in (("A", 1.0), ("B", 5.0)):
        for p in run_phases(3, seed=9, scale=scale, session_prefix=f"ab-{side}"):
            write_json_atomic(results / "ab" / side / "phases" / f"{p.profile}__{p.scenario}__r{p.repeat}.json",
                              p.to_dict())
    assert main(["baselines", "--dir", str(bdir), "refresh", "--from", str(results)]) == 0
    capsys.readouterr()
    b = load_baseline(bdir / "cpu" / "cpu-tiny" / "cpu-closed.json")
    assert b.repeats == 3 and not any(s.startswith("ab-") for s in b.sessions)
    assert b.metrics["p99_e2el_ms"] == pytest.approx([p.metrics["p99_e2el_ms"] for p in own], rel=1e-5)


def test_cli_refresh_from_a_run_that_did_not_finish_is_refused(tmp_path, capsys):
    results = tmp_path / "killed"
    for p in run_phases(3):  # phase files, but no session.json / run.json: a killed run
        write_json_atomic(results / "phases" / f"{p.profile}__{p.scenario}__r{p.repeat}.json", p.to_dict())
    assert main(["baselines", "--dir", str(tmp_path / "b"), "refresh", "--from", str(results)]) == 2
    err = capsys.readouterr().err
    assert "no session.json or run.json: the run did not finish" in err and str(results) in err
