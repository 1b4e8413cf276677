"""``import perfgate``: a small public API, loaded lazily, with no pytest, vLLM or plotting behind it.

Each check runs in a fresh interpreter with pytest blocked (``sys.modules["pytest"] = None`` makes any
``import pytest`` fail), as a script or a notebook that uses perfgate outside a test would.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import pytest

import perfgate

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("pytest", "vllm", "torch", "httpx", "matplotlib", "numpy", "pydantic", "transformers", "tokenizers")


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", "import sys; sys.modules['pytest'] = None\n" + code],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_import_perfgate_loads_nothing_heavy() -> None:
    out = run_python(f"import perfgate\nprint(sorted({{m.split('.')[0] for m in sys.modules if sys.modules[m]}} & set({HEAVY!r})))\n"
                     "print(sorted(m for m in sys.modules if m.startswith('perfgate')))\n")
    heavy, ours = out.splitlines()
    assert heavy == "[]", f"import perfgate imported {heavy}"
    assert ours == "['perfgate']", f"import perfgate imported submodules: {ours}"


def test_every_public_name_resolves_without_pytest() -> None:
    out = run_python("import perfgate\n"
                     "for name in perfgate.__all__:\n"
                     "    obj = getattr(perfgate, name)\n"
                     "    print(name, getattr(obj, '__module__', type(obj).__name__))\n"
                     "from perfgate import *  # noqa: F403\n"
                     "print('pytest' in {m.split('.')[0] for m in sys.modules if sys.modules[m]})\n")
    *rows, pytest_loaded = out.splitlines()
    assert pytest_loaded == "False"
    resolved = dict(row.split(" ", 1) for row in rows)
    assert set(resolved) == set(perfgate.__all__)
    for name, module in perfgate._EXPORTS.items():
        assert resolved[name] == module, f"perfgate.{name} comes from {resolved[name]}, not {module}"
    assert resolved["__version__"] == "str"


def test_all_lists_exactly_the_exports() -> None:
    assert sorted(perfgate.__all__) == sorted(["__version__", *perfgate._EXPORTS])
    assert set(perfgate.__all__) <= set(dir(perfgate))


def test_version_is_the_installed_distributions() -> None:
    assert perfgate.__version__ == importlib.metadata.version("perfgate")


def test_unknown_names_and_submodules() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        perfgate.no_such_name  # noqa: B018
    out = run_python("from perfgate import core, load\nprint(core.__name__, load.run_load.__module__)")
    assert out.split() == ["perfgate.core", "perfgate.load.engine"]
