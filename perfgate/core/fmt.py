"""Formatting figures for people: values with units, signed percents, plain-text tables. A leaf module."""

from __future__ import annotations

import math
from collections.abc import Sequence


def format_value(value: float | None, unit: str = "") -> str:
    """A figure as a person reads it: ``1,180 ms``, ``18.63 GiB``, ``57.0%``, ``6.30 req/s``; None -> ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    v = float(value)
    if unit == "ms":
        text = f"{v:,.0f}" if abs(v) >= 100 else (f"{v:.1f}" if abs(v) >= 1 else f"{v:.3f}")
        return f"{text} ms"
    if unit == "GiB":
        return f"{v:.2f} GiB"
    if unit == "%":
        return f"{v:.1f}%"
    if unit in ("req/s", "tok/s"):
        return f"{v:,.2f} {unit}" if abs(v) < 1000 else f"{v:,.0f} {unit}"
    if unit == "fraction":
        return f"{v:.4f}"
    if v.is_integer() and abs(v) < 1e15:
        return f"{int(v):,}" + (f" {unit}" if unit else "")
    return f"{v:.4g}" + (f" {unit}" if unit else "")


def pct(x: float | None, digits: int = 1) -> str:
    """A relative change as a signed percent: ``+5.0%``; ``-`` when unknown, ``from 0`` when infinite."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "from 0"
    return f"{x * 100:+.{digits}f}%"


def text_table(rows: Sequence[Sequence[object]], indent: str = "") -> list[str]:
    """Left-aligned columns, the first row being the header; one string per line, trailing blanks cut."""
    if not rows:
        return []
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return [indent + "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
