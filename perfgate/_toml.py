"""Reading perfgate's TOML data files with errors that name the file, the line and the field."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import tomllib
from pydantic import BaseModel, ValidationError

from perfgate._errors import ConfigError


def read_toml(path: Path, kind: str) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{kind} file not found", source=str(path),
                          fix=f"check the path, or list the {kind}s with `perfgate {kind}s`") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {kind} file: {exc.strerror}", source=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line N, column M)"; keep it, it is the useful part.
        raise ConfigError(f"invalid TOML: {exc}", source=str(path),
                          fix="fix the syntax at that line (strings need quotes, tables [like.this])") from None


def find_line(path: Path, key: str) -> int | None:
    """The 1-based line where ``key = ...`` is written in ``path`` (first match), for error messages."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    pattern = re.compile(r'^\s*["\']?' + re.escape(key) + r'["\']?\s*=')
    for number, line in enumerate(lines, 1):
        if pattern.match(line):
            return number
    return None


def validate(model: type[BaseModel], data: dict[str, Any], path: Path, kind: str) -> Any:
    """``model.model_validate(data)``, turning pydantic's error into one naming file, field and rule."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"]) or "(top level)"
            line = find_line(path, str(err["loc"][-1])) if err["loc"] else None
            where = f"{path}:{line}" if line else str(path)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                allowed = ", ".join(sorted(_fields_at(model, err["loc"][:-1])))
                msg = f"unknown field; allowed here: {allowed}"
            problems.append(f"{where}: field '{field}': {msg}")
        raise ConfigError(f"invalid {kind}:\n  " + "\n  ".join(problems),
                          fix=f"correct the field(s) above in {path}") from None


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the (nested) model at ``loc``; best effort, for listing valid choices."""
    current: Any = model
    options: list[Any] = []  # the models of a union field; pydantic puts the chosen tag in ``loc``
    for part in loc:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        info = current.model_fields.get(str(part)) or next(
            (f for f in current.model_fields.values() if f.alias == part), None)
        if info is None:
            tagged = next((o for o in options if _tag(o) == part), None)
            if tagged is None:
                return []
            current = tagged
            continue
        ann = info.annotation
        args = getattr(ann, "__args__", ()) or ()
        options = [a for a in (ann, *args) if isinstance(a, type) and issubclass(a, BaseModel)]
        current = options[0] if options else ann
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _tag(model: type[BaseModel]) -> Any:
    """The default of a discriminated-union member's ``kind`` field (pydantic's tag in error locations)."""
    info = model.model_fields.get("kind")
    return info.default if info is not None else None


# What marks the top of a user's project: the data folders are looked for up to it, never above it.
PROJECT_MARKERS = ("pyproject.toml", "pytest.ini", "tox.ini", "setup.cfg", ".git")
# pytest's rootdir while a pytest session runs (a stack: a pytester run nests a session in a session).
_pytest_roots: list[Path] = []


def push_project_root(root: Path) -> None:
    """Tell the data-folder lookup pytest's rootdir (the plugin does, at configure time)."""
    _pytest_roots.append(Path(root))


def pop_project_root() -> None:
    if _pytest_roots:
        _pytest_roots.pop()


def project_root(start: Path | None = None) -> Path | None:
    """The nearest directory at or above ``start`` (default: the current directory) holding a project
    marker (pyproject.toml, pytest.ini, tox.ini, setup.cfg or .git); None when there is none."""
    start = Path.cwd() if start is None else start
    for directory in (start, *start.parents):
        if any((directory / marker).exists() for marker in PROJECT_MARKERS):
            return directory
    return None


def source_checkout(module_file: str | Path = __file__) -> Path | None:
    """perfgate's own checkout when perfgate runs from one (a bare clone with PYTHONPATH, or an editable
    install); None for an installed package, whose parent is site-packages and holds no project's data."""
    root = Path(module_file).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if root.name in ("site-packages", "dist-packages") or not pyproject.is_file():
        return None
    try:
        return root if tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {}).get("name") \
            == "perfgate" else None
    except (OSError, tomllib.TOMLDecodeError):
        return None


def data_dir_env(folder: str) -> str:
    return f"PERFGATE_{folder.upper()}_DIR"


def data_dir_candidates(folder: str) -> list[Path]:
    """Where ``<folder>/`` is looked for, first match wins: the current directory, pytest's rootdir (under
    pytest), each directory above the current one up to the project root, then perfgate's own checkout."""
    cwd = Path.cwd()
    bases = [cwd, *_pytest_roots[-1:]]
    root = project_root(cwd)
    if root is not None:
        bases += list(cwd.parents)[: len(cwd.parents) - len(root.parents)]
    if (checkout := source_checkout()) is not None:
        bases.append(checkout)
    seen: list[Path] = []
    for base in bases:
        if base / folder not in seen:
            seen.append(base / folder)
    return seen


def data_dir(folder: str) -> Path:
    """Where perfgate's data files of one kind live: ``$PERFGATE_<FOLDER>_DIR``, else the first existing
    ``<folder>/`` of ``data_dir_candidates`` (the user's project, or the checkout perfgate runs from).

    When none exists (a project without baselines yet), the folder in the project root, where a new file
    belongs: pytest's rootdir under pytest, else the enclosing project, else the current directory.
    """
    if env := os.environ.get(data_dir_env(folder)):
        return Path(env)
    for candidate in data_dir_candidates(folder):
        if candidate.is_dir():
            return candidate
    home = _pytest_roots[-1] if _pytest_roots else (project_root() or Path.cwd())
    return home / folder


def missing_dir_error(directory: Path, kind: str) -> ConfigError:
    """The error for a data folder that does not exist: where it was looked for and how to provide it."""
    folder = f"{kind}s"
    env = data_dir_env(folder)
    if os.environ.get(env) and Path(os.environ[env]) == directory:
        return ConfigError(f"${env} is set to {directory}, which is not a directory",
                           fix=f"point ${env} at the directory holding your {kind} .toml files, or unset it")
    looked = data_dir_candidates(folder)
    if directory not in looked and directory != data_dir(folder):
        return ConfigError(f"{kind} directory not found", source=str(directory),
                           fix=f"give the directory that holds your {kind} .toml files")
    return ConfigError(f"no {folder}/ directory found (looked in: {', '.join(map(str, looked))})",
                       fix=f"create {folder}/ in your project root (where you run pytest) with one .toml file "
                           f"per {kind}, or set ${env} to the directory that holds them")


def names_in(directory: Path) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.toml"))


def named_file(name_or_path: str, directory: Path, kind: str) -> Path:
    """A data file by name (``optimized`` -> ``<directory>/optimized.toml``) or by path; errors list the names."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or "/" in name_or_path:
        if not candidate.is_file():
            raise ConfigError(f"{kind} file not found", source=name_or_path,
                              fix=f"give an existing .toml file or a {kind} name")
        return candidate
    if not directory.is_dir():
        raise missing_dir_error(directory, kind)
    path = directory / f"{name_or_path}.toml"
    if not path.is_file():
        choices = ", ".join(names_in(directory)) or "(none)"
        raise ConfigError(f"no {kind} named '{name_or_path}' in {directory}",
                          fix=f"use one of: {choices} (or add {path})")
    return path
