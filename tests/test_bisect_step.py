"""scripts/bisect-step.sh: perfgate's verdict exit codes mapped onto ``git bisect run`` (0 good, 1 bad,
3 -> 125 skip, anything else -> 128 abort), with ``perfgate compare`` on saved runs as the verdict command.

The saved runs are tests/test_compare_cli.py's: the real CPU run, as is (PASS), slowed on paper
(REGRESSED), judged with margins it cannot decide (INCONCLUSIVE). The last test bisects a real git history
with ``git bisect run`` and checks it names the commit whose run regressed, skipping the inconclusive one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_compare_cli import BASELINE, TIGHT, WIDE, saved_run

REPO = Path(__file__).resolve().parent.parent
STEP = REPO / "scripts" / "bisect-step.sh"
PERFGATE = [sys.executable, "-m", "perfgate"]


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    return {"pass": saved_run(tmp_path / "pass"), "regressed": saved_run(tmp_path / "regressed", slowdown=5.0)}


def _env(tmp_path: Path, settings: str) -> dict[str, str]:
    pyproject = tmp_path / f"pyproject-{len(settings)}.toml"
    pyproject.write_text(settings)
    return {**os.environ, "PERFGATE_PYPROJECT": str(pyproject), "PYTHONPATH": str(REPO)}


def step(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(STEP), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=120, check=False)


@pytest.mark.parametrize("run, settings, perfgate_code, bisect_code", [
    ("pass", WIDE, 0, 0),
    ("regressed", WIDE, 1, 1),
    ("pass", TIGHT, 3, 125),
    ("missing", WIDE, 2, 128),
])
def test_perfgate_compare_exit_codes_map_onto_git_bisect(tmp_path, runs, run, settings, perfgate_code, bisect_code):
    env = _env(tmp_path, settings)
    results = runs.get(run, tmp_path / "no-such-run")
    proc = step("--", *PERFGATE, "compare", str(BASELINE), str(results), env=env, cwd=tmp_path)
    assert proc.returncode == bisect_code, proc.stdout + proc.stderr
    # The premise, as the script reports it: what perfgate compare itself exited with.
    assert proc.stderr.splitlines()[-1].startswith("bisect-step [") and f": exit {perfgate_code} " in proc.stderr


def test_a_failed_build_skips_the_commit_and_measure_is_run_but_not_judged(tmp_path, runs):
    env = _env(tmp_path, WIDE)
    marker = tmp_path / "verdict-ran"
    proc = step("--build", "exit 1", "--", "touch", str(marker), env=env, cwd=tmp_path)
    assert proc.returncode == 125 and not marker.exists(), proc.stderr
    assert "the build failed" in proc.stderr
    proc = step("--build", "true", "--measure", f"touch {marker}; exit 1", "--",
                *PERFGATE, "compare", str(BASELINE), str(runs["pass"]), env=env, cwd=tmp_path)
    assert proc.returncode == 0 and marker.exists(), proc.stderr
    assert "measure exited 1 (ignored" in proc.stderr


def test_misuse_aborts_rather_than_judging(tmp_path):
    env = _env(tmp_path, WIDE)
    assert step(env=env, cwd=tmp_path).returncode == 128  # no verdict command
    assert step("--bogus", "--", "true", env=env, cwd=tmp_path).returncode == 128
    assert step("--", "no-such-command-here", env=env, cwd=tmp_path).returncode == 128


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()


def test_git_bisect_run_finds_the_regressing_commit_and_skips_the_inconclusive_one(tmp_path, runs):
    """Six commits; each commit's saved run (a directory named by its short hash, found through {commit}):
    c1 pass, c2 inconclusive (a run with an INVALID repeat), c3 pass, c4 to c6 regressed. Bisecting c1 (good)
    to c6 (bad) must name c4, whichever commits it visits."""
    repo, by_commit = tmp_path / "repo", tmp_path / "runs"
    repo.mkdir()
    by_commit.mkdir()
    _git(repo, "init", "-q")
    inconclusive = saved_run(tmp_path / "invalid", invalid_repeat=1)
    plan = [runs["pass"], inconclusive, runs["pass"], runs["regressed"], runs["regressed"], runs["regressed"]]
    commits = []
    for i, run in enumerate(plan, 1):
        (repo / "change.txt").write_text(f"change {i}\n")
        _git(repo, "add", "change.txt")
        _git(repo, "commit", "-q", "-m", f"c{i}")
        commits.append(_git(repo, "rev-parse", "--short", "HEAD"))
        (by_commit / commits[-1]).symlink_to(run)
    _git(repo, "bisect", "start", commits[-1], commits[0])
    env = {**_env(tmp_path, WIDE), "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    proc = subprocess.run(["git", "bisect", "run", "bash", str(STEP), "--", *PERFGATE, "compare", str(BASELINE),
                           f"{by_commit}/{{commit}}"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first_bad = _git(repo, "rev-parse", commits[3])
    assert f"{first_bad} is the first bad commit" in proc.stdout, proc.stdout
    # An abort: a commit whose run is missing (bad input, exit 2) stops the bisect instead of guessing.
    _git(repo, "bisect", "reset")
    (by_commit / commits[3]).unlink()
    _git(repo, "bisect", "start", commits[-1], commits[0])
    proc = subprocess.run(["git", "bisect", "run", "bash", str(STEP), "--", *PERFGATE, "compare", str(BASELINE),
                           f"{by_commit}/{{commit}}"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode != 0 and "first bad commit" not in proc.stdout
    assert "-> 128 (abort the bisect)" in proc.stderr
