"""Baselines: reviewed JSON in ``baselines/<gpu_class>/<profile>/<scenario>.json``.

A baseline keeps every repeat's value of every metric (the gate learns each metric's noise from them), the
environment fingerprint it was measured on (GPU, driver, clocks/power cap, vLLM and torch versions, the
profile's command line: whatever ``PhaseResult.fingerprint`` carries), and a compact latency distribution
(101 quantiles of TTFT and E2E over all requests) so reports can draw the baseline's CDF.

Each repeat also records the server session it came from (``sessions`` and ``session_of_repeat``): a
baseline holds repeats from at least two server sessions (the server restarted between them), so the gate's
noise model includes session-to-session drift, not only repeat-to-repeat noise. And it records the
measurement-method version (``perfgate.core.method``); a baseline of an older method is refused with the way to
re-record it.

Files are written atomically (``write_json_atomic``: a reader sees the old file or the new one) and only
from a valid, passing run with enough repeats and sessions. A file that is corrupt or of another schema
version is a ``BaselineError`` naming the file and the way to regenerate it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from perfgate._errors import BaselineError, InvalidRunError
from perfgate._toml import data_dir
from perfgate.core.catalog import METRICS
from perfgate.core.fmt import format_value
from perfgate.core.method import METHOD_VERSION, RERECORD_BASELINE
from perfgate.core.phase import PhaseResult, write_json_atomic
from perfgate.verdict.identity import (
    CHANGE_KEYS,
    IDENTITY_KEYS,
    IdentityCheck,
    baseline_fingerprint,
    check_identity,
)

SCHEMA_VERSION = 2
# Fingerprint keys every repeat of one baseline must agree on: one environment (perfgate.verdict.identity says
# which of them refuse a comparison and which are compared and named).
SAME_ENVIRONMENT_KEYS = (*IDENTITY_KEYS, "vllm_version", "torch_version", "cuda_version", "driver")
# Latency series (records keys without the unit) whose distribution a baseline keeps for CDF plots.
CDF_SERIES = ("ttft", "e2el")
REFRESH_FIX = ("regenerate it: `perfgate baselines refresh --from RESULTS_DIR`, or run the tests with "
               "--perfgate-update-baselines")


class Baseline(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    gpu_class: str
    profile: str
    scenario: str
    gpu_model: str | None = None
    vllm_version: str | None = None
    created_at: str = ""
    source: str = ""  # the results directory it was refreshed from
    repeats: int = Field(ge=1)
    method_version: int = METHOD_VERSION
    sessions: list[str] = Field(default_factory=list)  # server session ids, in the order measured
    session_of_repeat: list[int] = Field(default_factory=list)  # index into ``sessions``, one per repeat
    fingerprint: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, list[float]]  # per metric, one value per repeat
    latency_quantiles: dict[str, list[float]] = Field(default_factory=dict)  # "ttft_ms": 101 values
    # Why a run whose gate failed was accepted as the baseline (`refresh --accept-regression WHY`); empty
    # when its gate passed.
    accepted_regression: str = ""
    path: str | None = Field(None, exclude=True)

    @property
    def key(self) -> str:
        return f"{self.gpu_class}/{self.profile}/{self.scenario}"

    @property
    def session_count(self) -> int:
        return len(set(self.session_of_repeat)) if self.session_of_repeat else 1

    def by_session(self, metric: str) -> list[list[float]]:
        """The metric's repeat values grouped by server session (one group when sessions are unknown)."""
        values = self.metrics.get(metric, [])
        if len(self.session_of_repeat) != len(values):
            return [list(values)] if values else []
        groups: dict[int, list[float]] = {}
        for session, value in zip(self.session_of_repeat, values):
            groups.setdefault(session, []).append(value)
        return list(groups.values())

    @property
    def environment(self) -> dict[str, Any]:
        """The fingerprint, with the top-level ``gpu_model``/``vllm_version`` of files that lack them there."""
        return baseline_fingerprint(self.fingerprint, gpu_model=self.gpu_model, vllm_version=self.vllm_version)

    def fingerprint_notes(self, phase: PhaseResult) -> list[str]:
        """Other fingerprint differences (host, Python, ...): neither identity nor a named change, but a
        reader should see them."""
        notes = []
        for k in sorted(set(self.fingerprint) | set(phase.fingerprint)):
            if k in IDENTITY_KEYS or k in CHANGE_KEYS or k in ("profile", "gpu_class"):
                continue
            old, new = self.fingerprint.get(k), phase.fingerprint.get(k)
            if old != new and old is not None and new is not None:
                notes.append(f"{k} changed since the baseline: {old!r:.100} -> {new!r:.100}")
        return notes


