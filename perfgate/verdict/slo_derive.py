"""``perfgate slos derive``: a provisional SLO set for a GPU class, written from one run's saved phases.

Rules (each bound's comment repeats its rule, the repeats, the worst and the mean):

- latency (p99 TTFT, TPOT, E2E): worst repeat x 1.15, rounded up to 3 significant figures;
- request rate, closed loop: worst repeat x 0.85, rounded down to 3 significant figures;
- request rate, open loop: the offered rate, with a tolerance that covers the worst repeat's shortfall plus 5
  points, in steps of 5 % and never under the default 10 % (completions / window counts the drain after the
  last send, so a server that keeps up still measures a little under the offered rate);
- GPU utilization (mean): worst repeat - 10 points, down to a multiple of 5;
- VRAM peak, per profile: the highest peak of the profile's repeats + 1 GiB (vLLM takes
  --gpu-memory-utilization of the card: a bound on leaks and on flags that grow the pool).

A metric a repeat did not measure (GPU metrics on the CPU class) gets no bound. A run is refused when it has
no phases, when a phase is of another measurement method or GPU class, invalid, had failed requests, or (open
loop) saturated the server: bounds derived from it would describe a broken run. The set is written with
``provisional = true``, which every report shows until a person has reviewed the bounds and removed it.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path

from perfgate._errors import ConfigError, ResultsDirError
from perfgate.core.catalog import METRICS
from perfgate.core.fmt import format_value
from perfgate.core.method import METHOD_VERSION
from perfgate.core.phase import PhaseResult
from perfgate.core.results import read_phase_results
from perfgate.verdict.slo_files import load_slos

LATENCY_FACTOR = 1.15
RATE_FACTOR = 0.85
UTIL_MARGIN_PTS = 10.0
VRAM_MARGIN_GIB = 1.0
MIN_TOLERANCE = 0.10
_LATENCY_METRICS = ("p99_ttft_ms", "p99_tpot_ms", "p99_e2el_ms")


def _sig3(value: float, up: bool) -> float:
    """``value`` rounded up (or down) to 3 significant figures: 2,692 -> 2,700; 17.51 -> 17.5."""
    if value <= 0:
        return 0.0
    step = 10 ** (math.floor(math.log10(value)) - 2)
    units = value / step
    units = math.ceil(units - 1e-9) if up else math.floor(units + 1e-9)
    return float(f"{units * step:.6g}")


def _num(phase: PhaseResult, metric: str) -> float | None:
    value = phase.metrics.get(metric)
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _refuse(results_dir: Path, message: str, fix: str) -> ResultsDirError:
    return ResultsDirError(message, source=str(results_dir), fix=fix)


def read_run(results_dir: Path, gpu_class: str) -> list[PhaseResult]:
    """The run's declared phases (``phases/`` only, never nested A/B directories), checked for derivation."""
    results_dir = Path(results_dir)
    phases_dir = results_dir / "phases"
    phases = read_phase_results(phases_dir if phases_dir.is_dir() else results_dir)
    if not phases:
        raise _refuse(results_dir, "no saved phases to derive SLOs from",
                      "give the results directory of a finished run (it holds phases/*.json)")
    problems = []
    for p in phases:
        name = f"{p.key} repeat {p.repeat}"
        if p.method_version != METHOD_VERSION:
            problems.append(f"{name} was measured with method {p.method_version}, not this perfgate's "
                            f"{METHOD_VERSION}")
        if p.gpu_class != gpu_class:
            problems.append(f"{name} ran on GPU class {p.gpu_class}, not {gpu_class}")
        if not p.valid:
            problems.append(f"{name} is INVALID: " + "; ".join(p.invalid_reasons or ["client fell behind"]))
        if (_num(p, "failed") or 0) > 0 or (_num(p, "token_count_mismatches") or 0) > 0:
            problems.append(f"{name} had failed requests or token-count mismatches")
        if _num(p, "offered_rate") is not None and p.saturated:
            problems.append(f"{name} saturated the server: " + "; ".join(p.saturation_reasons or ["queue grew"]))
    if problems:
        raise _refuse(results_dir, "refusing to derive SLOs from this run:\n  " + "\n  ".join(problems),
                      f"derive from a run of this perfgate (method {METHOD_VERSION}) on a {gpu_class} whose "
                      "phases are all valid, error-free and within capacity")
    return phases


def _evidence(metric: str, values: list[float], rule: str, worst: float) -> str:
    unit = METRICS[metric].unit
    shown = " / ".join(format_value(v, unit) for v in values)
    mean = sum(values) / len(values)
    return (f"# {metric}: {rule}; {len(values)} repeat(s): {shown}; worst {format_value(worst, unit)}, "
            f"mean {format_value(mean, unit)}")


