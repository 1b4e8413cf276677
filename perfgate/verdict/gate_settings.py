"""The gate's settings: ``[tool.perfgate.gate]`` in pyproject.toml, per-GPU-class overrides, catalog defaults.

    [tool.perfgate.gate]
    alpha = 0.05              # one-sided error rate of each margin test
    correction = "holm"       # across gated metrics, for REGRESSED ("bh", "holm" or "none")
    repeats = 3               # repeats per phase when neither the test nor --perfgate-repeats says
    max_repeats = 6           # an INCONCLUSIVE phase adds repeats up to this many before it decides
    baseline_sessions = 2     # server sessions a baseline records (restart between)
    throttle_limit_pct = 5.0  # a phase whose GPU was power/thermal throttled in more of its samples is INVALID
    [tool.perfgate.gate.min_effect]   # per metric, overrides the catalog's minimum effect
    median_ttft_ms = 0.25
    [tool.perfgate.gate.class.cpu]    # a GPU class's overrides (same keys, plus the ones below)
    smoke = true              # a smoke gate: fails on a clear regression only, and says so
    min_effect_all = 2.0      # one minimum effect for every gated metric
    gated = ["failed", "output_throughput"]   # gate only these

A metric's defaults (gated or not, minimum effect, absolute floor) live on its catalog spec; this file
only overrides them. Unknown keys and unknown metrics are errors naming the file and the valid choices.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from perfgate._errors import ConfigError
from perfgate.core.catalog import GATED, METRICS
from perfgate.telemetry.throttle import DEFAULT_THROTTLE_LIMIT_PCT

PYPROJECT_ENV = "PERFGATE_PYPROJECT"


class _Overrides(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alpha: float | None = Field(None, gt=0, lt=0.5)
    correction: Literal["bh", "holm", "none"] | None = None
    repeats: int | None = Field(None, ge=1)
    max_repeats: int | None = Field(None, ge=1)
    baseline_sessions: int | None = Field(None, ge=1)
    throttle_limit_pct: float | None = Field(None, ge=0, le=100)
    min_effect: dict[str, float] = Field(default_factory=dict)
    floor: dict[str, float] = Field(default_factory=dict)
    smoke: bool | None = None
    min_effect_all: float | None = Field(None, ge=0)
    gated: list[str] | None = None

    @model_validator(mode="after")
    def _known_metrics(self) -> _Overrides:
        for field_name in ("min_effect", "floor"):
            for key in getattr(self, field_name):
                _check_metric(key, field_name)
        for key in self.gated or []:
            _check_metric(key, "gated")
            if METRICS[key].better == "none":
                raise ValueError(f"gated: {key} has no better direction and cannot be gated")
        return self


def _check_metric(key: str, where: str) -> None:
    if key not in METRICS:
        import difflib

        close = difflib.get_close_matches(key, METRICS, n=3)
        raise ValueError(f"{where}: unknown metric {key!r}" + (f"; did you mean {', '.join(close)}?" if close
                                                                  else " (see `perfgate metrics`)"))


class _GateTable(_Overrides):
    class_: dict[str, _Overrides] = Field(default_factory=dict, alias="class")


class GateSettings(BaseModel):
    """Resolved settings for one GPU class."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu_class: str = ""
    alpha: float = 0.05
    correction: Literal["bh", "holm", "none"] = "holm"
    repeats: int = 3
    max_repeats: int = 6
    baseline_sessions: int = 2
    # Not a gate figure but a validity rule, kept with the gate's other per-class knobs: the share of a phase's
    # NVML samples (%) in which one GPU may be power/thermal throttled (perfgate.telemetry.throttle says why
    # not zero). Above it the phase is INVALID.
    throttle_limit_pct: float = DEFAULT_THROTTLE_LIMIT_PCT
    min_effect: dict[str, float] = Field(default_factory=dict)
    floor: dict[str, float] = Field(default_factory=dict)
    smoke: bool = False
    min_effect_all: float | None = None
    gated: tuple[str, ...] = GATED
    allow_incomparable: bool = False
    require_baseline: bool = False  # --perfgate-require-baselines: a phase without a baseline (NEW) fails
    source: str = "(defaults)"

    def effect(self, metric: str) -> float:
        if self.min_effect_all is not None:
            return self.min_effect_all
        return self.min_effect.get(metric, METRICS[metric].min_effect)

    def floor_of(self, metric: str) -> float:
        return self.floor.get(metric, METRICS[metric].floor)


def find_pyproject(root: Path | None = None) -> Path | None:
    """``$PERFGATE_PYPROJECT``, else pyproject.toml in ``root`` (pytest's rootdir) or the current directory."""
    if env := os.environ.get(PYPROJECT_ENV):
        return Path(env)
    for directory in (root, Path.cwd()):
        if directory is not None and (Path(directory) / "pyproject.toml").is_file():
            return Path(directory) / "pyproject.toml"
    return None


def load_gate_settings(gpu_class: str, pyproject: Path | None = None, *, root: Path | None = None,
                       allow_incomparable: bool = False, require_baseline: bool = False) -> GateSettings:
    """The gate's settings for ``gpu_class`` from ``[tool.perfgate.gate]`` (defaults when absent)."""
    path = pyproject or find_pyproject(root)
    table: dict = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read the gate settings: {exc}", source=str(path),
                              fix="fix the TOML, or point $PERFGATE_PYPROJECT at another file") from None
        table = data.get("tool", {}).get("perfgate", {}).get("gate", {})
    try:
        parsed = _GateTable.model_validate(table)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(table)"
        valid = ", ".join(sorted(k for k in _Overrides.model_fields) + ["class"])
        raise ConfigError(f"[tool.perfgate.gate] {where}: {first['msg']}", source=str(path),
                          fix=f"valid keys: {valid}") from None
    merged: dict = {"gpu_class": gpu_class, "allow_incomparable": allow_incomparable,
                    "require_baseline": require_baseline,
                    "source": str(path) if path else "(defaults)"}
    for layer in (parsed, parsed.class_.get(gpu_class)):
        if layer is None:
            continue
        for key, value in layer.model_dump(exclude={"class_"}).items():
            if key in ("min_effect", "floor"):
                merged[key] = {**merged.get(key, {}), **value}
            elif value is not None:
                merged[key] = tuple(value) if key == "gated" else value
    settings = GateSettings(**merged)
    if settings.max_repeats < settings.repeats:
        raise ConfigError(f"[tool.perfgate.gate] max_repeats ({settings.max_repeats}) is below repeats "
                          f"({settings.repeats})", source=str(path), fix="raise max_repeats")
    return settings
