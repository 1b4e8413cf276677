"""Reports: results-directory checks, run.json, summary.md, plots, reading saved runs, A/B."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from perfgate._errors import ResultsDirError
from perfgate.cli import main
from perfgate.core.catalog import METRICS
from perfgate.core.phase import PhaseResult, write_json_atomic
from perfgate.report import check_results_dir, read_phase_results, write_report
from perfgate.report.tables import table
from perfgate.verdict.ab import BETTER, SAME, WORSE, ab_compare
from perfgate.verdict.baseline import baseline_from_phases
from perfgate.verdict.gate import compare
from perfgate.verdict.slo_files import load_slos

REPO = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


def fake_phase(results: Path, profile: str, repeat: int, rng: random.Random, *, slow: float = 1.0,
               rate: float = 2.0, scenario: str = "cpu-poisson", timeline: bool = True,
               session: str = "session-1") -> PhaseResult:
    """A CPU phase with a records file and a timeline in the formats the load engine and telemetry write."""
    t0 = 1_700_000_000.0 + 100 * repeat
    records, load = [], []
    t = t0
    for i in range(40):
        t += rng.expovariate(rate)
        ttft = rng.lognormvariate(math.log(0.12 * slow), 0.4)
        e2e = ttft + rng.uniform(0.8, 1.6) * slow
        records.append({"index": i, "phase": "measure", "sent": t, "ttft": ttft, "latency": e2e, "error": None})
        load.append({"scheduled": t, "sent": t, "first_token": t + ttft, "end": t + e2e, "error": None})
    end = t + 3
    stem = f"{profile}__{scenario}__rate{rate:g}__r{repeat}"
    write_json_atomic(results / f"{stem}__records.json", records)
    artifacts = {"records": f"{stem}__records.json"}
    if timeline:
        steps = [t0 + 0.5 * k for k in range(int((end - t0) / 0.5))]
        server = [{"t": s, "running": sum(e["sent"] <= s < e["end"] for e in load), "waiting": 0,
                   "kv_cache_usage_pct": 5.0 * sum(e["sent"] <= s < e["end"] for e in load)} for s in steps]
        write_json_atomic(results / f"{stem}__timeline.json", {
            "schema_version": 1, "t0": t0, "window": {"start": t0, "end": end}, "load": load,
            "nvml": {"available": False, "reason": "NVML Shared Library Not Found", "samples": []},
            "server": {"available": True, "reason": "", "samples": server}})
        artifacts["timeline"] = f"{stem}__timeline.json"
    e2es = sorted(r["latency"] * 1000 for r in records)
    ttfts = sorted(r["ttft"] * 1000 for r in records)
    metrics = {"request_throughput": 40 / (end - t0), "output_throughput": 40 * 48 / (end - t0),
               "p50_ttft_ms": ttfts[20], "p99_ttft_ms": ttfts[-1], "p50_e2el_ms": e2es[20], "p99_e2el_ms": e2es[-1],
               "mean_e2el_ms": sum(e2es) / 40, "error_rate": 0.0, "token_count_mismatches": 0,
               "offered_rate": rate, "achieved_rate_ratio": 0.99, "running_batch_mean": 2.0 * slow}
    return PhaseResult(profile, scenario, "cpu", metrics=metrics, repeat=repeat, started_at=t0,
                       unavailable={"nvml": "NVML Shared Library Not Found"},
                       fingerprint={"gpu_model": "cpu", "vllm_version": "0.32.0"}, artifacts=artifacts,
                       server_session=session)


def test_check_results_dir_accepts_a_writable_dir(tmp_path):
    assert check_results_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert list((tmp_path / "new" / "run").iterdir()) == []  # the probe is gone


def test_check_results_dir_fails_early_when_it_cannot_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ResultsDirError) as err:
        check_results_dir(blocker / "results")  # a parent that is a file: nobody can create it, root neither
    assert str(blocker / "results") in str(err.value) and "--perfgate-results-dir" in str(err.value)


def test_check_results_dir_fails_early_when_the_disk_is_full(tmp_path):
    with pytest.raises(ResultsDirError, match="GiB free"):
        check_results_dir(tmp_path, min_free_gib=1e9)


def test_full_report_has_json_markdown_and_plots(tmp_path):
    rng = random.Random(0)
    results = check_results_dir(tmp_path / "results")
    # A baseline holds repeats of two server sessions (the server restarted between them).
    base_runs = [fake_phase(results, "cpu-tiny", r, rng, session=f"base-{r // 2}") for r in range(4)]
    baseline = baseline_from_phases(base_runs, results_dir=results)
    assert baseline.session_count == 2
    current = [fake_phase(results, "cpu-tiny", 10 + r, rng, slow=1.5) for r in range(3)]
    sweep = [fake_phase(results, "cpu-tiny", 20 + i, rng, rate=r, scenario="cpu-sweep", timeline=False,
                        slow=1 + (r / 4) ** 3) for i, r in enumerate((0.5, 1, 2, 3, 4))]
    slos = load_slos("cpu", "cpu-tiny", "cpu-poisson", REPO / "slos")
    slo_verdicts = [slos.evaluate(current, results)]
    gate = compare(current, baseline)
    ab = ab_compare(base_runs, current)
    files = write_report(results, current + sweep, slo_verdicts=slo_verdicts, gate_verdicts=[gate],
                         ab_verdicts=[ab], baselines={baseline.key: baseline}, slo_sets={slos.key: slos})

    run = json.loads(files.run_json.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert len(run["phases"]) == 8 and run["gate"][0]["status"] == gate.status
    assert run["slo"][0]["key"] == "cpu/cpu-tiny/cpu-poisson" and run["passed"] == (gate.passed and all(
        v.passed for v in slo_verdicts))
    assert run["ab"][0]["worse"] == ab.worse

    md = files.summary_md.read_text()
    assert "| `cpu/cpu-tiny/cpu-poisson` | 3 |" in md and "**Baseline gate:" in md and "**SLOs:" in md
    assert "nvml unavailable: NVML Shared Library Not Found" in md
    assert "p99_e2el_ms" in md and "[run.json](run.json)" in md
    pngs = [p for paths in files.plots.values() for p in paths]
    names = sorted(p.name for p in pngs)
    assert "cpu__cpu-tiny__cpu-poisson__latency_cdf.png" in names
    assert "cpu__cpu-sweep__sweep.png" in names
    assert sum(n.endswith("__timeline.png") for n in names) == 3
    for p in pngs:
        assert p.read_bytes()[:8] == PNG and p.stat().st_size > 10_000  # a real picture, not an empty canvas
        assert f"]({p.relative_to(results)})" in md


def test_summary_shows_one_slo_verdict_per_phase_key_with_the_rule_and_failing_repeats():
    from perfgate.report.markdown import render_summary

    def repeat(r: int, p99: float) -> PhaseResult:
        return PhaseResult("cpu-tiny", "cpu-closed", "cpu", repeat=r, metrics={
            "request_throughput": 3.0, "p99_ttft_ms": 300.0, "p99_e2el_ms": p99, "error_rate": 0.0,
            "token_count_mismatches": 0})

    phases = [repeat(0, 2000.0), repeat(1, 31500.0), repeat(2, 2500.0)]  # the middle repeat breaks 30 s
    slos = load_slos("cpu", "cpu-tiny", "cpu-closed", REPO / "slos")
    md = render_summary(phases, slo_verdicts=[slos.evaluate(phases)])
    assert "| `cpu/cpu-tiny/cpu-closed` | 3 | yes | ❌ fail: p99_e2el_ms |" in md
    assert md.count("**SLOs:") == 1 and "**SLOs: FAIL** (1 of 4 bounds failed, 3 repeats judged)" in md
    assert "a bound holds only if it holds in every repeat" in md
    failed = next(line for line in md.splitlines() if line.startswith("| FAIL | p99_e2el_ms"))
    assert "31,500 ms" in failed and "2,000 / 31,500 / 2,500 ms" in failed and "fails in repeat 2 of 3" in failed
    passed = next(line for line in md.splitlines() if line.startswith("| pass | p99_ttft_ms"))
    assert "/" not in passed.split("|")[5]  # per-repeat values only where a bound failed
    ok = render_summary(phases[:1], slo_verdicts=[slos.evaluate(phases[:1])])
    assert "**SLOs: PASS** (1 repeat judged)" in ok and "per repeat" not in ok


def _gate_phase(repeat: int, session: str, *, tput: float, p99_e2el: float, ttft: float, p50_e2el: float,
                batch: float) -> PhaseResult:
    return PhaseResult("cpu-tiny", "cpu-closed", "cpu", repeat=repeat, started_at=float(repeat),
                       server_session=session, fingerprint={"vllm_version": "0.32.0"}, metrics={
                           "output_throughput": tput, "p99_e2el_ms": p99_e2el, "median_ttft_ms": ttft,
                           "error_rate": 0.0, "p50_e2el_ms": p50_e2el, "running_batch_mean": batch})


def test_summary_gate_section_states_the_rule_and_every_gated_verdict():
    """A run that is clearly slower at P99 E2E, undecided on a noisy median TTFT and unchanged in throughput:
    the summary names the rule, lists every gated metric with its verdict (worst first), and says that
    report-only figures (a duplicate, an occupancy figure) are not gated even when they moved a lot."""
    from perfgate.report.markdown import render_summary
    from perfgate.verdict.gate_settings import GateSettings

    base = [_gate_phase(r, f"base-{r // 3}", tput=t, p99_e2el=e, ttft=f, p50_e2el=1000 + 10 * r, batch=4.0)
            for r, (t, e, f) in enumerate(zip((100, 101, 99, 100.5, 99.5, 100), (2000, 2010, 1990, 2005, 1995, 2000),
                                              (100, 102, 98, 101, 99, 100)))]
    baseline = baseline_from_phases(base)
    current = [_gate_phase(10 + r, "current", tput=t, p99_e2el=e, ttft=f, p50_e2el=1500 + r, batch=8.0)
               for r, (t, e, f) in enumerate(zip((100.2, 99.8, 100.1), (3000, 3010, 2990), (100, 300, 40)))]
    gate = compare(current, baseline, GateSettings(gpu_class="cpu"))
    verdicts = {r.metric: r.verdict for r in gate.rows}
    assert verdicts == {"p99_e2el_ms": "regressed", "median_ttft_ms": "inconclusive", "output_throughput": "pass",
                        "error_rate": "pass", "p50_e2el_ms": "reported", "running_batch_mean": "reported"}
    md = render_summary(current, gate_verdicts=[gate], baselines={baseline.key: baseline})
    lines = md.splitlines()

    assert "| `cpu/cpu-tiny/cpu-closed` | 3 | yes | ⚪ no SLO set | ❌ REGRESSED: p99_e2el_ms |" in md
    head = next(line for line in lines if line.startswith("**Baseline gate: REGRESSED** — "))
    assert head.startswith("**Baseline gate: REGRESSED** — no change in vLLM, torch, CUDA, driver, flags: "
                           "p99_e2el_ms +50.0% [")
    assert head.endswith("— worse by more than the minimum effect: p99_e2el_ms +50.0%")
    rule = next(line for line in lines if line.startswith("Rule: each gated metric"))
    for part in ("tested one-sided against its margin", "the minimum effect, or its absolute floor if larger",
                 "noise from 2 baseline server session(s) and 3 repeat(s) of this run",
                 "REGRESSED when worse by more than the margin at 95 % confidence (holm-corrected)",
                 "PASS when shown within it", "else INCONCLUSIVE (more repeats, up to 6)"):
        assert part in rule
    assert "| verdict | metric | baseline | current | change | 95% bounds | margin | detectable | note |" in md
    gated = [line.split(" | ")[:2] for line in lines if line.startswith(("| REGRESSED |", "| INCONCLUSIVE |",
                                                                           "| PASS |", "| REPORTED |"))]
    assert gated == [["| REGRESSED", "p99_e2el_ms"], ["| INCONCLUSIVE", "median_ttft_ms"], ["| PASS", "error_rate"],
                     ["| PASS", "output_throughput"]]  # worst first; report-only rows are not in the table
    regressed = next(line for line in lines if line.startswith("| REGRESSED |")).split(" | ")
    margin = f"+{METRICS['p99_e2el_ms'].min_effect * 100:.0f}%"
    assert regressed[2:5] == ["2,000 ms", "3,000 ms", "+50.0%"] and regressed[6] == margin
    moved = next(line for line in lines if line.startswith("Report-only figures"))
    assert "not gated" in moved and "p50_e2el_ms +46.4%" in moved and "running_batch_mean +100.0%" in moved

    # A smoke gate (the CPU path) lets an undecided run through and says it is a smoke test.
    unchanged = [_gate_phase(10 + r, "current", tput=t, p99_e2el=e, ttft=f, p50_e2el=1000.0, batch=4.0)
                 for r, (t, e, f) in enumerate(zip((100.2, 99.8, 100.1), (2000, 2010, 1990), (100, 300, 40)))]
    smoke = compare(unchanged, baseline, GateSettings(gpu_class="cpu", smoke=True))
    assert smoke.status == "inconclusive" and smoke.passed
    md = render_summary(unchanged, gate_verdicts=[smoke])
    assert "| ⚪ INCONCLUSIVE (smoke gate) |" in md and "**Baseline gate: INCONCLUSIVE** (smoke gate)" in md
    assert "| INCONCLUSIVE | median_ttft_ms |" in md and "Report-only figures" not in md


def test_summary_opens_with_what_changed_since_the_baseline():
    """A vLLM upgrade and a flag change: named in one line above the verdict table, and in the gate section."""
    from perfgate.report.markdown import render_summary
    from perfgate.verdict.gate_settings import GateSettings

    line = "vllm serve /m --max-num-seqs 8 --dtype bfloat16"
    base = [_gate_phase(r, f"base-{r // 3}", tput=100 + r % 3, p99_e2el=2000 + r % 3, ttft=100 + r % 3,
                        p50_e2el=1000, batch=4.0) for r in range(6)]
    for p in base:
        p.fingerprint.update({"command_line": line, "driver": "580.1"})
    baseline = baseline_from_phases(base)
    current = [_gate_phase(10 + r, "current", tput=100 + r, p99_e2el=2000 + r, ttft=100 + r, p50_e2el=1000,
                           batch=4.0) for r in range(3)]
    for p in current:
        p.fingerprint.update({"vllm_version": "0.33.0", "driver": "580.1",
                              "command_line": line.replace("--max-num-seqs 8", "--max-num-seqs 16")})
    gate = compare(current, baseline, GateSettings(gpu_class="cpu", smoke=True))
    md = render_summary(current, gate_verdicts=[gate], baselines={baseline.key: baseline})
    lines = md.splitlines()
    changed = "vLLM 0.32.0 → 0.33.0; flags --max-num-seqs 8 → 16"
    assert lines[2] == f"**What changed since the baseline:** {changed} — `cpu/cpu-tiny/cpu-closed`"
    table = next(i for i, text in enumerate(lines) if text.startswith("| phase | repeats |"))
    assert table > 2  # above the verdict table
    assert any(text.startswith(f"**Baseline gate: {gate.status.upper()}** (smoke gate) — {changed}: ")
               for text in lines)
    # Several phases with different changes: one line each.
    other = compare([_gate_phase(20, "x", tput=100, p99_e2el=2000, ttft=100, p50_e2el=1000, batch=4.0)], None)
    other.key = "cpu/cpu-tiny/cpu-poisson"
    md = render_summary(current, gate_verdicts=[gate, other])
    assert f"- {changed}: `cpu/cpu-tiny/cpu-closed`" in md
    assert "- no baseline to compare with (NEW): `cpu/cpu-tiny/cpu-poisson`" in md


def test_report_without_records_or_timelines_writes_no_plots(tmp_path):
    phase = PhaseResult("p", "s", "cpu", metrics={"request_throughput": 2.0})
    files = write_report(tmp_path, [phase])
    assert files.plots == {"cpu/p/s": []} and files.summary_md.is_file()


def test_read_phase_results_finds_saved_phases_and_skips_other_json(tmp_path):
    rng = random.Random(1)
    phases = [fake_phase(tmp_path, "a", r, rng) for r in range(2)]
    for p in phases:
        write_json_atomic(tmp_path / f"phase-{p.repeat}.json", p.to_dict())
    (tmp_path / "half.json").write_text('{"profile": ')  # a file a killed run left behind
    got = read_phase_results(tmp_path)
    assert [(p.profile, p.repeat) for p in got] == [("a", 0), ("a", 1)]
    with pytest.raises(ResultsDirError, match="not found"):
        read_phase_results(tmp_path / "missing")


def _ab_phases(profile: str, n: int, rng: random.Random, rate: float, p99: float) -> list[PhaseResult]:
    return [PhaseResult(profile, "chat", "cpu", repeat=r, started_at=2 * r + (profile == "b"), metrics={
        "request_throughput": rate * math.exp(rng.gauss(0, 0.08)), "p99_e2el_ms": p99 * math.exp(rng.gauss(0, 0.1)),
        "p50_ttft_ms": 100 * math.exp(rng.gauss(0, 0.1))}) for r in range(n)]


def test_ab_verdicts_are_direction_aware():
    rng = random.Random(3)
    a = _ab_phases("defaults", 5, rng, 4.2, 1850)
    b = _ab_phases("optimized", 5, rng, 6.3, 1180)  # the seed's claim: +50 % throughput, lower P99
    v = ab_compare(a, b)
    assert v.row("request_throughput").verdict == BETTER and v.row("request_throughput").change.relative > 0.3
    assert v.row("p99_e2el_ms").verdict == BETTER and v.row("p99_e2el_ms").change.relative < 0
    assert v.row("p50_ttft_ms").verdict == SAME
    assert ab_compare(b, a).row("request_throughput").verdict == WORSE
    text = table(v)
    assert "B=optimized vs A=defaults" in text and "better" in text and "95% CI" in text
    paired = ab_compare(a, b, paired=True)
    assert paired.paired and paired.row("request_throughput").change.method == "paired"
    with pytest.raises(ValueError, match="paired"):
        ab_compare(a, b[:3], paired=True)


def test_ab_cli_over_a_saved_run(tmp_path, capsys):
    rng = random.Random(4)
    for p in _ab_phases("defaults", 3, rng, 4.2, 1850) + _ab_phases("optimized", 3, rng, 6.3, 1180):
        write_json_atomic(tmp_path / f"{p.profile}-{p.repeat}.json", p.to_dict())
    assert main(["ab", "--results", str(tmp_path), "--a", "defaults", "--b", "optimized", "--scenario", "chat"]) == 0
    out = capsys.readouterr().out
    assert "A/B chat: B=optimized vs A=defaults (3 x A, 3 x B)" in out and "request_throughput" in out
    assert main(["ab", "--results", str(tmp_path), "--a", "defaults", "--b", "nope", "--scenario", "chat"]) == 2
    assert "defaults, optimized" in capsys.readouterr().err


def test_timeline_plot_with_gpu_samples(tmp_path):
    """Several GPUs (tensor parallel): one utilization and one VRAM line each, on the load's clock."""
    from perfgate.report.plots import plot_timeline

    nvml = [{"t": 100 + k * 0.1, "gpu": g, "util_pct": 60.0 + g, "mem_used_gib": 18.0 + g}
            for k in range(50) for g in (0, 1)]
    server = [{"t": 100 + k * 0.5, "running": 4, "waiting": k % 3, "kv_cache_usage_pct": 30.0} for k in range(10)]
    load = [{"sent": 100.5 + i * 0.2, "end": 101.5 + i * 0.2, "error": None} for i in range(10)]
    out = plot_timeline(tmp_path / "t.png", {"t0": 100, "load": load, "nvml": {"samples": nvml},
                                             "server": {"samples": server}})
    assert out is not None and out.read_bytes()[:8] == PNG
    assert plot_timeline(tmp_path / "none.png", {"nvml": {}, "server": {}, "load": []}) is None


