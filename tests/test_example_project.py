"""Acceptance of issue 14: a team's repository that installs perfgate gets the plugin, its fixtures and the
data lookup, with nothing from this checkout.

``examples/cpu-quickstart`` is copied into a temporary directory outside the repository; this checkout is
built into a wheel and installed (not editable) into a fresh virtual environment; pytest runs the example
there. Two shortcuts keep it within the suite's time budget, neither of which lets this checkout leak in:

- vLLM, torch and perfgate's other dependencies are not downloaded again: a ``.pth`` line makes a directory
  of links to this suite's site-packages visible, with perfgate's own entries (its dist-info, the editable
  finder) left out, so ``perfgate`` can only come from the wheel.
- The example attaches (``--vllm-url``) to this session's CPU server instead of starting a second one (a
  minute on two cores); its own profile is still read, its synthetic model resolved, its scenario, SLO file
  and gate settings used. Starting the example's own server from an installed perfgate was checked by
  hand with a real ``pip install`` (README "Adopt perfgate in your repository").
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from conftest import parse_junit
from perfgate.run.target import Target

pytestmark = [pytest.mark.cpu, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "cpu-quickstart"
PURELIB = Path(sysconfig.get_paths()["purelib"])  # this suite's site-packages (vLLM, torch, pytest, ...)


def _run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done.stdout


def build_wheel(work: Path) -> Path:
    """This checkout's wheel, built from a copy (the build writes build/ and *.egg-info next to the source)."""
    src = work / "src"
    shutil.copytree(REPO / "perfgate", src / "perfgate", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", str(work / "dist"), str(src)], cwd=work)
    (wheel,) = (work / "dist").glob("perfgate-*.whl")
    return wheel


def dependencies_without_perfgate(work: Path) -> Path:
    """Links to every entry of this suite's site-packages except perfgate's own (and the .pth files, which
    a directory added by a .pth line would not run anyway)."""
    deps = work / "deps"
    deps.mkdir()
    for entry in PURELIB.iterdir():
        name = entry.name
        if name.startswith(("perfgate", "__editable__", "_perfgate")) or name.endswith(".pth"):
            continue
        (deps / name).symlink_to(entry)
    return deps


def fresh_venv(work: Path, wheel: Path) -> tuple[Path, Path]:
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index",
          str(wheel)], cwd=work)
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=work).strip())
    (site / "zz_perfgate_test_deps.pth").write_text(f"{dependencies_without_perfgate(work)}\n")
    return python, site


def test_the_example_project_passes_with_perfgate_installed_from_a_wheel(tmp_path: Path, vllm_server: Target) -> None:
    project = tmp_path / "cpu-quickstart"
    assert REPO not in project.parents  # outside the repository: nothing of it is found by walking up
    shutil.copytree(EXAMPLE, project, ignore=shutil.ignore_patterns("results", "__pycache__", ".pytest_cache"))
    python, site = fresh_venv(tmp_path, build_wheel(tmp_path))
    # The child sees the environment a team's CI has: no PYTHONPATH into this checkout, no perfgate settings.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PERFGATE_", "PYTEST_")) and k not in ("PYTHONPATH", "VIRTUAL_ENV")}

    probe = "import perfgate, perfgate.pytest_fixtures as f; print(perfgate.__version__); print(f.__file__)"
    where = _run([str(python), "-c", probe], cwd=project, env=env).split()
    assert where[1] == str(site / "perfgate" / "pytest_fixtures.py"), where
    fixtures = _run([str(python), "-m", "pytest", "-p", "no:cacheprovider", "--fixtures-per-test", "-q"],
                    cwd=project, env=env)
    line = next(ln for ln in fixtures.splitlines() if ln.startswith("perfgate -- "))
    defined_in = (project / line.split(" -- ")[1].rpartition(":")[0]).resolve()  # shown relative to the project
    assert defined_in == (site / "perfgate" / "pytest_fixtures.py").resolve(), fixtures

    junit = tmp_path / "junit.xml"
    out = subprocess.run([str(python), "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={junit}",
                          f"--vllm-url={vllm_server.server.base_url}", "--profile", "quickstart-cpu",
                          "--perfgate-repeats", "1"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=600, check=False)
    cases = parse_junit(junit)
    assert out.returncode == 0 and [c.outcome for c in cases.values()] == ["passed"], \
        f"{out.stdout[-6000:]}\n{out.stderr[-3000:]}"
    assert "test_chat_meets_its_slos_and_baseline[quickstart-cpu]" in cases
    # The example's own data was used: its SLO file, its gate settings, its results directory.
    (run_json,) = (project / "results").glob("*/run.json")
    run = json.loads(run_json.read_text())
    assert run["passed"] and run["slo"][0]["files"] == [str(project / "slos" / "cpu.toml")]
    assert run["gate"][0]["settings"]["source"] == str(project / "pyproject.toml")
    assert "SLOs cpu/quickstart-cpu/quickstart-chat: PASS" in out.stdout
