"""Measuring one phase: telemetry around exactly the measured window of a scenario's load.

This is the join of the data flow (scenario + target -> load engine -> records; telemetry -> samples;
both -> PhaseResult). Raw records, the timeline and the phase JSON are written to the results directory
as soon as they exist, so a failing or interrupted run still leaves its evidence behind.

Each phase draws its prompts from ``PromptStream(scenario.seed, nonce, repeat)`` (recorded as
``phase.prompt_stream``), so it sends prompts no earlier request on the server sent; the server's own
prefix-cache counters then check that: a hit rate above what the scenario's shared prefix allows means the
figures describe a warm cache, and the phase is invalid. Likewise a GPU throttled by power or heat for more
than ``throttle_limit_pct`` of the window's NVML samples (``perfgate.telemetry.throttle``). Energy per
output token joins the window's NVML energy with the load's generated tokens.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from perfgate._errors import PerfgateError
from perfgate.core.phase import PhaseResult, write_json_atomic
from perfgate.core.records import RequestRecord
from perfgate.load.prompts import PromptBuilder
from perfgate.load.scenario import Scenario
from perfgate.load.stream import PromptStream, new_nonce
from perfgate.run.source import ENGINE, EngineLoad, LoadOutcome, LoadSource, LocustLoad
from perfgate.run.target import Target
from perfgate.telemetry import Telemetry, TelemetryResult, unavailable_reason
from perfgate.telemetry.energy import add_energy_per_token
from perfgate.telemetry.throttle import DEFAULT_THROTTLE_LIMIT_PCT, throttle_verdict
from perfgate.telemetry.timeline import write_timeline

__all__ = ["PREFIX_HIT_TOLERANCE_PCT", "EngineLoad", "LoadSource", "LocustLoad",
           "apply_gpu_energy_and_clocks", "check_prefix_cache", "measure_phase", "opening_tokens", "phase_stem",
           "prefix_cache_verdict"]

# Prefix-cache hits (percentage points) allowed above what the scenario's shared prefix explains: the chat
# template's shared opening tokens and block rounding stay well inside it; a re-sent prompt set does not.
PREFIX_HIT_TOLERANCE_PCT = 5.0


def phase_stem(profile: str, scenario: str, repeat: int) -> str:
    return f"{profile}__{scenario}__r{repeat}"


def prefix_cache_verdict(hit_pct: float | None, *, expected_max_pct: float, shared_prefix_tokens: int,
                         why_unread: str | None = None, opening_pct: float = 0.0) -> tuple[str | None, str]:
    """(the reason the phase is invalid, or None; a note for the phase) from its prefix-cache hit rate.

    ``hit_pct``: the server's prefix-cache hits / queries over the window (None: not read, ``why_unread``
    says why). ``expected_max_pct``: ``Scenario.expected_prefix_hit_pct()``, the most the declared sharing
    allows; more than ``PREFIX_HIT_TOLERANCE_PCT`` above it means prompts were served from an earlier
    request's cache. ``opening_pct``: the share of the tokens every prompt opens with whatever its text
    (chat template, a default system prompt), also allowed.
    """
    opening = f"; {opening_pct:.1f} % more for the template's common opening" if opening_pct >= 0.05 else ""
    declared = (f"the scenario declares at most {expected_max_pct:.1f} % "
                f"(shared_prefix_tokens = {shared_prefix_tokens}{opening})")
    if hit_pct is None:
        return None, f"prefix-cache hit rate not checked ({why_unread or 'not measured'}); {declared}"
    note = f"prefix cache: {hit_pct:.1f} % of prompt tokens hit; {declared}"
    if hit_pct <= expected_max_pct + opening_pct + PREFIX_HIT_TOLERANCE_PCT:
        return None, note
    return (f"prefix cache served {hit_pct:.1f} % of prompt tokens, {declared}: these prompts were served from "
            "an earlier request's cache, so the figures describe a warm cache, not this workload"), note


def check_prefix_cache(phase: PhaseResult, scenario: Scenario, *, telemetry_ran: bool = True,
                       opening_tokens: int = 0) -> None:
    """Apply ``prefix_cache_verdict`` to a phase whose telemetry has been applied (invalidates, notes).

    ``opening_tokens``: what every prompt opens with whatever its text (``PromptBuilder.opening_tokens``).
    """
    why = unavailable_reason(phase.unavailable, "prefix_cache_hit_pct") if telemetry_ran else "telemetry did not run"
    reason, note = prefix_cache_verdict(phase.metrics.get("prefix_cache_hit_pct"),
                                        expected_max_pct=scenario.expected_prefix_hit_pct(),
                                        shared_prefix_tokens=scenario.shared_prefix_tokens, why_unread=why,
                                        opening_pct=100.0 * opening_tokens / scenario.prompt_tokens.mean)
    phase.notes.append(note)
    if reason is not None:
        phase.valid = False
        phase.invalid_reasons.append(reason)


def apply_gpu_energy_and_clocks(phase: PhaseResult, tel: TelemetryResult,
                                throttle_limit_pct: float = DEFAULT_THROTTLE_LIMIT_PCT) -> None:
    """After ``tel.apply_to(phase)`` and the load's metrics: energy per output token, and the throttling check
    (invalidates the phase, notes every active clock-event reason). Nothing when NVML was unavailable."""
    add_energy_per_token(phase.metrics, phase.unavailable)
    if tel.nvml is None or not tel.nvml.available:
        return
    reasons, note = throttle_verdict(tel.nvml.clock_events, throttle_limit_pct)
    phase.notes.append(note)
    if reasons:
        phase.valid = False
        phase.invalid_reasons.extend(reasons)


def opening_tokens(target: Target, scenario: Scenario) -> int:
    """``PromptBuilder.opening_tokens`` of the served model's tokenizer (0 when it cannot be built: the load
    has then failed with the reason already)."""
    try:
        return PromptBuilder(target.tokenizer_object(), chat=scenario.endpoint.endswith("chat/completions")
                             ).opening_tokens()
    except PerfgateError:
        return 0


async def measure_phase(target: Target, scenario: Scenario, *, results_dir: Path, repeat: int = 0,
                        nvml_interval_s: float = 0.1, nonce: str | None = None,
                        source: LoadSource = ENGINE,
                        throttle_limit_pct: float = DEFAULT_THROTTLE_LIMIT_PCT) -> PhaseResult:
    """One measured phase of ``scenario`` on ``target``, its load driven by ``source`` (the async engine by
    default; ``LocustLoad(ramp)`` for Locust users): prompts from ``PromptStream(scenario.seed, nonce,
    repeat)`` (``nonce`` None: a fresh one), telemetry around the source's window, energy per token, the
    throttling check (``throttle_limit_pct``: ``[tool.perfgate.gate]``'s) and the prefix-cache check.
    Records, timeline and phase JSON are written even when the load fails."""
    name = source.phase_name(scenario)
    stream = PromptStream(scenario.seed, nonce or new_nonce(), repeat)
    stem = phase_stem(target.profile, name, repeat)
    phase = PhaseResult(profile=target.profile, scenario=name, gpu_class=target.gpu_class,
                        fingerprint=dict(target.fingerprint), started_at=time.time(), repeat=repeat,
                        server_session=target.server_session,
                        prompt_stream=stream.as_dict())
    # What the phase sent, as a digest: a baseline of another workload under the same name is refused. A
    # Locust phase's ramp is part of its workload.
    phase.fingerprint["scenario_digest"] = scenario.content_digest(
        extra="" if name == scenario.name else source.workload_note(scenario))
    phase.notes.append(source.workload_note(scenario))
    telemetry = Telemetry(target.server.metrics_url, pids_provider=target.server.pids, gpu_class=target.gpu_class,
                          model_dir=target.model_dir, api_key=target.api_key, nvml_interval_s=nvml_interval_s)
    started = False

    async def window_started() -> None:
        nonlocal started
        await telemetry.start()
        started = True

    sink: list[RequestRecord] = []  # filled as requests complete: kept even if the load is interrupted
    outcome: LoadOutcome | None = None
    try:
        outcome = await source.run(target, scenario, stream, window_started=window_started, sink=sink,
                                   notes=phase.notes, results_dir=results_dir, stem=stem)
    finally:
        events = outcome.events if outcome is not None else []
        tel = await telemetry.stop(events) if started else None
        records_path = results_dir / "records" / f"{stem}.json"
        write_json_atomic(records_path, [_as_dict(r) for r in sink])
        phase.artifacts["records"] = str(records_path.relative_to(results_dir))
        if outcome is not None:
            phase.metrics.update(outcome.metrics)
            phase.valid = not outcome.invalid_reasons
            phase.invalid_reasons = list(outcome.invalid_reasons)
            phase.artifacts.update(outcome.artifacts)
        else:
            phase.valid = False
            phase.invalid_reasons.append(source.incomplete_reason(len(sink)))
        if tel is not None:
            tel.apply_to(phase)
            apply_gpu_energy_and_clocks(phase, tel, throttle_limit_pct)
            timeline_path = results_dir / "timelines" / f"{stem}.json"
            write_timeline(timeline_path, tel.timeline(events))
            phase.artifacts["timeline"] = str(timeline_path.relative_to(results_dir))
        check_prefix_cache(phase, scenario, telemetry_ran=tel is not None,
                           opening_tokens=opening_tokens(target, scenario))
        write_json_atomic(results_dir / "phases" / f"{stem}.json", phase.to_dict())
    return phase


def _as_dict(record: Any) -> dict[str, Any]:
    if hasattr(record, "to_dict"):
        return record.to_dict()
    if dataclasses.is_dataclass(record):
        return dataclasses.asdict(record)
    return dict(record)