def test_write_run_report_from_a_session_redacts_the_api_key(tmp_path):
    from perfgate.run.session import PerfgateSession

    rng = random.Random(5)
    session = PerfgateSession(results_dir=tmp_path, api_key="sk-secret-123")
    for r in range(2):
        p = fake_phase(tmp_path, "cpu-tiny", r, rng)
        p.fingerprint["command_line"] = "vllm serve tiny --api-key sk-secret-123"
        session.add_phase(p)
    slos = load_slos("cpu", "cpu-tiny", "cpu-poisson", REPO / "slos")
    verdict = slos.evaluate(session.phases, tmp_path)  # every repeat of the key, as PhaseRunner.assert_slos does
    session.verdicts["cpu/cpu-tiny/cpu-poisson"] = {"slo": verdict, "gate": compare(session.phases, None)}
    from perfgate.report import write_run_report

    files = write_run_report(session)
    run = json.loads(files.run_json.read_text())
    assert run["gate"][0]["status"] == "new" and run["slo"][0]["passed"] == verdict.passed
    assert run["slo"][0]["repeats"] == 2 and "each of the 2 repeats" in run["slo"][0]["rule"]
    for path in (files.run_json, files.summary_md):
        assert "sk-secret-123" not in path.read_text()
    md = files.summary_md.read_text()
    assert "***" in files.run_json.read_text() and "⚪ NEW (no baseline) |" in md and "**Baseline gate: NEW** — no baseline" in md
    assert md.splitlines()[2] == ("**What changed since the baseline:** no baseline to compare with (NEW) — "
                                  "`cpu/cpu-tiny/cpu-poisson`")