def identity_check(baseline: Baseline, phase: PhaseResult) -> IdentityCheck:
    """Whether ``phase`` may be compared with ``baseline`` (``perfgate.verdict.identity``), the key included."""
    check = check_identity(baseline.environment, phase.fingerprint, old_method=baseline.method_version,
                           new_method=phase.method_version)
    if baseline.key != phase.key:
        check.problems.insert(0, f"baseline is for {baseline.key}, the run is {phase.key}")
    return check


def comparability_problems(baseline: Baseline, phase: PhaseResult) -> list[str]:
    """Why ``phase`` may not be compared with ``baseline`` (empty when it may)."""
    return identity_check(baseline, phase).problems


def default_baselines_dir() -> Path:
    """``$PERFGATE_BASELINES_DIR``, else ``baselines/`` in the current directory or the repo root."""
    return data_dir("baselines")


def baseline_path(gpu_class: str, profile: str, scenario: str, baselines_dir: Path | None = None) -> Path:
    return (baselines_dir or default_baselines_dir()) / gpu_class / profile / f"{scenario}.json"


def load_baseline(path: Path) -> Baseline:
    """Read and check one baseline file; any problem is a BaselineError naming the file and the fix."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BaselineError("baseline file not found", source=str(path), fix=REFRESH_FIX) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"cannot read baseline: {exc}", source=str(path), fix=REFRESH_FIX) from None
    except json.JSONDecodeError as exc:
        raise BaselineError(f"corrupt baseline (not valid JSON: {exc.msg} at line {exc.lineno})",
                            source=str(path), fix=f"restore it from git, or {REFRESH_FIX}") from None
    if not isinstance(data, dict):
        raise BaselineError("corrupt baseline (top level is not an object)", source=str(path), fix=REFRESH_FIX)
    version = data.get("schema_version")
    method = data.get("method_version", 1) if version in (1, SCHEMA_VERSION) else None
    if isinstance(method, int) and method < METHOD_VERSION:
        raise BaselineError(f"baseline was recorded by measurement method {method} (this perfgate measures "
                            f"with method {METHOD_VERSION}: fresh prompts in every repeat, two server "
                            "sessions); its figures mean something else", source=str(path), fix=RERECORD_BASELINE)
    if version != SCHEMA_VERSION:
        raise BaselineError(f"baseline schema_version is {version!r}, this perfgate reads {SCHEMA_VERSION}",
                            source=str(path), fix=REFRESH_FIX)
    try:
        baseline = Baseline.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(top level)"
        raise BaselineError(f"invalid baseline: field '{where}': {first['msg']}", source=str(path),
                            fix=REFRESH_FIX) from None
    unknown = sorted(set(baseline.metrics) - set(METRICS))
    if unknown:
        raise BaselineError(f"baseline names unknown metric(s) {', '.join(unknown)}", source=str(path),
                            fix=f"see `perfgate metrics`; {REFRESH_FIX}")
    baseline.path = str(path)
    return baseline


def find_baseline(gpu_class: str, profile: str, scenario: str,
                  baselines_dir: Path | None = None) -> Baseline | None:
    """The baseline for this key, or None when there is none (the gate then reports "new")."""
    path = baseline_path(gpu_class, profile, scenario, baselines_dir)
    return load_baseline(path) if path.exists() else None


def load_request_latencies(phase: PhaseResult, results_dir: Path | None) -> dict[str, list[float]]:
    """Per-request latencies in ms (``ttft_ms``, ``e2el_ms``) from the phase's ``records`` artifact.

    The records file is a JSON list of per-request dicts (or ``{"records": [...]}``), as
    ``RequestRecord.to_dict()`` writes them (``ttft`` and ``latency`` in seconds); ``<name>_ms``/``<name>_s``
    keys or ``sent``/``first_token``/``end`` stamps also work. Failed and warm-up requests are left out.
    Missing or unreadable file -> empty dict.
    """
    rel = phase.artifacts.get("records")
    if not rel:
        return {}
    path = Path(rel) if results_dir is None or Path(rel).is_absolute() else Path(results_dir) / rel
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    records = data.get("records", []) if isinstance(data, dict) else data
    out: dict[str, list[float]] = {f"{s}_ms": [] for s in CDF_SERIES}
    for rec in records if isinstance(records, list) else []:
        if not isinstance(rec, dict) or rec.get("ok") is False or rec.get("error") or rec.get("phase") == "warmup":
            continue
        derived = {"ttft": ("first_token", "sent"), "e2el": ("end", "sent")}
        seconds = {"ttft": "ttft", "e2el": "latency"}  # perfgate.load.request.RequestRecord.to_dict()
        for s in CDF_SERIES:
            value = rec.get(f"{s}_ms")
            for key in (f"{s}_s", seconds[s]):
                if value is None and isinstance(rec.get(key), (int, float)):
                    value = rec[key] * 1000.0
            if value is None and all(rec.get(k) is not None for k in derived[s]):
                value = (rec[derived[s][0]] - rec[derived[s][1]]) * 1000.0
            if isinstance(value, (int, float)) and math.isfinite(value):
                out[f"{s}_ms"].append(float(value))
    return {k: v for k, v in out.items() if v}


def quantiles(values: Sequence[float], points: int = 101) -> list[float]:
    import numpy as np

    return [_round(float(q)) for q in np.quantile(np.asarray(values, dtype=float), np.linspace(0, 1, points))]


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def baseline_from_phases(phases: Sequence[PhaseResult], *, results_dir: Path | None = None, min_repeats: int = 3,
                         failed: str | None = None, max_error_rate: float = 0.01,
                         min_sessions: int = 2) -> Baseline:
    """A Baseline from a run's repeats; refuses (InvalidRunError / BaselineError) to learn from a bad run.

    ``min_sessions``: distinct server sessions the repeats must come from (1 only for an in-run A/B, where
    both sides share the session-to-session drift by construction)."""
    if failed:
        raise BaselineError(f"refusing to write a baseline from a failed run: {failed}",
                            fix="fix the failure and refresh from a passing run")
    if not phases:
        raise BaselineError("no phase results to write a baseline from",
                            fix="point --from at a results directory that holds phase JSON files")
    keys = sorted({p.key for p in phases})
    if len(keys) > 1:
        raise BaselineError(f"phases of several keys given together: {', '.join(keys)}",
                            fix="write one baseline per gpu_class/profile/scenario")
    bad = [p for p in phases if not p.valid]
    if bad:
        reasons = "; ".join(f"repeat {p.repeat}: {', '.join(p.invalid_reasons) or 'invalid'}" for p in bad)
        raise InvalidRunError(f"refusing to write baseline {keys[0]} from an invalid run ({reasons})",
                              fix="the client could not keep its schedule; rerun (fewer concurrent jobs, a "
                                  "lower rate) and refresh from a valid run")
    for p in phases:
        rate = p.metrics.get("error_rate")
        if rate is not None and rate > max_error_rate:
            raise BaselineError(f"refusing to write baseline {keys[0]}: repeat {p.repeat} has error_rate "
                                f"{rate:.3f} > {max_error_rate}", fix="fix the errors, then refresh")
    if len(phases) < min_repeats:
        raise BaselineError(f"baseline {keys[0]} needs at least {min_repeats} repeats to learn its noise, "
                            f"got {len(phases)}", fix=f"rerun with --perfgate-repeats {min_repeats}")
    for k in SAME_ENVIRONMENT_KEYS:
        seen = {str(p.fingerprint.get(k)) for p in phases}
        if len(seen) > 1:
            raise BaselineError(f"repeats disagree on {k}: {sorted(seen)}", fix="refresh from one environment")
    old = sorted({p.method_version for p in phases if p.method_version < METHOD_VERSION})
    if old:
        raise BaselineError(f"refusing to write baseline {keys[0]} from phases measured by method "
                            f"{', '.join(map(str, old))} (this perfgate: method {METHOD_VERSION})",
                            fix="rerun the suite with this perfgate, then refresh from that run")
    phases = sorted(phases, key=lambda p: (p.started_at, p.repeat))
    sessions = list(dict.fromkeys(p.server_session or "(unknown)" for p in phases))
    if len(sessions) < min_sessions:
        raise BaselineError(f"baseline {keys[0]} needs repeats from at least {min_sessions} server sessions "
                            f"(restart between) so that session-to-session drift is in its noise; got "
                            f"{len(sessions)}", fix="record with --perfgate-update-baselines (it restarts the "
                            "server between sessions), or `perfgate baselines refresh --from RUN1 --from RUN2` "
                            "with runs of separate server sessions")
    first = phases[0]
    metrics: dict[str, list[float]] = {}
    for key in sorted({k for p in phases for k in p.metrics}):
        values = [p.metrics.get(key) for p in phases]
        # A metric every repeat measured; a partial one would bias the noise estimate.
        if key in METRICS and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            metrics[key] = [_round(float(v)) for v in values]
    pooled: dict[str, list[float]] = {}
    for p in phases:
        for name, values in load_request_latencies(p, results_dir).items():
            pooled.setdefault(name, []).extend(values)
    return Baseline(
        gpu_class=first.gpu_class, profile=first.profile, scenario=first.scenario,
        gpu_model=first.fingerprint.get("gpu_model"), vllm_version=first.fingerprint.get("vllm_version"),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        source=str(results_dir) if results_dir else "", repeats=len(phases),
        sessions=sessions, session_of_repeat=[sessions.index(p.server_session or "(unknown)") for p in phases],
        fingerprint=dict(first.fingerprint), metrics=metrics,
        latency_quantiles={k: quantiles(v) for k, v in pooled.items()})


def write_baseline(path: Path, phases: Sequence[PhaseResult], *, results_dir: Path | None = None,
                   min_repeats: int = 3, failed: str | None = None, min_sessions: int = 2,
                   echo: Callable[[str], None] | None = None, source: str | None = None,
                   accepted_regression: str = "") -> str:
    """Atomically write the baseline learned from ``phases`` to ``path``; returns the before/after diff.

    ``failed`` is why the run failed (an SLO, a test error), if it did: the write is then refused. An
    existing file that cannot be read is replaced (the diff says so) since refreshing is its fix.
    """
    new = baseline_from_phases(phases, results_dir=results_dir, min_repeats=min_repeats, failed=failed,
                               min_sessions=min_sessions)
    if source is not None:  # merged from several runs: name them all
        new.source = source
    new.accepted_regression = accepted_regression
    path = Path(path)
    old: Baseline | None = None
    unreadable = ""
    if path.exists():
        try:
            old = load_baseline(path)
        except BaselineError as exc:
            unreadable = f"(the previous file could not be read and is replaced: {exc.message})\n"
    write_json_atomic(path, new.model_dump(mode="json"))
    diff = unreadable + diff_baselines(old, new)
    if echo:
        echo(f"baseline {path}:\n{diff}")
    return diff


def _summary(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, (sd / mean if mean else 0.0)


def diff_baselines(old: Baseline | None, new: Baseline) -> str:
    """A before/after table a reviewer reads: mean (noise) per metric, the change, fingerprint changes."""

    lines = [(f"{new.key}: {'new baseline' if old is None else 'refreshed'} "
              f"({new.repeats} repeats in {new.session_count} server sessions, vLLM {new.vllm_version or '?'}, "
              f"{new.gpu_model or new.gpu_class}, method {new.method_version})")]
    if new.accepted_regression:
        lines.append(f"  accepted although its gate failed: {new.accepted_regression}")
    if old is not None:
        for k in sorted(set(old.fingerprint) | set(new.fingerprint)):
            if old.fingerprint.get(k) != new.fingerprint.get(k):
                lines.append(f"  fingerprint {k}: {old.fingerprint.get(k)!r} -> {new.fingerprint.get(k)!r}")
    rows = [("metric", "before", "after", "change")]
    for m in sorted(set(new.metrics) | set(old.metrics if old else {})):
        unit = METRICS[m].unit if m in METRICS else ""
        before = old.metrics.get(m) if old else None
        after = new.metrics.get(m)

        def cell(values: list[float] | None, unit: str = unit) -> str:
            if not values:
                return "-"
            mean, cv = _summary(values)
            return f"{format_value(mean, unit)} ±{cv * 100:.0f}%"

        if before and after:
            b, a = _summary(before)[0], _summary(after)[0]
            change = f"{(a / b - 1) * 100:+.1f}%" if b else ("0" if a == b else "from 0")
        else:
            change = "added" if after else "removed"
        rows.append((m, cell(before), cell(after), change))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)
