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
from perfgate.core.phase import PhaseResult, write_json_atomic

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


def read_declared_phases(results_dir: Path) -> list[PhaseResult]:
    """The phases a finished run declares as its own: the files its ``session.json`` lists, else the phases
    in its ``run.json``. Never a directory walk: an A/B measured inside the run (``ab/A``, ``ab/B``) writes
    phases of the same profile under nested directories, and pooling those would put a deliberately slowed
    server into the profile's baseline. A directory without either file is a run that did not finish."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ResultsDirError("results directory not found", source=str(results_dir),
                              fix="give the directory a run wrote (it holds run.json and session.json)")
    session = _read_json(results_dir / "session.json")
    if isinstance(session, dict) and isinstance(session.get("phases"), list):
        phases = []
        for rel in session["phases"]:
            data = _read_json(results_dir / rel)
            if not _looks_like_phase(data):
                raise ResultsDirError(f"session.json lists {rel}, which is missing or not a phase result",
                                      source=str(results_dir), fix="restore the file, or refresh from another run")
            phases.append(PhaseResult.from_dict(data))
        return sorted(phases, key=lambda p: (p.key, p.started_at, p.repeat))
    run = _read_json(results_dir / "run.json")
    if isinstance(run, dict) and isinstance(run.get("phases"), list):
        phases = [PhaseResult.from_dict(p) for p in run["phases"] if _looks_like_phase(p)]
        return sorted(phases, key=lambda p: (p.key, p.started_at, p.repeat))
    raise ResultsDirError("no session.json or run.json: the run did not finish, so which phases are its own "
                          "(and whether its gate passed) is unknown", source=str(results_dir),
                          fix="refresh from a finished run's results directory")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
