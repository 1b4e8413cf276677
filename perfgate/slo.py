"""SLO sets: reviewed TOML in ``slos/<gpu_class>.toml``, keyed by GPU class x profile x scenario.

A file holds tables named ``"<profile>/<scenario>"`` with ``*`` for any::

    extends = "common"                  # another file in slos/, read first
    [slo."*/*"]                         # every profile, every scenario on this GPU class
    vram_used_gib_peak = { max = "20 GB" }
    [slo."*/chat"]                      # every profile, the chat scenario
    p99_e2el_ms.max = 1200
    [slo."optimized/chat"]              # one profile, one scenario

Each entry is a catalog metric with ``min`` and/or ``max`` (a memory size such as ``"20 GB"`` is exact:
20e9 bytes = 18.63 GiB) and an optional ``note``. Precedence: a file overrides the file it extends; within a
file ``*/*`` < ``profile/*`` < ``*/scenario`` < ``profile/scenario``; fields merge (a more specific ``max``
keeps an inherited ``min``). A metric that is not in the catalog is a ConfigError when the file is loaded.

Throughput bounds (``request_throughput`` and the other rates) mean a rate SUSTAINED while the latency and
error SLOs hold: with a sweep, ``max_sustained_rate``; in an open-loop phase, the offered rate counts only if
the run is valid, the client sent >= 95 % of it, the server did not saturate, and the latency SLOs passed.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from perfgate._errors import ConfigError
from perfgate._toml import data_dir, find_line, read_toml, validate
from perfgate.catalog import METRICS
from perfgate.hardware import parse_memory
from perfgate.phase import PhaseResult

PASS, FAIL, SKIP = "pass", "fail", "skip"
THROUGHPUT_METRICS = ("request_throughput", "output_throughput", "total_token_throughput", "request_goodput")
MIN_ACHIEVED_RATIO = 0.95


class Bound(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: float | str | None = None
    max: float | str | None = None
    note: str = ""


class SloFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    extends: str | None = None
    # True for bounds that are placeholders until measured on the hardware; reports say so.
    provisional: bool = False
    slo: dict[str, dict[str, Bound]] = Field(default_factory=dict)


@dataclass(frozen=True)
class ResolvedBound:
    metric: str
    min: float | None
    max: float | None
    note: str
    written: str  # the bound as written, e.g. "<= 20 GB"
    source: str  # "slos/a10g.toml [*/chat]"

    def text(self) -> str:
        return self.written


@dataclass
class SloRow:
    metric: str
    bound: str
    measured: float | None
    margin: float | None  # relative headroom: +0.05 = 5 % inside the bound, negative = outside
    status: Literal["pass", "fail", "skip"]
    note: str = ""


@dataclass
class SloVerdict:
    key: str
    rows: list[SloRow]
    files: list[str]
    provisional: bool = False
    results_dir: str | None = None  # set by the caller so a failure names the raw results

    @property
    def passed(self) -> bool:
        """True when no row failed (skipped rows are listed, never counted as passes)."""
        return not self.failed

    @property
    def failed(self) -> list[SloRow]:
        return [r for r in self.rows if r.status == FAIL]

    @property
    def skipped(self) -> list[SloRow]:
        return [r for r in self.rows if r.status == SKIP]

    def table(self) -> str:
        from perfgate.report.markdown import format_value

        head = f"SLOs {self.key}: {'PASS' if self.passed else 'FAIL'}"
        counts = [f"{len(self.failed)} of {len(self.rows)} failed"] if self.failed else []
        if self.skipped:
            counts.append(f"{len(self.skipped)} skipped")
        if self.provisional:
            counts.append("PROVISIONAL bounds")
        lines = [head + (f" ({', '.join(counts)})" if counts else "")]
        order = {FAIL: 0, SKIP: 2, PASS: 1}
        body = [("status", "metric", "bound", "measured", "margin", "note")]
        for r in sorted(self.rows, key=lambda r: order[r.status]):
            unit = METRICS[r.metric].unit
            margin = "-" if r.margin is None else f"{r.margin * 100:+.1f}%"
            body.append((r.status.upper() if r.status == FAIL else r.status, r.metric, r.bound,
                         format_value(r.measured, unit), margin, r.note))
        widths = [max(len(row[i]) for row in body) for i in range(6)]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in body]
        if self.results_dir:
            lines.append(f"raw results: {self.results_dir}")
        lines.append(f"SLO files: {', '.join(self.files)}")
        return "\n".join(lines)


@dataclass
class SloSet:
    gpu_class: str
    profile: str
    scenario: str
    bounds: dict[str, ResolvedBound]
    files: list[str] = field(default_factory=list)
    provisional: bool = False

    @property
    def key(self) -> str:
        return f"{self.gpu_class}/{self.profile}/{self.scenario}"

    def evaluate(self, phase: PhaseResult, results_dir: str | Path | None = None) -> SloVerdict:
        """Check every bound against the phase; quality (latency/error) rows first, then sustained rates."""
        rates = [b for m, b in self.bounds.items() if m in THROUGHPUT_METRICS]
        others = [b for m, b in self.bounds.items() if m not in THROUGHPUT_METRICS]
        rows = [_check(b, _measured(phase, b.metric), phase) for b in others]
        quality = [r for r in rows if METRICS[r.metric].unit == "ms" or r.metric == "error_rate"]
        rows += [_check_rate(b, phase, quality) for b in rates]
        return SloVerdict(self.key, rows, self.files, self.provisional,
                          str(results_dir) if results_dir is not None else None)


def _measured(phase: PhaseResult, metric: str) -> float | None:
    value = phase.metrics.get(metric)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _margin(bound: ResolvedBound, value: float) -> float | None:
    """Relative headroom to the nearer bound; None against a bound of 0 (no relative scale)."""
    margins = []
    if bound.max is not None:
        margins.append((bound.max - value) / abs(bound.max) if bound.max else None)
    if bound.min is not None:
        margins.append((value - bound.min) / abs(bound.min) if bound.min else None)
    known = [m for m in margins if m is not None]
    return min(known) + 0.0 if known else None


def _inside(bound: ResolvedBound, value: float) -> bool:
    return (bound.max is None or value <= bound.max) and (bound.min is None or value >= bound.min)


def _check(bound: ResolvedBound, value: float | None, phase: PhaseResult, note: str = "") -> SloRow:
    if value is None:
        source = METRICS[bound.metric].source
        reason = phase.unavailable.get(source)
        why = f"{source} unavailable: {reason}" if reason else "not measured in this phase"
        return SloRow(bound.metric, bound.text(), None, None, SKIP, why)
    status = PASS if _inside(bound, value) else FAIL
    return SloRow(bound.metric, bound.text(), value, _margin(bound, value), status, note or bound.note)


def _check_rate(bound: ResolvedBound, phase: PhaseResult, quality: list[SloRow]) -> SloRow:
    """A throughput bound: the rate counts only where it was sustained with latency/error SLOs met."""
    m = phase.metrics
    if bound.metric == "request_throughput" and _measured(phase, "max_sustained_rate") is not None:
        return _check(bound, _measured(phase, "max_sustained_rate"), phase,
                      "max_sustained_rate from the sweep (highest rate whose latency SLOs held)")
    blockers = []
    if not phase.valid:
        blockers.append("run invalid (" + "; ".join(phase.invalid_reasons or ["client fell behind"]) + ")")
    failed = [r.metric for r in quality if r.status == FAIL]
    if failed:
        blockers.append("latency/error SLOs failed: " + ", ".join(failed))
    offered = _measured(phase, "offered_rate")
    ratio = _measured(phase, "achieved_rate_ratio")
    if ratio is None and offered and _measured(phase, "achieved_rate") is not None:
        ratio = m["achieved_rate"] / offered
    if offered and ratio is not None and ratio < MIN_ACHIEVED_RATIO:
        blockers.append(f"client sent {ratio:.0%} of the offered {offered:g} req/s (needs >= 95%)")
    if offered and phase.saturated:
        blockers.append("server saturated (" + "; ".join(phase.saturation_reasons or ["queue grew"]) + ")")
    value = _measured(phase, bound.metric)
    if blockers:
        row = _check(bound, value, phase)
        if row.status != SKIP:
            row.status, row.note = FAIL, "not sustained: " + "; ".join(blockers)
        return row
    untied = "" if quality else " (no latency SLO in this set to tie it to)"
    if bound.metric == "request_throughput" and offered:
        done = f"completed {value:.2f} req/s" if value is not None else "completed rate not measured"
        return _check(bound, offered, phase, f"offered {offered:g} req/s sustained ({done}), "
                                             f"latency SLOs met{untied}")
    return _check(bound, value, phase, (f"sustained, latency SLOs met{untied}" if quality else untied.strip()))


# ---------------------------------------------------------------- loading
def default_slos_dir() -> Path:
    """``$PERFGATE_SLOS_DIR``, else ``slos/`` in the current directory or the repo root."""
    return data_dir("slos")


def _number(metric: str, value: float | str, path: Path, pattern: str, side: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    unit = METRICS[metric].unit
    where = f"{path}:{find_line(path, metric) or '?'}"
    if unit == "GiB":
        try:
            return parse_memory(str(value))
        except ValueError as exc:
            raise ConfigError(f"[slo.\"{pattern}\"] {metric}.{side}: {exc}", source=where) from None
    raise ConfigError(f"[slo.\"{pattern}\"] {metric}.{side} = {value!r} is not a number (unit: {unit})",
                      source=where, fix=f"write a number in {unit}")


def _resolve_file(path: Path) -> list[tuple[Path, SloFile]]:
    """The chain of files, root first, each validated (every metric checked against the catalog)."""
    chain: list[tuple[Path, SloFile]] = []
    seen: set[Path] = set()
    current: Path | None = path
    while current is not None:
        current = current.resolve()
        if current in seen:
            raise ConfigError("SLO file inheritance loops: " + " -> ".join(p.stem for p, _ in chain),
                              source=str(current), fix="remove one of the `extends` lines")
        seen.add(current)
        data: SloFile = validate(SloFile, read_toml(current, "SLO"), current, "SLO file")
        for pattern, table in data.slo.items():
            if pattern.count("/") != 1:
                raise ConfigError(f'table [slo."{pattern}"] must be named "<profile>/<scenario>" ("*" for any)',
                                  source=f"{current}:{find_line(current, pattern) or '?'}",
                                  fix='e.g. [slo."*/chat"] or [slo."optimized/*"]')
            for metric, bound in table.items():
                if metric not in METRICS:
                    close = difflib.get_close_matches(metric, METRICS, n=3)
                    hint = f"did you mean {', '.join(close)}? " if close else ""
                    raise ConfigError(f'[slo."{pattern}"] names unknown metric {metric!r}',
                                      source=f"{current}:{find_line(current, metric) or '?'}",
                                      fix=f"{hint}list the metric keys with `perfgate metrics`")
                if bound.min is None and bound.max is None:
                    raise ConfigError(f'[slo."{pattern}"] {metric} has neither min nor max',
                                      source=f"{current}:{find_line(current, metric) or '?'}",
                                      fix=f"write e.g. {metric}.max = 100")
                for side in ("min", "max"):
                    if getattr(bound, side) is not None:
                        _number(metric, getattr(bound, side), current, pattern, side)
        chain.append((current, data))
        current = current.parent / f"{data.extends}.toml" if data.extends else None
        if current is not None and not current.is_file():
            raise ConfigError(f"extends = {data.extends!r}: no such SLO file {current}",
                              source=str(chain[-1][0]), fix="name a file in the same directory, without .toml")
    return list(reversed(chain))


def _specificity(pattern: str, profile: str, scenario: str) -> int | None:
    p, s = pattern.split("/")
    if p not in ("*", profile) or s not in ("*", scenario):
        return None
    return (p != "*") + 2 * (s != "*")


def load_slos(gpu_class: str, profile: str, scenario: str, slos_dir: Path | None = None) -> SloSet | None:
    """The SLO set for this key, or None when ``slos/<gpu_class>.toml`` is absent or sets nothing for it."""
    directory = Path(slos_dir) if slos_dir is not None else default_slos_dir()
    path = directory / f"{gpu_class}.toml"
    if not path.is_file():
        return None
    chain = _resolve_file(path)
    merged: dict[str, dict] = {}
    provisional = False
    for file_path, data in chain:
        tables = [(spec, pat, t) for pat, t in data.slo.items()
                  if (spec := _specificity(pat, profile, scenario)) is not None]
        for _, pattern, table in sorted(tables, key=lambda x: x[0]):
            provisional = provisional or data.provisional
            for metric, bound in table.items():
                entry = merged.setdefault(metric, {"raw": {}, "min": None, "max": None, "note": ""})
                for side in ("min", "max"):
                    raw = getattr(bound, side)
                    if raw is not None:
                        entry[side] = _number(metric, raw, file_path, pattern, side)
                        entry["raw"][side] = raw
                entry["note"] = bound.note or entry["note"]
                entry["source"] = f"{file_path.name} [{pattern}]"
    if not merged:
        return None
    bounds = {m: ResolvedBound(m, e["min"], e["max"], e["note"], _written(m, e), e["source"])
              for m, e in merged.items()}
    return SloSet(gpu_class, profile, scenario, bounds, [str(p) for p, _ in chain], provisional)


def _written(metric: str, entry: dict) -> str:
    from perfgate.report.markdown import format_value

    unit = METRICS[metric].unit
    parts = []
    for side, op in (("min", ">="), ("max", "<=")):
        if entry[side] is None:
            continue
        raw = entry["raw"][side]
        text = f"{op} {format_value(entry[side], unit)}"
        if isinstance(raw, str):
            text += f" ({raw})"
        parts.append(text)
    return ", ".join(parts)
