"""The load side's imports run one way, at module top, and need no pytest.

``perfgate.core.records`` (core layer) and ``perfgate.load.metrics`` sit below the engine; the engine, its parts, the measure
function and the runner import them, never the reverse. Each check runs in a fresh interpreter, since
an import order problem only shows when a module is the first one imported.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOAD_SIDE = sorted((ROOT / "perfgate" / "load").glob("*.py")) + [
    ROOT / "perfgate" / "run" / "measure.py", ROOT / "perfgate" / "core" / "records.py"]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


def test_core_imports_without_pytest() -> None:
    # sys.modules["pytest"] = None makes every `import pytest` raise ImportError, as if it were not installed.
    done = run_python("import sys; sys.modules['pytest'] = None\n"
                      "import perfgate.run.runner, perfgate.run.measure, perfgate.load, perfgate.load.engine\n"
                      "import perfgate.load.sweep, perfgate.run.source, perfgate.load.metrics\n"
                      "assert 'pytest' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\n"
                      "print('imported')\n"
                      # a failed check outside pytest raises perfgate's error, not pytest's
                      "import types\n"
                      "from perfgate._errors import PerfCheckFailed\n"
                      "runner = perfgate.run.runner.PhaseRunner(None, types.SimpleNamespace(redact=str))\n"
                      "try:\n    runner.fail('SLO failed for x')\n"
                      "except PerfCheckFailed as exc:\n    print('raised', exc)\n")
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr
    assert "raised SLO failed for x" in done.stdout


@pytest.mark.parametrize("first", ["perfgate.load.metrics", "perfgate.core.records", "perfgate.load.request",
                                   "perfgate.load.stream", "perfgate.load.sse", "perfgate.run.measure"])
def test_any_load_module_can_be_imported_first(first: str) -> None:
    done = run_python(f"import {first}\nimport perfgate.load\nprint(perfgate.load.run_load.__module__)")
    assert done.returncode == 0 and done.stdout.strip() == "perfgate.load.engine", done.stderr


def test_records_do_not_import_the_load_package() -> None:
    done = run_python("import sys, perfgate.core.records\nprint(sorted(m for m in sys.modules if m.startswith('perfgate.')))")
    assert done.returncode == 0, done.stderr
    assert "perfgate.load" not in done.stdout, f"perfgate.core.records pulls in the load package: {done.stdout}"


@pytest.mark.parametrize("path", LOAD_SIDE, ids=lambda p: p.name)
def test_no_function_level_perfgate_imports(path: Path) -> None:
    """An import of perfgate inside a function hides the real dependency (it was how a cycle was dodged)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    hidden = []
    for func in ast.walk(tree):
        if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(func):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            hidden += [f"line {node.lineno}: {n}" for n in names if n.split(".")[0] == "perfgate"]
    assert not hidden, f"{path.name} imports perfgate inside functions: {hidden}"
