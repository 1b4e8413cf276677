"""Measuring one phase: telemetry around exactly the measured window of a scenario's load.

This is the join of the data flow (scenario + target -> load engine -> records; telemetry -> samples;
both -> PhaseResult). Raw records, the timeline and the phase JSON are written to the results directory
as soon as they exist, so a failing or interrupted run still leaves its evidence behind.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from perfgate.phase import PhaseResult, write_json_atomic
from perfgate.scenario import Scenario
from perfgate.target import Target


def phase_stem(profile: str, scenario: str, repeat: int) -> str:
    return f"{profile}__{scenario}__r{repeat}"


async def measure_phase(target: Target, scenario: Scenario, *, results_dir: Path, repeat: int = 0,
                        nvml_interval_s: float = 0.1) -> PhaseResult:
    from perfgate.load.engine import run_load
    from perfgate.load.request import RequestRecord
    from perfgate.telemetry import Telemetry
    from perfgate.telemetry.timeline import write_timeline

    stem = phase_stem(target.profile, scenario.name, repeat)
    phase = PhaseResult(profile=target.profile, scenario=scenario.name, gpu_class=target.gpu_class,
                        fingerprint=dict(target.fingerprint), started_at=time.time(), repeat=repeat)
    phase.notes.append(f"workload: {scenario.workload()}")
    telemetry = Telemetry(target.server.metrics_url, pids_provider=target.server.pids, gpu_class=target.gpu_class,
                          model_dir=target.model_dir, api_key=target.api_key, nvml_interval_s=nvml_interval_s)
    started = False

    async def window_started() -> None:
        nonlocal started
        await telemetry.start()
        started = True

    sink: list[RequestRecord] = []  # filled as requests complete: kept even if the load is interrupted
    load = None
    try:
        load = await run_load(target.base_url, scenario, model=target.served_model_name,
                              tokenizer=target.tokenizer_object(), api_key=target.api_key,
                              window_started=window_started, sink=sink)
    finally:
        events = load.events if load is not None else []
        tel = await telemetry.stop(events) if started else None
        records_path = results_dir / "records" / f"{stem}.json"
        write_json_atomic(records_path, [_as_dict(r) for r in sink])
        phase.artifacts["records"] = str(records_path.relative_to(results_dir))
        if load is not None:
            phase.metrics.update(load.metrics)
            phase.valid = load.valid
            phase.invalid_reasons = list(load.invalid_reasons)
            phase.notes += load.notes
        else:
            phase.valid = False
            phase.invalid_reasons.append(f"the load did not complete ({len(sink)} requests finished; "
                                         "see the test's error)")
        if tel is not None:
            tel.apply_to(phase)
            timeline_path = results_dir / "timelines" / f"{stem}.json"
            write_timeline(timeline_path, tel.timeline(events))
            phase.artifacts["timeline"] = str(timeline_path.relative_to(results_dir))
        write_json_atomic(results_dir / "phases" / f"{stem}.json", phase.to_dict())
    return phase


def _as_dict(record: Any) -> dict[str, Any]:
    if hasattr(record, "to_dict"):
        return record.to_dict()
    if dataclasses.is_dataclass(record):
        return dataclasses.asdict(record)
    return dict(record)
