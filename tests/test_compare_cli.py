"""``perfgate compare BASELINE RESULTS_DIR`` and the verdict exit codes (0 pass, 1 regressed, 3 inconclusive,
2 bad input), also of ``perfgate ab``.

The run is real: tests/data/cpu-run holds the phase files of a real vLLM CPU run (cpu-tiny, four cpu-closed
repeats in two server sessions, one cpu-poisson), laid out here as a finished run (the ``session.json`` that
declares them); the baseline is the committed baselines/cpu/cpu-tiny/cpu-closed.json. A regression is that
same run slowed on paper (throughputs divided, latencies multiplied), since the CLI under test judges
figures, not vLLM. The gate settings are the tests' own (``$PERFGATE_PYPROJECT``), not the repo's tuning.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from perfgate.cli import main
from perfgate.core.catalog import METRICS
from perfgate.verdict.exit_codes import EXIT_INCONCLUSIVE, EXIT_PASS, EXIT_USAGE, EXIT_WORSE

REPO = Path(__file__).resolve().parent.parent
REAL_RUN = REPO / "tests" / "data" / "cpu-run"
BASELINE = REPO / "baselines" / "cpu" / "cpu-tiny" / "cpu-closed.json"
CPU_GATED = '["failed", "error_rate", "token_count_mismatches", "output_throughput", "p99_e2el_ms"]'
# A non-smoke gate whose margin (3x) the real run's noise can show it is within: PASS, or REGRESSED when slowed.
WIDE = f"[tool.perfgate.gate.class.cpu]\nmin_effect_all = 2.0\ngated = {CPU_GATED}\n"
# The catalog's margins (a few %), which four noisy CPU repeats can neither meet nor break: INCONCLUSIVE.
TIGHT = f"[tool.perfgate.gate.class.cpu]\ngated = {CPU_GATED}\n"


def saved_run(dest: Path, *, slowdown: float = 1.0, invalid_repeat: int | None = None,
              profile: str | None = None) -> Path:
    """The real CPU run as a finished run's results directory, optionally ``slowdown`` times slower (or with
    one repeat marked INVALID, or its profile renamed)."""
    (dest / "phases").mkdir(parents=True)
    listed = []
    for src in sorted((REAL_RUN / "phases").glob("*.json")):
        data = json.loads(src.read_text())
        for metric, value in data["metrics"].items():
            spec = METRICS.get(metric)
            if spec is None or not isinstance(value, (int, float)):
                continue
            if spec.kind == "throughput":
                data["metrics"][metric] = value / slowdown
            elif spec.unit == "ms":
                data["metrics"][metric] = value * slowdown
        if invalid_repeat is not None and data["scenario"] == "cpu-closed" and data["repeat"] == invalid_repeat:
            data["valid"], data["invalid_reasons"] = False, ["achieved 70% of the offered rate"]
        if profile:
            data["profile"] = profile
        rel = f"phases/{src.name}"
        (dest / rel).write_text(json.dumps(data))
        listed.append(rel)
    (dest / "session.json").write_text(json.dumps({"run_id": dest.name, "phases": listed}))
    return dest


@pytest.fixture
def gate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Write the tests' gate settings and point perfgate at them."""
    def write(text: str) -> Path:
        path = tmp_path / "pyproject.toml"
        path.write_text(text)
        monkeypatch.setenv("PERFGATE_PYPROJECT", str(path))
        return path
    return write