def _bound_lines(group: list[PhaseResult]) -> list[str]:
    """TOML lines (comment, then entry) for the latency, rate and utilization bounds of one key."""
    lines: list[str] = []

    def add(metric: str, pick: Callable[[list[float]], float], derive: Callable[[float], tuple[str, str]]) -> None:
        values = [v for p in group if (v := _num(p, metric)) is not None]
        if len(values) < len(group):  # not measured in every repeat: no bound, rather than half a one
            return
        worst = pick(values)
        rule, entry = derive(worst)
        lines.extend([_evidence(metric, values, rule, worst), f"{metric} = {{ {entry} }}"])

    for metric in _LATENCY_METRICS:
        add(metric, max, lambda w: ("rule: worst repeat x 1.15, rounded up",
                                    f'max = {_sig3(w * LATENCY_FACTOR, True):g}, note = "derived: worst x 1.15"'))
    offered = _num(group[0], "offered_rate")
    if offered is None:
        add("request_throughput", min, lambda w: (
            "rule (closed loop): worst repeat x 0.85, rounded down",
            f'min = {_sig3(w * RATE_FACTOR, False):g}, note = "derived: worst x 0.85 (closed loop)"'))
    else:
        def open_loop(worst: float) -> tuple[str, str]:
            shortfall = max(0.0, 1.0 - worst / offered)
            tolerance = max(MIN_TOLERANCE, math.ceil((shortfall + 0.05) / 0.05 - 1e-9) * 0.05)
            return ((f"rule (open loop): the offered {offered:g} req/s, tolerance = the worst repeat's shortfall "
                    f"{shortfall:.1%} + 5 points, in steps of 5 % (at least 10 %)"),
                    (f"min = {offered:g}, tolerance = {tolerance:.2f}, "
                    f'note = "derived: offered {offered:g} req/s, completed within {tolerance:.0%}"'))
        add("request_throughput", min, open_loop)
    add("gpu_util_pct_mean", min, lambda w: (
        "rule: worst repeat - 10 points, down to a multiple of 5",
        f'min = {max(0.0, math.floor((w - UTIL_MARGIN_PTS) / 5) * 5):g}, note = "derived: worst - 10 points"'))
    return lines


def render_slo_file(phases: list[PhaseResult], gpu_class: str, results_dir: Path, extends: str | None) -> str:
    """The TOML text: a header saying where the bounds came from, then one table per profile and key."""
    groups: dict[tuple[str, str], list[PhaseResult]] = {}
    for p in phases:
        groups.setdefault((p.profile, p.scenario), []).append(p)
    fp = phases[0].fingerprint
    versions = ", ".join(f"{k} {fp[k]}" for k in ("vllm_version", "torch_version", "driver", "gpu_model")
                         if fp.get(k))
    sessions = len({p.server_session for p in phases})
    head = [(f"# GPU class {gpu_class}: SLO bounds derived by `perfgate slos derive` on "
            f"{time.strftime('%Y-%m-%d', time.gmtime())} from {Path(results_dir).resolve()}"),
            (f"# ({versions or 'versions not recorded'}; {len(phases)} phases from {sessions} server session(s); "
            f"measurement method {METHOD_VERSION})."),
            "# Rules: latency worst repeat x 1.15 (up); closed-loop rate worst x 0.85 (down); open-loop rate the",
            "# offered rate with a tolerance covering the worst shortfall; GPU util worst - 10 points; VRAM the",
            "# profile's peak + 1 GiB. Each bound's comment gives its rule, the repeats, the worst and the mean.",
            f'description = "{gpu_class}: bounds derived from a measured run (see the comment at the top)"',
            f"method_version = {METHOD_VERSION}"]
    if extends:
        head.append(f'extends = "{extends}"')
    head += ["# PROVISIONAL: a person must review every bound below, then delete this line. Until then every",
             "# verdict against this set is labelled PROVISIONAL in the terminal, the failure table and summary.md.",
             "provisional = true"]
    body: list[str] = []
    for profile in sorted({p for p, _ in groups}):
        peaks = [(p.key, v) for p in phases if p.profile == profile and (v := _num(p, "vram_used_gib_peak"))]
        if peaks and len(peaks) == sum(1 for p in phases if p.profile == profile):
            values = [v for _, v in peaks]
            worst = max(values)
            body += ["", f'[slo."{profile}/*"]',
                     _evidence("vram_used_gib_peak", values, "rule: the profile's highest peak + 1 GiB", worst),
                     (f"vram_used_gib_peak = {{ max = {math.ceil((worst + VRAM_MARGIN_GIB) * 10) / 10:g}, "
                     f'note = "derived: peak + 1 GiB" }}')]
    for (profile, scenario), group in sorted(groups.items()):
        lines = _bound_lines(group)
        if lines:
            body += ["", f'[slo."{profile}/{scenario}"]', *lines]
    return "\n".join(head + body) + "\n"


def derive_slo_file(results_dir: Path, gpu_class: str, out: Path, *, overwrite: bool = False) -> tuple[Path, str]:
    """Write ``out`` from the run in ``results_dir``; the written file is loaded back before it replaces any.

    Returns (path, a one-line-per-key summary)."""
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError("the SLO file exists already", source=str(out),
                          fix="give --out another path, or --force to replace it (it is reviewed text: diff it)")
    phases = read_run(Path(results_dir), gpu_class)
    extends = "common" if (out.parent / "common.toml").is_file() and out.stem != "common" else None
    text = render_slo_file(phases, gpu_class, Path(results_dir), extends)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".derive-{os.getpid()}-{out.name}")
    tmp.write_text(text, encoding="utf-8")
    summary = []
    try:  # read it back with the loader the suite uses, so a file that cannot be loaded is never written
        for key in sorted({(p.profile, p.scenario) for p in phases}):
            slos = load_slos(tmp.stem, *key, out.parent)
            if slos is not None:
                summary.append(f"{gpu_class}/{key[0]}/{key[1]}: " + "; ".join(
                    f"{m} {b.written}" for m, b in slos.bounds.items()))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out, "\n".join(summary)
