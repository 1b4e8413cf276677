"""`perfgate ab run`: an interleaved A/B of two Python environments (the upgrade check's mechanism).

The end-to-end test starts two real vLLM CPU servers, A from this interpreter and B through a wrapper
interpreter of its own (the same venv behind it, so CI needs no second install), and checks that each side's
versions, lint and server come from that side's interpreter. The unit tests judge synthetic repeats and
read versions from stand-in interpreters (a script printing what another environment would report).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perfgate._errors import ConfigError
from perfgate.cli import main
from perfgate.core.phase import PhaseResult
from perfgate.run.ab_run import EXIT_INCONCLUSIVE, EXIT_NOT_WORSE, EXIT_WORSE, SideEnv, judge, read_side_env
from perfgate.serving.builds import installed_vllm, unavailable_reason

REPO = Path(__file__).resolve().parent.parent


def stand_in_python(path: Path, stdout: str, code: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\ncat <<'OUT'\n{stdout}\nOUT\nexit {code}\n")
    path.chmod(0o755)
    return str(path)


def test_versions_come_from_the_sides_own_interpreter(tmp_path: Path) -> None:
    other = stand_in_python(tmp_path / "cand" / "bin" / "python", '{"vllm": "9.9.9", "torch": "3.0.0"}')
    side = read_side_env("B", other)
    assert (side.vllm_version, side.torch_version, side.python) == ("9.9.9", "3.0.0", other)
    here = read_side_env("A", sys.executable)  # the real query, run by a real interpreter
    assert here.vllm_version == installed_vllm().version


@pytest.mark.parametrize(("stdout", "code", "says"), [
    ('{"vllm": "", "torch": null}', 0, "vLLM is not installed in that environment"),
    ("Traceback: boom", 1, "did not report its versions"),
], ids=["no-vllm", "broken"])
def test_an_environment_without_vllm_is_refused_with_the_fix(tmp_path: Path, stdout: str, code: int,
                                                             says: str) -> None:
    python = stand_in_python(tmp_path / "bin" / "python", stdout, code)
    with pytest.raises(ConfigError) as exc:
        read_side_env("B", python)
    assert says in str(exc.value) and "--b-python" in str(exc.value)
    assert "setup-candidate.sh" in str(exc.value)


def test_cli_names_a_missing_interpreter_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["ab", "run", "--a-python", sys.executable, "--b-python", str(tmp_path / "nope" / "python"),
                 "--profile", "cpu-tiny", "--scenario", "cpu-closed", "--results", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--b-python" in err and "no executable there" in err and "setup-candidate.sh" in err


def repeats(side: str, throughput: list[float], p99: list[float], version: str) -> list[PhaseResult]:
    return [PhaseResult("cpu-tiny", "cpu-closed", "cpu", repeat=i, started_at=1000.0 + 10 * i + (5 if side == "B" else 0),
                        server_session=f"cpu-tiny:{side}", fingerprint={"vllm_version": version, "gpu_model": None},
                        metrics={"output_throughput": t, "p99_e2el_ms": p, "failed": 0.0, "error_rate": 0.0,
                                 "token_count_mismatches": 0.0})
            for i, (t, p) in enumerate(zip(throughput, p99))]


A = SideEnv("A", "/envs/a/bin/python", "0.32.0", "2.13.0")
B = SideEnv("B", "/envs/b/bin/python", "0.31.0", "2.13.0")


def test_an_unchanged_candidate_passes_and_names_both_versions(tmp_path: Path) -> None:
    a = repeats("A", [300.0, 310.0, 305.0], [3000.0, 3100.0, 2950.0], "0.32.0")
    b = repeats("B", [304.0, 298.0, 309.0], [3050.0, 2990.0, 3080.0], "0.31.0")
    result = judge(A, B, {"A": "0.32.0", "B": "0.31.0"}, a, b, results_dir=tmp_path)
    assert result.gate.status == "pass" and result.exit_code == EXIT_NOT_WORSE, result.table()
    assert result.headline().startswith("vLLM 0.32.0 → 0.31.0: PASS (smoke gate); output_throughput ")
    assert "B: vLLM 0.31.0 (torch 2.13.0) from /envs/b/bin/python" in result.table()
    assert "B=vLLM 0.31.0 vs A=vLLM 0.32.0" in result.table()


def test_a_much_slower_candidate_is_worse_exit_1(tmp_path: Path) -> None:
    a = repeats("A", [300.0, 310.0, 305.0], [3000.0, 3100.0, 2950.0], "0.32.0")
    b = repeats("B", [60.0, 62.0, 61.0], [15000.0, 15500.0, 14800.0], "0.31.0")  # 5x: past the CPU 3x margin
    result = judge(A, B, {"A": None, "B": None}, a, b, results_dir=tmp_path)
    assert result.gate.status == "regressed" and result.exit_code == EXIT_WORSE, result.table()
    assert "output_throughput" in result.gate.reasons[0]
    assert result.headline().startswith("vLLM 0.32.0 → 0.31.0: REGRESSED")  # /version unread: the env's


def test_an_invalid_reference_side_is_inconclusive_exit_3(tmp_path: Path) -> None:
    a = repeats("A", [300.0, 310.0, 305.0], [3000.0, 3100.0, 2950.0], "0.32.0")
    a[1].valid, a[1].invalid_reasons = False, ["client fell behind its schedule"]
    b = repeats("B", [304.0, 298.0, 309.0], [3050.0, 2990.0, 3080.0], "0.31.0")
    result = judge(A, B, {}, a, b, results_dir=tmp_path)
    assert result.gate.status == "invalid" and result.exit_code == EXIT_INCONCLUSIVE
    assert "A cannot serve as the reference" in result.gate.reasons[0]


# --- end to end: two real vLLM servers, B through its own interpreter ------------------------------

@pytest.mark.cpu
@pytest.mark.slow
def test_two_environment_ab_end_to_end(tmp_path: Path) -> None:
    if reason := unavailable_reason("cpu"):
        pytest.skip(reason)
    calls = tmp_path / "b-calls.log"
    b_python = tmp_path / "env-b" / "bin" / "python"
    b_python.parent.mkdir(parents=True)
    # Environment B's interpreter: records each use, then runs the same venv (CI installs one vLLM only).
    b_python.write_text(f'#!/bin/sh\necho "$*" >> {calls}\nexec {sys.executable} "$@"\n')
    b_python.chmod(0o755)
    results = tmp_path / "ab"
    proc = subprocess.run([sys.executable, "-m", "perfgate", "ab", "run", "--a-python", sys.executable,
                           "--b-python", str(b_python), "--profile", "cpu-tiny", "--scenario", "cpu-closed",
                           "--repeats", "3", "--results", str(results)],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    out = proc.stdout + proc.stderr
    verdict = json.loads((results / "ab-verdict.json").read_text())
    assert proc.returncode == verdict["exit_code"], out
    assert proc.returncode != EXIT_WORSE, f"an A/A (same vLLM both sides) was called worse:\n{out}"
    version = installed_vllm().version
    sides = verdict["sides"]
    assert sides["A"]["python"] == os.path.abspath(sys.executable) and sides["B"]["python"] == str(b_python)
    for side in ("A", "B"):
        assert sides[side]["vllm_version"] == version and sides[side]["served_version"], sides
    used = calls.read_text()
    assert "-c" in used, "B's versions were read through B's interpreter"
    assert "vllm.entrypoints.openai.api_server" in used, "B's server was started from B's interpreter"
    assert verdict["repeats"] == {"A": 3, "B": 3}
    for side in ("A", "B"):
        assert len(list((results / side / "phases").glob("*.json"))) == 3
        for path in (results / side / "phases").glob("*.json"):
            assert json.loads(path.read_text())["fingerprint"]["vllm_version"] == sides[side]["served_version"]
    assert proc.stdout.startswith(f"vLLM {sides['A']['served_version']} → {sides['B']['served_version']}: ")
    assert f"B: vLLM {sides['B']['served_version']}" in proc.stdout and str(b_python) in proc.stdout
    assert (results / "summary.md").read_text().startswith("### Upgrade A/B: vLLM ")
    # The run declares no top-level phases: a baseline refresh from this directory pools nothing of A or B.
    assert json.loads((results / "session.json").read_text())["phases"] == []
