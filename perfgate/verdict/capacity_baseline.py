"""Capacity baselines: the bracket a sweep found, in ``baselines/<gpu>/<profile>/capacity/<scenario>.json``.

A capacity is not a figure with repeat noise but a bracket ``[lower, upper)`` from one sweep: ``lower`` the
highest offered rate whose SLOs held, ``upper`` the lowest that failed. So a capacity baseline keeps each
sweep's bracket and points (``SweepRecord``), one sweep per server session (the server restarted between
them, as for every baseline), and the gate compares against their envelope: the lowest ``lower`` and the
highest ``upper``, which holds the capacity of every recorded session. Its own folder keeps it apart from
the per-phase baselines (``perfgate baselines show`` lists those) and from ``perfgate baselines refresh``,
which pools phases and has no sweeps to pool.

Written atomically, and only from sweeps whose brackets are known at both ends and come from at least
``min_sessions`` server sessions; a file that is corrupt or of another schema is a ``BaselineError`` naming
the file and the way to re-record it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perfgate._errors import BaselineError
from perfgate.core.method import METHOD_VERSION
from perfgate.core.phase import write_json_atomic
from perfgate.verdict.baseline import default_baselines_dir
from perfgate.verdict.identity import baseline_fingerprint

SCHEMA_VERSION = 1
RERECORD = ("re-record it: `pytest perf_tests -k capacity --perfgate-update-baselines` (one sweep per server "
            "session)")


class PointRecord(BaseModel):
    """One sweep point: its offered rate, verdict (pass, fail, saturated, client_limit, invalid) and why, and the
    figures the report plots."""

    model_config = ConfigDict(extra="forbid")

    rate: float
    verdict: str
    stage: str = "climb"
    reasons: list[str] = Field(default_factory=list)
    metrics: dict[str, float] = Field(default_factory=dict)
    saturated: bool | None = None
    phase_file: str = ""  # the point's phase JSON, relative to the results directory ("" in a baseline)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"


class SweepRecord(BaseModel):
    """One sweep's bracket ``[lower, upper)`` and its points. ``lower`` None: no rate passed; ``upper``
    None: the server failed no rate up to the last one tried; ``invalid_at``: the lowest rate whose window was
    invalid (the client could not keep it, or its GPU was throttled): it is neither end."""

    model_config = ConfigDict(extra="forbid")

    session: str = ""
    lower: float | None = None
    upper: float | None = None
    invalid_at: float | None = None
    resolution: float = 0.05
    points: list[PointRecord] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class Bracket:
    """Where a capacity lies: at least ``lower`` (0 when None), below ``upper`` (open when None).
    ``invalid_at``: a rate below ``upper`` whose window was invalid, so the sweep could not look there."""

    lower: float | None
    upper: float | None
    invalid_at: float | None = None

    @property
    def low(self) -> float:
        return self.lower or 0.0

    @property
    def high(self) -> float:
        """The upper end, inf when open."""
        return float("inf") if self.upper is None else self.upper

    def text(self) -> str:
        low = rate_text(self.lower) if self.lower is not None else "0"
        high = rate_text(self.upper) if self.upper is not None else "∞"
        client = (f" (no valid window at {rate_text(self.invalid_at)} req/s)"
                  if self.invalid_at is not None and self.invalid_at < self.high else "")
        return f"[{low}, {high}) req/s{client}"


def rate_text(rate: float) -> str:
    """A rate as a sweep names it: ``16``, ``18.12``, ``3.75`` (req/s implied)."""
    return f"{rate:.4g}"


def envelope(sweeps: Sequence[SweepRecord]) -> Bracket:
    """The bracket that holds every sweep's: the lowest lower end, the highest upper end (open when one is)."""
    if not sweeps:
        return Bracket(None, None)
    lowers = [s.lower for s in sweeps]
    lower = None if any(v is None for v in lowers) else min(v for v in lowers if v is not None)
    uppers = [s.upper for s in sweeps]
    upper = None if any(v is None for v in uppers) else max(v for v in uppers if v is not None)
    limits = [s.invalid_at for s in sweeps if s.invalid_at is not None]
    return Bracket(lower, upper, min(limits) if limits else None)


class CapacityBaseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    kind: str = "capacity"
    gpu_class: str
    profile: str
    scenario: str
    gpu_model: str | None = None
    vllm_version: str | None = None
    created_at: str = ""
    method_version: int = METHOD_VERSION
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    sweeps: list[SweepRecord] = Field(min_length=1)
    accepted_regression: str = ""
    path: str | None = Field(None, exclude=True)

    @property
    def key(self) -> str:
        return f"{self.gpu_class}/{self.profile}/{self.scenario}"

    @property
    def bracket(self) -> Bracket:
        return envelope(self.sweeps)

    @property
    def environment(self) -> dict[str, Any]:
        return baseline_fingerprint(self.fingerprint, gpu_model=self.gpu_model, vllm_version=self.vllm_version)


