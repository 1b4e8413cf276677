"""perfgate's imports run one way: a lower layer never imports a higher one, and no module imports itself back.

The layers, bottom to top (docs/guide.md "How the package is laid out"):

    _errors, _toml  ->  core  ->  models  ->  telemetry  ->  serving  ->  load  ->  verdict  ->  report  ->  run
    ->  the CLI (cli, commands), the pytest plugin (pytest_plugin, pytest_fixtures, hookspec, gpu_guard),
    junit_counts and the public API (perfgate/__init__.py)

Every import counts, at module top or inside a function (a function-level import was how cycles used to be
hidden), and so does the package ``__init__`` that importing a submodule of another package runs first. Each check reads the
source with ``ast``, so it fails on the line that breaks the order, whichever module is imported first.

The root ``perfgate/__init__.py`` is the public API, in the top layer: its imports (inside ``__getattr__`` and
``if TYPE_CHECKING``) run downward like the plugin's. Every ``import perfgate.x`` runs it first, yet the graph
has no edge to it: that holds because at its top it imports no perfgate module (its names load on first
use), which ``test_the_package_init_imports_nothing_at_its_top`` checks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "perfgate"
LAYERS = ["_errors", "_toml", "core", "models", "telemetry", "serving", "load", "verdict", "report", "run"]
TOP = len(LAYERS)  # cli, commands, pytest_plugin, hookspec, gpu_guard, junit_counts, __main__


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else TOP


def imports_of(module: str) -> dict[str, int]:
    """perfgate modules ``module`` imports (any depth in the file), each with the first line that does."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        for target in targets:
            # importing a.b.c runs a.b's __init__ first: that package is a dependency too
            parts = target.split(".")
            for i in range(2, len(parts) + 1):
                name = ".".join(parts[:i])
                # its own packages are already being imported when a module runs: not a dependency edge
                if name in MODULES and name != module and not module.startswith(name + "."):
                    found.setdefault(name, node.lineno)
    return found


GRAPH = {m: imports_of(m) for m in MODULES}


def test_every_module_has_a_layer() -> None:
    unplaced = [m for m in MODULES if layer(m) == TOP and m.count(".") > 1 and m.split(".")[1] not in ("commands",)]
    assert not unplaced, f"modules outside the layer list (add their folder to LAYERS and the guide): {unplaced}"


def test_no_import_runs_upward() -> None:
    upward = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {dep} ({LAYERS[layer(m)] if layer(m) < TOP else 'top'}"
              f" -> {LAYERS[layer(dep)] if layer(dep) < TOP else 'top'})"
              for m, deps in GRAPH.items() for dep, line in deps.items()
              if layer(dep) > layer(m) and not dep.startswith(m + ".")]
    assert not upward, "imports that run against the layer order:\n" + "\n".join(upward)


def test_no_import_cycle() -> None:
    """Tarjan's strongly connected components over the whole package: every one must be a single module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for module in GRAPH:
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def test_the_checks_catch_an_upward_import(tmp_path: Path) -> None:
    """The graph reader sees a function-level import and a package __init__ (else the checks above prove nothing)."""
    assert "perfgate.verdict.gate" in GRAPH["perfgate.report.markdown"]
    src = tmp_path / "probe.py"
    src.write_text("def f():\n    from perfgate.report.markdown import x\n")
    MODULES["perfgate.core.probe"] = src
    try:
        deps = imports_of("perfgate.core.probe")
    finally:
        del MODULES["perfgate.core.probe"]
    assert "perfgate.report" in deps and "perfgate.report.markdown" in deps
    assert layer("perfgate.report.markdown") > layer("perfgate.core.probe")


def test_the_package_init_imports_nothing_at_its_top() -> None:
    """``perfgate/__init__.py`` runs before every perfgate module: a perfgate (or heavy) import at its top would
    make every module, ``perfgate.core`` included, import the top layer. Its names load lazily instead."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text(encoding="utf-8"))
    eager = []
    for node in tree.body:  # module level only: function bodies run on first use
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            continue  # never runs
        for inner in ast.walk(node) if not isinstance(node, (ast.FunctionDef, ast.ClassDef)) else ():
            if isinstance(inner, ast.Import):
                eager += [f"line {inner.lineno}: {a.name}" for a in inner.names]
            elif isinstance(inner, ast.ImportFrom) and inner.module not in ("__future__", "typing"):
                eager.append(f"line {inner.lineno}: {inner.module}")
    assert not eager, f"perfgate/__init__.py imports at its top (make them lazy, in __getattr__): {eager}"
    code = "import sys, perfgate.core.stats\nprint(sorted(m for m in sys.modules if m.startswith('perfgate')))"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    loaded = ast.literal_eval(done.stdout.strip())
    above_core = [m for m in loaded if m != "perfgate" and layer(m) > LAYERS.index("core")]
    assert "perfgate" in loaded and not above_core, f"import perfgate.core.stats loaded {above_core}"


@pytest.mark.parametrize("modules", [
    "perfgate.verdict.gate, perfgate.verdict.slo, perfgate.verdict.baseline, perfgate.verdict.ab",
    "perfgate.run.runner, perfgate.run.measure, perfgate.load, perfgate.report, perfgate.serving.server",
])
def test_core_imports_without_pytest(modules: str) -> None:
    # sys.modules["pytest"] = None makes every `import pytest` raise ImportError, as if it were not installed.
    code = (f"import sys; sys.modules['pytest'] = None\nimport {modules}\n"
            "assert 'pytest' not in {m.split('.')[0] for m in sys.modules if sys.modules[m]}\nprint('imported')\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and "imported" in done.stdout, done.stderr
