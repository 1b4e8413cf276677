"""Reading perfgate's TOML data files with errors that name the file, the line and the field."""

from __future__ import annotations

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


def data_dir(folder: str) -> Path:
    """Where perfgate's data files of one kind live: ``$PERFGATE_<FOLDER>_DIR``, else ``<folder>/`` in the
    current directory or in the checkout perfgate runs from (so a test run from anywhere finds the repo's)."""
    import os

    if env := os.environ.get(f"PERFGATE_{folder.upper()}_DIR"):
        return Path(env)
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        if (base / folder).is_dir():
            return base / folder
    return Path.cwd() / folder


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
    path = directory / f"{name_or_path}.toml"
    if not path.is_file():
        choices = ", ".join(names_in(directory)) or "(none)"
        raise ConfigError(f"no {kind} named '{name_or_path}' in {directory}",
                          fix=f"use one of: {choices} (or add {path})")
    return path
