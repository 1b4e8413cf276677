"""An installed perfgate drives Locust with no locustfile of the project's: the packaged one is the default,
and this repository's perf_tests/locustfile.py re-exports it (users and, with --perfgate-ramp, the shape)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from perfgate.load.locust_runner import default_locustfile

REPO = Path(__file__).resolve().parents[1]
PACKAGED = REPO / "perfgate" / "load" / "locustfile.py"


def test_a_project_without_a_locustfile_gets_the_packaged_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert default_locustfile() == PACKAGED


def test_a_project_locustfile_wins(tmp_path, monkeypatch):
    own = tmp_path / "perf_tests" / "locustfile.py"
    own.parent.mkdir()
    own.write_text("")
    monkeypatch.chdir(tmp_path)
    assert default_locustfile() == own


def test_locust_finds_the_llm_user_in_the_packaged_file(tmp_path):
    out = subprocess.run([sys.executable, "-m", "locust", "-f", str(PACKAGED), "--list"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LlmUser" in out.stdout


def test_the_repo_file_re_exports_the_ramp_shape_when_a_ramp_is_asked_for(tmp_path):
    code = ("import runpy, sys; sys.argv = ['locust', '--perfgate-ramp', '2:1:5']; "
            f"ns = runpy.run_path({str(REPO / 'perf_tests' / 'locustfile.py')!r}); "
            "print(sorted(k for k in ('LlmUser', 'PerfgateRamp') if k in ns))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['LlmUser', 'PerfgateRamp']"