def capacity_baseline_path(gpu_class: str, profile: str, scenario: str, baselines_dir: Path | None = None) -> Path:
    return (baselines_dir or default_baselines_dir()) / gpu_class / profile / "capacity" / f"{scenario}.json"


def load_capacity_baseline(path: Path) -> CapacityBaseline:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError("capacity baseline not found", source=str(path), fix=RERECORD) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BaselineError(f"corrupt capacity baseline ({exc})", source=str(path),
                            fix=f"restore it from git, or {RERECORD}") from None
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        found = data.get("schema_version") if isinstance(data, dict) else None
        raise BaselineError(f"capacity baseline schema_version is {found!r}, this perfgate reads "
                            f"{SCHEMA_VERSION}", source=str(path), fix=RERECORD)
    try:
        baseline = CapacityBaseline.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise BaselineError(f"invalid capacity baseline: field '{where}': {first['msg']}", source=str(path),
                            fix=RERECORD) from None
    if baseline.method_version < METHOD_VERSION:
        raise BaselineError(f"capacity baseline was recorded by measurement method {baseline.method_version} "
                            f"(this perfgate: {METHOD_VERSION})", source=str(path), fix=RERECORD)
    baseline.path = str(path)
    return baseline


def find_capacity_baseline(gpu_class: str, profile: str, scenario: str,
                           baselines_dir: Path | None = None) -> CapacityBaseline | None:
    path = capacity_baseline_path(gpu_class, profile, scenario, baselines_dir)
    return load_capacity_baseline(path) if path.exists() else None


def capacity_baseline_from(key: tuple[str, str, str], sweeps: Sequence[SweepRecord], fingerprint: dict[str, Any], *,
                           min_sessions: int = 2, accepted_regression: str = "") -> CapacityBaseline:
    """A baseline from sweeps of separate server sessions; BaselineError when they cannot make one."""
    gpu_class, profile, scenario = key
    label = "/".join(key)
    if not sweeps:
        raise BaselineError(f"no sweep to write capacity baseline {label} from", fix=RERECORD)
    for i, s in enumerate(sweeps, 1):
        if s.lower is None:
            raise BaselineError(f"refusing to write capacity baseline {label}: sweep {i} found no rate whose SLOs "
                                "held", fix="lower [sweep] start_rate, or fix what fails at the lowest rate")
        if s.upper is None:
            why = (f"the window at {s.invalid_at:g} req/s was invalid, and nothing above it was offered"
                   if s.invalid_at is not None else "no rate failed")
            raise BaselineError(f"refusing to write capacity baseline {label}: sweep {i} has no upper end ({why}), "
                                "so the capacity is not bracketed",
                                fix="raise [sweep] max_rate / max_climb_points (or give the client more CPU)")
    sessions = {s.session for s in sweeps}
    if len(sessions) < min_sessions:
        raise BaselineError(f"capacity baseline {label} needs sweeps from at least {min_sessions} server "
                            f"sessions (restart between), got {len(sessions)}", fix=RERECORD)
    stored = [s.model_copy(update={"points": [p.model_copy(update={"phase_file": ""}) for p in s.points]})
              for s in sweeps]
    return CapacityBaseline(gpu_class=gpu_class, profile=profile, scenario=scenario,
                            gpu_model=fingerprint.get("gpu_model"), vllm_version=fingerprint.get("vllm_version"),
                            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            fingerprint=dict(fingerprint), sweeps=stored, accepted_regression=accepted_regression)


def write_capacity_baseline(path: Path, baseline: CapacityBaseline) -> str:
    """Atomically write ``baseline`` to ``path``; returns the before/after text for the reviewer."""
    path = Path(path)
    old: CapacityBaseline | None = None
    unreadable = ""
    if path.exists():
        try:
            old = load_capacity_baseline(path)
        except BaselineError as exc:
            unreadable = f"(the previous file could not be read and is replaced: {exc.message})\n"
    write_json_atomic(path, baseline.model_dump(mode="json"))
    before = old.bracket.text() if old is not None else "none"
    lines = [(f"{baseline.key}: capacity baseline {'refreshed' if old else 'new'} ({len(baseline.sweeps)} sweeps in "
             f"{len({s.session for s in baseline.sweeps})} server sessions, vLLM {baseline.vllm_version or '?'}, "
             f"{baseline.gpu_model or baseline.gpu_class})"),
             f"  max_sustained_rate bracket: {before} -> {baseline.bracket.text()}"]
    lines += [f"  sweep {i}: {Bracket(s.lower, s.upper, s.invalid_at).text()}, {len(s.points)} points"
              for i, s in enumerate(baseline.sweeps, 1)]
    if baseline.accepted_regression:
        lines.append(f"  accepted although its gate failed: {baseline.accepted_regression}")
    return unreadable + "\n".join(lines)