def compare(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["compare", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_an_unchanged_run_passes_with_exit_0(tmp_path, capsys, gate):
    gate(WIDE)
    code, out, _ = compare(capsys, BASELINE, saved_run(tmp_path / "run"))
    assert code == EXIT_PASS, out
    assert out.startswith("baseline gate cpu/cpu-tiny/cpu-closed: PASS — no change in vLLM, torch, CUDA")
    header = next(line.split() for line in out.splitlines() if line.split()[:1] == ["metric"])
    assert header[:4] == ["metric", "baseline", "current", "change"]  # the gate's own table
    assert "this run: 4 repeat(s); baseline: 6 repeats in 2 server session(s)" in out
    assert out.rstrip().endswith("1 phase key(s) judged against " + str(BASELINE) + "; exit 0")


def test_a_slower_run_is_regressed_with_exit_1_naming_the_metric(tmp_path, capsys, gate):
    gate(WIDE)
    code, out, _ = compare(capsys, BASELINE, saved_run(tmp_path / "run", slowdown=5.0))
    assert code == EXIT_WORSE, out
    first = out.splitlines()[0]
    assert first.startswith("baseline gate cpu/cpu-tiny/cpu-closed: REGRESSED")
    assert "worse by more than the minimum effect: output_throughput -" in first
    row = next(line.split() for line in out.splitlines() if line.split()[:1] == ["output_throughput"])
    assert row[-1] == "REGRESSED"


def test_an_undecided_run_is_inconclusive_with_exit_3(tmp_path, capsys, gate):
    gate(TIGHT)
    code, out, _ = compare(capsys, BASELINE, saved_run(tmp_path / "run"))
    assert code == EXIT_INCONCLUSIVE, out
    assert out.startswith("baseline gate cpu/cpu-tiny/cpu-closed: INCONCLUSIVE")


def test_the_gates_current_settings_judge_the_saved_run(tmp_path, capsys, gate):
    """The same saved run and baseline: a smoke gate lets the undecided verdict through (exit 0, said)."""
    run = saved_run(tmp_path / "run")
    gate(TIGHT + "smoke = true\n")
    code, out, _ = compare(capsys, BASELINE, run)
    assert code == EXIT_PASS and out.startswith("baseline gate cpu/cpu-tiny/cpu-closed: INCONCLUSIVE (smoke gate)")


def test_an_invalid_repeat_is_inconclusive_never_a_pass(tmp_path, capsys, gate):
    gate(WIDE)
    code, out, _ = compare(capsys, BASELINE, saved_run(tmp_path / "run", invalid_repeat=1))
    assert code == EXIT_INCONCLUSIVE, out
    assert out.startswith("baseline gate cpu/cpu-tiny/cpu-closed: INVALID") and "achieved 70%" in out


def test_a_baselines_directory_judges_every_key_that_has_a_file(tmp_path, capsys, gate):
    gate(WIDE)
    code, out, _ = compare(capsys, REPO / "baselines", saved_run(tmp_path / "run"))
    assert code == EXIT_PASS, out
    assert "not judged (no baseline file in " in out and "cpu/cpu-tiny/cpu-poisson" in out.splitlines()[0]
    assert "baseline gate cpu/cpu-tiny/cpu-closed: PASS" in out


def test_no_matching_phase_is_bad_input_naming_what_the_run_holds(tmp_path, capsys, gate):
    gate(WIDE)
    run = saved_run(tmp_path / "run")
    code, out, err = compare(capsys, REPO / "baselines/h200/optimized/chat.json", run)
    assert code == EXIT_USAGE and out == ""
    assert (f"the run {run} holds no phase of h200/optimized/chat (the baseline's gpu class / profile / "
            "scenario); it holds: cpu/cpu-tiny/cpu-closed (4 repeats), cpu/cpu-tiny/cpu-poisson (1 repeat)") in err
    assert "fix: give the baseline of one of those keys" in err
    code, _, err = compare(capsys, tmp_path / "no-baselines-here", run)  # a file that is not there
    assert code == EXIT_USAGE and "baseline file not found" in err and "fix:" in err
    (tmp_path / "empty").mkdir()
    code, _, err = compare(capsys, tmp_path / "empty", run)
    assert code == EXIT_USAGE and "has no baseline for any phase of the run" in err
    assert "cpu/cpu-tiny/cpu-closed (4 repeats)" in err


@pytest.mark.parametrize("case", ["corrupt-baseline", "unfinished-run", "missing-run"])
def test_bad_input_exits_2_naming_the_input_and_the_fix(tmp_path, capsys, gate, case):
    gate(WIDE)
    baseline, run = BASELINE, saved_run(tmp_path / "run")
    if case == "corrupt-baseline":
        baseline = tmp_path / "broken.json"
        baseline.write_text(BASELINE.read_text()[:200])
        expect = [f"{baseline}: corrupt baseline (not valid JSON", "fix: restore it from git"]
    elif case == "unfinished-run":
        run = REAL_RUN  # phase files only: no session.json or run.json
        expect = [f"{run}: no session.json or run.json: the run did not finish", "fix: refresh from a finished"]
    else:
        run = tmp_path / "not-a-run"
        expect = [f"{run}: results directory not found", "fix: give the directory a run wrote"]
    code, out, err = compare(capsys, baseline, run)
    assert code == EXIT_USAGE and out == ""
    assert err.startswith("perfgate compare: error: ")
    for text in expect:
        assert text in err


def test_an_incomparable_baseline_is_bad_input_unless_allowed(tmp_path, capsys, gate):
    gate(WIDE)
    data = json.loads(BASELINE.read_text())
    data["gpu_model"] = data["fingerprint"]["gpu_model"] = "NVIDIA H200"
    other = tmp_path / "other-gpu.json"
    other.write_text(json.dumps(data))
    run = saved_run(tmp_path / "run")
    code, out, _ = compare(capsys, other, run)
    assert code == EXIT_USAGE and out.startswith("baseline gate cpu/cpu-tiny/cpu-closed: INCOMPARABLE"), out
    assert "NVIDIA H200" in out and "--perfgate-allow-incomparable" in out
    code, out, _ = compare(capsys, other, run, "--allow-incomparable")
    assert code == EXIT_PASS and "compared although the environment differs (allowed)" in out


def test_the_console_script_exits_with_the_code_and_help_states_the_mapping(tmp_path, gate):
    gate(WIDE)
    run = saved_run(tmp_path / "run", slowdown=5.0)
    proc = subprocess.run([sys.executable, "-m", "perfgate", "compare", str(BASELINE), str(run)],
                          capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == EXIT_WORSE, proc.stdout + proc.stderr
    usage = subprocess.run([sys.executable, "-m", "perfgate", "compare", str(BASELINE)],
                           capture_output=True, text=True, cwd=tmp_path, check=False)
    assert usage.returncode == EXIT_USAGE and "RESULTS_DIR" in usage.stderr  # argparse: 2 as well
    helped = subprocess.run([sys.executable, "-m", "perfgate", "compare", "--help"], capture_output=True, text=True,
                            check=False)
    text = " ".join(helped.stdout.split())
    assert ("exit codes: 0 pass (not worse), 1 regressed (worse), 3 inconclusive (undecided after the repeats, "
            "or an invalid run), 2 bad input") in text


# ---------------------------------------------------------------- perfgate ab (two profiles of one run)
def _ab_run(tmp_path: Path, *, a_slowdown: float, b_slowdown: float) -> Path:
    """One results directory holding the real run twice: as profile A (cpu-tiny) and as profile B."""
    results = tmp_path / "ab"
    saved_run(results / "A", slowdown=a_slowdown)
    saved_run(results / "B", slowdown=b_slowdown, profile="cpu-tiny-b")
    return results


def _ab(capsys, results: Path, *extra: str) -> tuple[int, str]:
    code = main(["ab", "--results", str(results), "--a", "cpu-tiny", "--b", "cpu-tiny-b", "--scenario",
                 "cpu-closed", *extra])
    return code, capsys.readouterr().out


def test_ab_exits_1_when_b_is_worse_and_0_when_it_is_not(tmp_path, capsys):
    code, out = _ab(capsys, _ab_run(tmp_path / "worse", a_slowdown=1.0, b_slowdown=3.0))
    assert code == EXIT_WORSE, out
    assert next(line.split() for line in out.splitlines() if line.split()[:1] == ["output_throughput"])[-1] == "worse"
    code, out = _ab(capsys, _ab_run(tmp_path / "better", a_slowdown=3.0, b_slowdown=1.0))
    assert code == EXIT_PASS, out
    assert "better" in next(line for line in out.splitlines() if line.startswith("  output_throughput"))


def test_ab_with_one_repeat_a_side_is_inconclusive(tmp_path, capsys):
    results = _ab_run(tmp_path, a_slowdown=1.0, b_slowdown=1.0)
    for side in ("A", "B"):
        for extra in sorted((results / side / "phases").glob("*cpu-closed__r[123].json")):
            extra.unlink()
    code, out = _ab(capsys, results)
    assert code == EXIT_INCONCLUSIVE, out
    assert "one repeat each: no noise estimate, no verdict" in out


def test_ab_bad_input_exits_2(tmp_path, capsys):
    results = _ab_run(tmp_path, a_slowdown=1.0, b_slowdown=1.0)
    shutil.rmtree(results / "B")
    code = main(["ab", "--results", str(results), "--a", "cpu-tiny", "--b", "cpu-tiny-b", "--scenario", "cpu-closed"])
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and "no phases of B=cpu-tiny-b" in err and "fix: profiles found" in err
