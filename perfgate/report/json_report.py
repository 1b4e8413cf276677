"""run.json (everything about a run, machine-readable) and reading saved phase results back."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from perfgate._errors import ResultsDirError
from perfgate.phase import PhaseResult, write_json_atomic

RUN_SCHEMA_VERSION = 1


def jsonable(obj: Any) -> Any:
    """Dataclasses, pydantic models, sets and non-finite floats as strict JSON (inf/nan -> null)."""
    if isinstance(obj, BaseModel):
        return jsonable(obj.model_dump(mode="json"))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, (set, frozenset)):
        return sorted(jsonable(v) for v in obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def _verdict(v: Any, **extra: Any) -> dict[str, Any]:
    data = jsonable(v)
    data.update(extra)
    return data


def write_run_json(path: Path, phases: Sequence[PhaseResult], *, slo_verdicts: Sequence[Any] = (),
                   gate_verdicts: Sequence[Any] = (), ab_verdicts: Sequence[Any] = (),
                   plots: dict[str, list[str]] | None = None, extra: dict[str, Any] | None = None,
                   redact: Callable[[str], str] | None = None) -> Path:
    slo = [_verdict(v, passed=v.passed) for v in slo_verdicts]
    gate = [_verdict(v, passed=v.passed) for v in gate_verdicts]
    passed = all(p.valid for p in phases) and all(v["passed"] for v in slo + gate)
    data = {
        "schema_version": RUN_SCHEMA_VERSION,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "passed": passed,
        "phases": [jsonable(p.to_dict()) for p in phases],
        "slo": slo,
        "gate": gate,
        "ab": [_verdict(v, better=v.better, worse=v.worse) for v in ab_verdicts],
        "plots": plots or {},
        **(extra or {}),
    }
    if redact is not None:  # through the text, so no string anywhere in the tree escapes it
        data = json.loads(redact(json.dumps(jsonable(data))))
    write_json_atomic(Path(path), jsonable(data))
    return Path(path)


def _looks_like_phase(data: Any) -> bool:
    return isinstance(data, dict) and {"profile", "scenario", "gpu_class", "metrics"} <= set(data)


def read_phase_results(results_dir: Path) -> list[PhaseResult]:
    """Every PhaseResult saved under ``results_dir`` (phase JSON files; else the phases in run.json)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsDirError("results directory not found", source=str(results_dir),
                              fix="give the directory a run wrote (it holds run.json and phase JSON files)")
    phases: list[PhaseResult] = []
    run_json: dict[str, Any] | None = None
    for path in sorted(results_dir.rglob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError):
            continue  # records, timelines, half-written files of a killed run: not phases
        if path.name == "run.json" and isinstance(data, dict) and "phases" in data:
            run_json = data
        elif _looks_like_phase(data):
            try:
                phases.append(PhaseResult.from_dict(data))
            except TypeError as exc:
                raise ResultsDirError(f"phase file does not match this perfgate's PhaseResult: {exc}",
                                      source=str(path), fix="read it with the perfgate version that wrote it")
    if not phases and run_json:
        phases = [PhaseResult.from_dict(p) for p in run_json["phases"] if _looks_like_phase(p)]
    return sorted(phases, key=lambda p: (p.key, p.started_at, p.repeat))
