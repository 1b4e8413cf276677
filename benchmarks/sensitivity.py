"""The gate's measured power: noise per metric, smallest detectable change, A/A false alarms, real knobs.

Run on a GPU runner (one command; about 20 minutes for one profile):

    python benchmarks/sensitivity.py run --profile optimized --out results/sensitivity

It drives the suite the way users do, with real vLLM:
  1. record: `pytest perf_tests/test_gpu_serving.py --perfgate-update-baselines` - the baselines, measured in
     server sessions with restarts between them (fresh prompts in every repeat);
  2. aa: the PR gate (`pytest perf_tests -m gpu --profile P`) on the unchanged profile: one more server
     session judged against those baselines, timed (the PR gate's wall time, server start included);
  3. knobs: the same profile with one launch flag a user could flip by mistake (`--knob max-num-seqs=16`,
     `--knob enforce-eager=true`, ...), each judged by the gate against the same baselines.

Then (or later, from the saved directory: `python benchmarks/sensitivity.py report results/sensitivity`)
it prints per scenario and gated metric: the within-session and session-to-session noise, the smallest
worsening the configured gate calls REGRESSED at 95 % power, and the A/A false-alarm rate three ways: the
gate's arithmetic, resampling of the real sessions (every session as "current" against a baseline of the
others, repeats bootstrapped within sessions), and a simulation from the measured noise. Each knob's
measured change and the gate's verdict follow. `noise.json` in the output directory keeps the measured
noise for tests/test_gate.py's simulation.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from perfgate.core.catalog import METRICS
from perfgate.core.phase import PhaseResult
from perfgate.core.results import read_phase_results
from perfgate.verdict.baseline import baseline_from_phases
from perfgate.verdict.gate import PASS, compare, sensitivity
from perfgate.verdict.gate_settings import load_gate_settings
from perfgate.verdict.power import simulate_gate


# ---------------------------------------------------------------- running
def _pytest(args: list[str], log: Path, env: dict[str, str] | None = None) -> dict:
    start = time.monotonic()
    with log.open("w") as fh:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args], cwd=REPO,
                             stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    wall = time.monotonic() - start
    print(f"  exit {rc}, {wall:.0f} s ({log})", flush=True)
    return {"rc": rc, "wall_s": round(wall, 1), "log": str(log)}


def _knob_profiles(profile: str, knob: str, directory: Path) -> None:
    """A profiles directory whose ``profile`` has one extra [vllm] flag: what a regressing PR looks like."""
    name, _, value = knob.partition("=")
    shutil.copytree(REPO / "profiles", directory)
    path = directory / f"{profile}.toml"
    text = path.read_text()
    literal = value if value in ("true", "false") or value.replace(".", "", 1).isdigit() else json.dumps(value)
    lines, out, in_vllm, done = text.splitlines(), [], False, False
    for line in lines:
        stripped = line.strip()
        if in_vllm and stripped.split("=")[0].strip() == name:
            continue  # replaced below
        if stripped.startswith("[") and in_vllm and not done:
            out.append(f"{name} = {literal}")
            done = True
        in_vllm = stripped == "[vllm]" or (in_vllm and not stripped.startswith("["))
        out.append(line)
    if not done:
        if "[vllm]" not in text:
            out.append("[vllm]")
        out.append(f"{name} = {literal}")
    path.write_text("\n".join(out) + "\n")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"profile": args.profile, "steps": {}}
    common = ["-m", args.marker, "--profile", args.profile]
    if not args.skip_record:
        print("record: baselines in server sessions (restart between)", flush=True)
        manifest["steps"]["record"] = _pytest([args.tests, *common, "--perfgate-update-baselines",
                                               "--perfgate-results-dir", str(out / "record")], out / "record.log")
    print("aa: the PR gate on the unchanged profile", flush=True)
    manifest["steps"]["aa"] = _pytest([args.aa_tests, *common, "--perfgate-results-dir", str(out / "aa")],
                                      out / "aa.log")
    for knob in args.knob:
        tag = "knob-" + knob.replace("=", "-").replace(".", "_")
        print(f"{tag}: {args.profile} with --{knob}", flush=True)
        profiles = out / f"{tag}-profiles"
        shutil.rmtree(profiles, ignore_errors=True)
        _knob_profiles(args.profile, knob, profiles)
        manifest["steps"][tag] = _pytest([args.tests, *common, "-k", args.knob_tests,
                                          "--perfgate-results-dir", str(out / tag)], out / f"{tag}.log",
                                         env={"PERFGATE_PROFILES_DIR": str(profiles)})
        manifest["steps"][tag]["knob"] = knob
    (out / "sensitivity.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return report(argparse.Namespace(directory=out, trials=args.trials, sim_trials=args.sim_trials))


# ---------------------------------------------------------------- analysis
def _sessions(phases: list[PhaseResult]) -> dict[str, list[PhaseResult]]:
    groups: dict[str, list[PhaseResult]] = {}
    for p in sorted(phases, key=lambda p: p.started_at):
        groups.setdefault(p.server_session or "(unknown)", []).append(p)
    return groups


def _aa_resampled(sessions: dict[str, list[PhaseResult]], settings, trials: int, rng: random.Random) -> dict:
    """Every session as "current" against a baseline of two others, repeats bootstrapped within sessions."""
    names = list(sessions)
    if len(names) < 3:
        return {}
    alarms, per_metric, n = 0, {}, 0
    for cur_name in names:
        others = [s for s in names if s != cur_name]
        for pair in itertools.combinations(others, 2):
            for _ in range(trials):
                base = [p for s in pair for p in _boot(sessions[s], rng)]
                cur = _boot(sessions[cur_name], rng)
                verdict = compare(cur, baseline_from_phases(base, min_sessions=2, min_repeats=2), settings)
                n += 1
                alarms += verdict.status != PASS
                for row in verdict.gated_rows:
                    per_metric.setdefault(row.metric, 0)
                    per_metric[row.metric] += row.verdict != PASS
    return {"trials": n, "phase": alarms / n, "metrics": {m: c / n for m, c in per_metric.items()}}


def _boot(phases: list[PhaseResult], rng: random.Random) -> list[PhaseResult]:
    return [PhaseResult.from_dict({**p.to_dict(), "repeat": i}) for i, p in
            enumerate(rng.choice(phases) for _ in phases)]


def report(args: argparse.Namespace) -> int:
    out = Path(args.directory)
    manifest = json.loads((out / "sensitivity.json").read_text()) if (out / "sensitivity.json").exists() else {}
    rng = random.Random(0)
    unchanged = [p for d in ("record", "aa") if (out / d).is_dir() for p in read_phase_results(out / d)
                 if not p.scenario.endswith("-locust")]
    noise_out: dict[str, dict] = {}
    lines = [f"# Gate sensitivity: {manifest.get('profile', '?')} ({out})", ""]
    for step, info in manifest.get("steps", {}).items():
        lines.append(f"- {step}: exit {info['rc']}, wall {info['wall_s']:.0f} s")
    for key in sorted({p.key for p in unchanged}):
        phases = [p for p in unchanged if p.key == key and p.valid]
        gpu_class = phases[0].gpu_class
        settings = load_gate_settings(gpu_class)
        sessions = _sessions(phases)
        base = baseline_from_phases(phases, min_sessions=1, min_repeats=1)
        rows = sensitivity(base, settings, settings.repeats)
        resampled = _aa_resampled(sessions, settings, args.trials, rng)
        noise = {r.metric: {"mean": r.mean, "within": r.within_cv, "between": r.between_cv or 0.0}
                 for r in rows if r.log_scale and METRICS[r.metric].kind in ("throughput", "latency")}
        noise_out[key] = {"sessions": len(sessions), "repeats": len(phases), "metrics": noise}
        lines += ["", (f"## `{key}`: {len(phases)} valid repeats in {len(sessions)} server sessions "
                       f"(gate: {settings.repeats} repeats vs a baseline of {settings.baseline_sessions} sessions)"),
                  "", ("| metric | within-session CV | session-to-session CV | margin | detectable at 95 % power "
                       "| A/A not-PASS (arithmetic) | A/A not-PASS (resampled real sessions) |"),
                  "|---|---|---|---|---|---|---|"]
        for r in rows:
            res = resampled.get("metrics", {}).get(r.metric)
            lines.append(f"| {r.metric} | {r.within_cv * 100:.2f} % | "
                         f"{'-' if r.between_cv is None else f'{r.between_cv * 100:.2f} %'} | {r.margin * 100:+.0f} % | "
                         f"{'-' if r.detectable is None else f'{r.detectable * 100:+.1f} %'} | "
                         f"{r.false_alarm * 100:.2f} % | {'-' if res is None else f'{res * 100:.1f} %'} |")
        if resampled:
            lines += ["", (f"Whole gate, A/A resampled from the real sessions: {resampled['phase'] * 100:.1f} % "
                           f"of {resampled['trials']} trials did not PASS.")]
        if noise and len(sessions) >= 2:
            aa = simulate_gate(noise, settings, trials=args.sim_trials)
            warm = simulate_gate(noise, settings, trials=args.sim_trials, current_extra={"temperature_c_peak": 64.0},
                                 baseline_extra={"temperature_c_peak": 61.0})
            power = {m: simulate_gate(noise, settings, trials=args.sim_trials // 2, shift={m: s})
                     for m, s in (("output_throughput", -0.05), ("median_tpot_ms", 0.05), ("p99_e2el_ms", 0.05))
                     if m in noise}
            caught = "; ".join(f"a 5 % worse {m} caught in {v * 100:.1f} %" for m, v in power.items())
            lines += [(f"Simulated from this noise ({args.sim_trials} trials; inconclusive runs add repeats as "
                       f"the runner does): A/A not-PASS {aa * 100:.2f} %, with the GPU 3 C warmer "
                       f"{warm * 100:.2f} %; {caught}.")]
    knobs = [(s, i) for s, i in manifest.get("steps", {}).items() if s.startswith("knob-")]
    if knobs:
        lines += ["", "## Real knobs, judged by the gate against the recorded baselines", "",
                  "| knob | scenario | gate verdict | output throughput | median TPOT | P99 E2E | median TTFT |",
                  "|---|---|---|---|---|---|---|"]
        for step, info in knobs:
            run_json = out / step / "run.json"
            if not run_json.exists():
                lines.append(f"| {info['knob']} | - | no run.json (exit {info['rc']}, see {info['log']}) | | | | |")
                continue
            for gate in json.loads(run_json.read_text()).get("gate", []):
                cells = {r["metric"]: r.get("relative") for r in gate.get("rows", [])}
                fmt = [("-" if cells.get(m) is None else f"{cells[m] * 100:+.1f} %")
                       for m in ("output_throughput", "median_tpot_ms", "p99_e2el_ms", "median_ttft_ms")]
                lines.append(f"| {info['knob']} | {gate['key']} | {gate['status'].upper()} | " + " | ".join(fmt) + " |")
    text = "\n".join(lines) + "\n"
    (out / "sensitivity.md").write_text(text)
    (out / "noise.json").write_text(json.dumps(noise_out, indent=2) + "\n")
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="record baselines, run the A/A PR gate and the knobs, then report")
    r.add_argument("--profile", default="optimized")
    r.add_argument("--out", default="results/sensitivity")
    r.add_argument("--knob", action="append", default=[], metavar="FLAG=VALUE",
                   help="a vLLM flag of the profile to change (repeatable), e.g. max-num-seqs=16")
    r.add_argument("--knob-tests", default="fixed", help="pytest -k expression of the tests a knob runs")
    r.add_argument("--marker", default="gpu", help="pytest -m marker (cpu: the toy-scale CPU path)")
    r.add_argument("--tests", default="perf_tests/test_gpu_serving.py",
                   help="test file that records baselines and runs the knobs")
    r.add_argument("--aa-tests", default="perf_tests", help="what the A/A step runs (the PR gate: perf_tests)")
    r.add_argument("--skip-record", action="store_true", help="use the baselines already in baselines/")
    r.add_argument("--trials", type=int, default=50, help="bootstrap trials per A/A session split")
    r.add_argument("--sim-trials", type=int, default=2000, help="simulated gate runs per figure")
    r.set_defaults(func=run)
    p = sub.add_parser("report", help="print the tables again from a saved output directory")
    p.add_argument("directory", type=Path)
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--sim-trials", type=int, default=2000)
    p.set_defaults(func=report)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
