"""SLO files: reviewed TOML in ``slos/<gpu_class>.toml``, keyed by GPU class x profile x scenario, read
into an ``SloSet`` (``perfgate.verdict.slo`` judges it).

A file holds tables named ``"<profile>/<scenario>"`` with ``*`` for any::

    method_version = 2                  # the measurement method its bounds were derived with
    extends = "common"                  # another file in slos/, read first
    [slo."*/*"]                         # every profile, every scenario on this GPU class
    vram_used_gib_peak = { max = "20 GB" }
    [slo."*/chat"]                      # every profile, the chat scenario
    p99_e2el_ms.max = 1200
    request_throughput = { min = 6, tolerance = 0.10 }
    [slo."optimized/chat"]              # one profile, one scenario

Each entry is a catalog metric with ``min`` and/or ``max`` (a memory size such as ``"20 GB"`` is exact:
20e9 bytes = 18.63 GiB), an optional ``note`` and, on a throughput bound, an optional ``tolerance``.
Precedence: a file overrides the file it extends; within a file ``*/*`` < ``profile/*`` < ``*/scenario`` <
``profile/scenario``; fields merge (a more specific ``max`` keeps an inherited ``min``). A metric that is not
in the catalog is a ConfigError when the file is loaded.

Method version: every file in the ``extends`` chain must say ``method_version = N`` with N the current
``perfgate.core.method.METHOD_VERSION``. A file without it, or from an older method (bounds derived from repeats
served from a warm prefix cache), is refused with the way to re-derive it: its numbers mean something else.

Provisional: ``provisional = true`` marks bounds derived by `perfgate slos derive` (or by hand) that no person
has reviewed yet; every verdict judged against them says "PROVISIONAL" until a reviewer removes the line.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from perfgate._errors import ConfigError
from perfgate._toml import data_dir, find_line, read_toml, validate
from perfgate.core.catalog import METRICS
from perfgate.core.fmt import format_value
from perfgate.core.hardware import parse_memory
from perfgate.core.method import METHOD_VERSION, RERECORD_SLOS
from perfgate.verdict.slo import ResolvedBound, SloSet, is_rate_bound


class Bound(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: float | str | None = None
    max: float | str | None = None
    # Open-loop throughput only: the measured rate may fall this fraction under ``min`` (default 0.10).
    tolerance: float | None = Field(default=None, ge=0.0, lt=1.0)
    note: str = ""


class SloFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    description: str = ""
    # perfgate.core.method.METHOD_VERSION the bounds were derived with; missing or older is refused at load.
    method_version: int | None = None
    extends: str | None = None
    # True for bounds that are placeholders until measured on the hardware; reports say so.
    provisional: bool = False
    slo: dict[str, dict[str, Bound]] = Field(default_factory=dict)


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


def _check_bound(path: Path, pattern: str, metric: str, bound: Bound) -> None:
    where = f"{path}:{find_line(path, metric) or '?'}"
    if metric not in METRICS:
        close = difflib.get_close_matches(metric, METRICS, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f'[slo."{pattern}"] names unknown metric {metric!r}', source=where,
                          fix=f"{hint}list the metric keys with `perfgate metrics`")
    if bound.min is None and bound.max is None:
        raise ConfigError(f'[slo."{pattern}"] {metric} has neither min nor max', source=where,
                          fix=f"write e.g. {metric}.max = 100")
    if bound.tolerance is not None and (not is_rate_bound(metric) or bound.min is None):
        raise ConfigError(f'[slo."{pattern}"] {metric}.tolerance: a tolerance applies only to the min of a '
                          f"throughput bound judged in an open loop", source=where,
                          fix="remove `tolerance`, or put it on a request_throughput/output_throughput/"
                              "total_token_throughput/request_goodput bound with a min")
    for side in ("min", "max"):
        if getattr(bound, side) is not None:
            _number(metric, getattr(bound, side), path, pattern, side)


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
                _check_bound(current, pattern, metric, bound)
        chain.append((current, data))
        current = current.parent / f"{data.extends}.toml" if data.extends else None
        if current is not None and not current.is_file():
            raise ConfigError(f"extends = {data.extends!r}: no such SLO file {current}",
                              source=str(chain[-1][0]), fix="name a file in the same directory, without .toml")
    return list(reversed(chain))


def _check_method(path: Path, data: SloFile) -> None:
    """Refuse a file whose bounds were derived with another measurement method (perfgate/core/method.py)."""
    version = data.method_version
    if version == METHOD_VERSION:
        return
    where = f"{path}:{find_line(path, 'method_version')}" if version is not None else str(path)
    if version is not None and version > METHOD_VERSION:
        raise ConfigError(f"SLO file {path.name} is for measurement method {version}; this perfgate measures "
                          f"with method {METHOD_VERSION}", source=where, fix="upgrade perfgate")
    said = f"says method_version = {version}" if version is not None else "has no method_version (method 1)"
    raise ConfigError(f"SLO file {path.name} {said}: its bounds were derived with an older measurement method "
                      f"than this perfgate's method {METHOD_VERSION}, so they mean something else",
                      source=where, fix=RERECORD_SLOS.format(version=METHOD_VERSION))


def _specificity(pattern: str, profile: str, scenario: str) -> int | None:
    p, s = pattern.split("/")
    if p not in ("*", profile) or s not in ("*", scenario):
        return None
    return (p != "*") + 2 * (s != "*")


def load_slos(gpu_class: str, profile: str, scenario: str, slos_dir: Path | None = None, *,
              check_method: bool = True) -> SloSet | None:
    """The SLO set for this key, or None when ``slos/<gpu_class>.toml`` is absent or sets nothing for it.

    ConfigError for a file of the chain that is invalid or (unless ``check_method`` is False, as for the
    physical-floor check, which does not depend on how bounds were measured) was derived with another
    measurement method.
    """
    directory = Path(slos_dir) if slos_dir is not None else default_slos_dir()
    path = directory / f"{gpu_class}.toml"
    if not path.is_file():
        return None
    chain = _resolve_file(path)
    for file_path, data in chain if check_method else ():
        _check_method(file_path, data)
    merged: dict[str, dict] = {}
    provisional = False
    for file_path, data in chain:
        tables = [(spec, pat, t) for pat, t in data.slo.items()
                  if (spec := _specificity(pat, profile, scenario)) is not None]
        for _, pattern, table in sorted(tables, key=lambda x: x[0]):
            provisional = provisional or data.provisional
            for metric, bound in table.items():
                entry = merged.setdefault(metric, {"raw": {}, "min": None, "max": None, "note": "",
                                                   "tolerance": None})
                for side in ("min", "max"):
                    raw = getattr(bound, side)
                    if raw is not None:
                        entry[side] = _number(metric, raw, file_path, pattern, side)
                        entry["raw"][side] = raw
                if bound.tolerance is not None:
                    entry["tolerance"] = bound.tolerance
                entry["note"] = bound.note or entry["note"]
                entry["source"] = f"{file_path.name} [{pattern}]"
    if not merged:
        return None
    bounds = {m: ResolvedBound(m, e["min"], e["max"], e["note"], _written(m, e), e["source"], e["tolerance"])
              for m, e in merged.items()}
    return SloSet(gpu_class, profile, scenario, bounds, [str(p) for p, _ in chain], provisional)


def _written(metric: str, entry: dict) -> str:
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
