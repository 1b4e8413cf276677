"""PNG plots (matplotlib, Agg): latency CDFs against the baseline's, sweeps, and the GPU/scheduler timeline.

Each function returns the path it wrote, or None when the phase lacks the data (no records file, a single
offered rate, no timeline) — a missing plot is a missing input, never an empty picture.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from perfgate.core.phase import PhaseResult
from perfgate.verdict.baseline import load_request_latencies

if TYPE_CHECKING:
    from perfgate.verdict.baseline import Baseline

_SERIES = (("ttft_ms", "TTFT", "p99_ttft_ms"), ("e2el_ms", "end-to-end latency", "p99_e2el_ms"))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # no display on CI runners
    import matplotlib.pyplot as plt

    return plt


def plot_latency_cdf(path: Path, phases: Sequence[PhaseResult], results_dir: Path | None,
                     baseline: Baseline | None = None, slo_max: dict[str, float] | None = None) -> Path | None:
    """TTFT and E2E CDFs of this run's requests (all repeats pooled) over the baseline's, with P99 bounds."""
    pooled: dict[str, list[float]] = {}
    for p in phases:
        for k, v in load_request_latencies(p, results_dir).items():
            pooled.setdefault(k, []).extend(v)
    if not pooled:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, label, p99_key) in zip(axes, _SERIES):
        values = sorted(pooled.get(key, []))
        if values:
            n = len(values)
            ax.step(values, [(i + 1) / n for i in range(n)], where="post", color="tab:blue", lw=1.8,
                    label=f"this run (n={n}, P99 {_pctl(values, 0.99):,.0f} ms)")
        base_q = baseline.latency_quantiles.get(key) if baseline else None
        if base_q:
            ys = [i / (len(base_q) - 1) for i in range(len(base_q))]
            ax.plot(base_q, ys, color="tab:gray", lw=1.6, ls="--",
                    label=f"baseline ({baseline.created_at[:10] or 'stored'}, P99 {_interp(base_q, 0.99):,.0f} ms)")
        right = max(values[-1] if values else 0.0, base_q[-1] if base_q else 0.0) * 1.1 or 1.0
        bound = (slo_max or {}).get(p99_key)
        if bound is not None and bound <= right * 1.5:  # a bound far off the data would squash the curves
            right = max(right, bound * 1.05)
            ax.axvline(bound, color="tab:red", lw=1.2, ls=":", label=f"SLO: P99 <= {bound:,.0f} ms")
            ax.axhline(0.99, color="tab:red", lw=0.6, ls=":")
        elif bound is not None:
            ax.plot([], [], color="tab:red", ls=":", label=f"SLO: P99 <= {bound:,.0f} ms (off the right edge)")
        ax.set_xlabel(f"{label} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.01)
        ax.set_xlim(0, right)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        ax.set_title(f"{label} CDF")
    fig.suptitle(f"{phases[0].key}: request latency, {len(phases)} repeat(s)", fontsize=11)
    return _save(fig, path)


def plot_sweep(path: Path, phases: Sequence[PhaseResult], slo_max: dict[str, float] | None = None, *,
               brackets: dict[str, tuple[float | None, float | None]] | None = None,
               failing: dict[str, set[float]] | None = None, invalid: dict[str, set[float]] | None = None,
               title: str | None = None) -> Path | None:
    """Completed rate, and P99 and median latency, against offered rate, one line per profile (mean, min-max
    bars), with the SLO bounds as dotted lines; latency on a log scale when it spans more than 30x.

    For a capacity sweep: ``brackets`` (per profile, [highest passing, lowest failing)) is shaded green with
    its ends marked, ``failing`` (per profile, the offered rates whose point failed) crossed out in red, and
    ``invalid`` (rates whose window was invalid: neither end) ringed in grey.
    """
    by_profile: dict[str, dict[float, list[PhaseResult]]] = {}
    for p in phases:
        rate = p.metrics.get("offered_rate")
        if isinstance(rate, (int, float)) and rate > 0:
            by_profile.setdefault(p.profile, {}).setdefault(float(rate), []).append(p)
    if not any(len(rates) >= 2 for rates in by_profile.values()):
        return None
    plt = _pyplot()
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7.5), sharex=True)
    top_rate = max(r for rates in by_profile.values() for r in rates)
    top.plot([0, top_rate], [0, top_rate], color="tab:gray", ls="--", lw=1, label="completed = offered")
    series = ((top, "request_throughput", "o-", ""), (bottom, "p99_e2el_ms", "o-", "E2E P99"),
              (bottom, "p99_ttft_ms", "s--", "TTFT P99"), (bottom, "median_e2el_ms", "o:", "E2E median"),
              (bottom, "median_ttft_ms", "s:", "TTFT median"), (bottom, "p99_tpot_ms", "^-.", "TPOT P99"))
    # One profile: a colour per latency (P99 and median alike), so each SLO line matches its curve.
    colors = ({"p99_e2el_ms": "tab:blue", "median_e2el_ms": "tab:blue", "p99_ttft_ms": "tab:orange",
               "median_ttft_ms": "tab:orange", "p99_tpot_ms": "tab:green"} if len(by_profile) == 1 else {})
    for profile, rates in sorted(by_profile.items()):
        xs = sorted(rates)
        for ax, key, style, name in series:
            stats = [_spread([q.metrics.get(key) for q in rates[x]]) for x in xs]
            pts = [(x, s) for x, s in zip(xs, stats) if s is not None]
            if not pts:
                continue
            ax.errorbar([x for x, _ in pts], [s[0] for _, s in pts],
                        yerr=[[s[0] - s[1] for _, s in pts], [s[2] - s[0] for _, s in pts]],
                        fmt=style, capsize=3, label=f"{profile} {name}".strip(), alpha=0.6 if ":" in style else 1,
                        color=colors.get(key))
        for marked, look, text in ((failing, {"marker": "x", "color": "tab:red", "ms": 11, "mew": 2},
                                    "point failed its SLOs or saturated"),
                                   (invalid, {"marker": "o", "mfc": "none", "color": "tab:gray", "ms": 14, "mew": 2},
                                    "window invalid (client or room): neither end")):
            rates_marked = sorted((marked or {}).get(profile, set()) & set(xs))
            ys = [_spread([q.metrics.get("request_throughput") for q in rates[x]]) for x in rates_marked]
            if rates_marked:
                top.plot([x for x, y in zip(rates_marked, ys) if y], [y[0] for y in ys if y], ls="none",
                         label=f"{profile}: {text}", **look)
    for key, name in (("p99_e2el_ms", "E2E P99"), ("p99_ttft_ms", "TTFT P99"), ("median_e2el_ms", "E2E median"),
                      ("median_ttft_ms", "TTFT median"), ("p99_tpot_ms", "TPOT P99")):
        bound = (slo_max or {}).get(key)
        if bound is not None:
            bottom.axhline(bound, color=colors.get(key, "tab:red"), ls=(0, (1, 1)), lw=1.6,
                           label=f"SLO {name} <= {bound:,.0f} ms")
            bottom.annotate(f"SLO {name}", (0, bound), xycoords=("axes fraction", "data"), xytext=(3, 2),
                            textcoords="offset points", fontsize=7, color=colors.get(key, "tab:red"))
    for profile, (lower, upper) in sorted((brackets or {}).items()):
        right = upper if upper is not None else top_rate
        text = (f"{profile}: capacity in [{lower or 0:.4g}, {upper:.4g}) req/s" if upper is not None
                else f"{profile}: capacity >= {lower or 0:.4g} req/s (nothing failed)")
        for ax in (top, bottom):
            ax.axvspan(lower or 0.0, right, color="tab:green", alpha=0.12, lw=0)
            if lower is not None:
                ax.axvline(lower, color="tab:green", lw=1.2)
            if upper is not None:
                ax.axvline(upper, color="tab:red", lw=1.2, ls="--")
        top.plot([], [], color="tab:green", lw=6, alpha=0.3, label=text)
    sustained = [(p.profile, p.metrics["max_sustained_rate"]) for p in phases
                 if isinstance(p.metrics.get("max_sustained_rate"), (int, float))]
    for profile, rate in dict(sustained).items():
        for ax in (top, bottom):
            ax.axvline(rate, color="tab:green", ls="-.", lw=1)
        top.annotate(f"{profile}: max sustained {rate:g} req/s", (rate, 0), textcoords="offset points",
                     xytext=(4, 8), fontsize=8, color="tab:green")
    values = [v for p in phases for k in colors or ("p99_e2el_ms", "p99_ttft_ms")
              if _num(v := p.metrics.get(k)) and v > 0]
    log = bool(values) and max(values) / min(values) > 30
    if log:  # TTFT and E2E differ by orders of magnitude: both stay readable
        bottom.set_yscale("log")
    top.set_ylabel("completed (req/s)")
    top.set_title(title or f"{phases[0].gpu_class}/{phases[0].scenario}: throughput and latency vs offered load",
                  fontsize=10)
    bottom.set_ylabel("latency (ms)")
    bottom.set_xlabel("offered rate (req/s)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3, which="both" if ax is bottom and log else "major")
        ax.legend(fontsize=7, loc="upper left" if ax is top else "best")
        ax.set_xlim(left=0)
        if not (ax is bottom and log):
            ax.set_ylim(bottom=0)
    return _save(fig, path)


def read_timeline(phase: PhaseResult, results_dir: Path | None) -> dict[str, Any] | None:
    rel = phase.artifacts.get("timeline")
    if not rel:
        return None
    p = Path(rel) if results_dir is None or Path(rel).is_absolute() else Path(results_dir) / rel
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def plot_timeline(path: Path, timeline: dict[str, Any], title: str = "") -> Path | None:
    """Three panels on one clock: requests in flight, GPU util/VRAM, scheduler running/waiting/KV cache.

    Reads ``perfgate.telemetry.timeline``'s layout: ``t0``, ``load`` (request stamps), ``nvml.samples``
    (``t``, ``gpu``, ``util_pct``, ``mem_used_gib``) and ``server.samples`` (``t``, ``running``,
    ``waiting``, ``kv_cache_usage_pct``); a source marked unavailable shows its reason in its panel.
    """
    nvml, server = timeline.get("nvml") or {}, timeline.get("server") or {}
    load = timeline.get("load") or []
    if not (nvml.get("samples") or server.get("samples") or load):
        return None
    t0 = timeline.get("t0") or min([s["t"] for s in nvml.get("samples", []) + server.get("samples", [])] or [0])
    plt = _pyplot()
    fig, (ax_load, ax_gpu, ax_sched) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)

    # Requests in flight from send/end stamps; stamps far from the window are on another clock: say so.
    events = [(e["sent"] - t0, +1) for e in load if _num(e.get("sent"))]
    events += [(e["end"] - t0, -1) for e in load if _num(e.get("end")) and _num(e.get("sent"))]
    if events and all(abs(t) < 7 * 86400 for t, _ in events):
        events.sort()
        xs, ys, level = [], [], 0
        for t, d in events:
            level += d
            xs.append(t)
            ys.append(level)
        ax_load.step(xs, ys, where="post", color="tab:purple", label="requests in flight (client)")
        failed = [e["sent"] - t0 for e in load if e.get("error") and _num(e.get("sent"))]
        if failed:
            ax_load.plot(failed, [0] * len(failed), "x", color="tab:red", label=f"failed ({len(failed)})")
        ax_load.legend(fontsize=8, loc="upper right")
    else:
        _empty(ax_load, "no load events on the timeline clock" if load else "no load events recorded")
    ax_load.set_ylabel("in flight")

    samples = nvml.get("samples") or []
    if samples:
        for gpu in sorted({s.get("gpu", 0) for s in samples}):
            rows = [s for s in samples if s.get("gpu", 0) == gpu]
            ax_gpu.plot([s["t"] - t0 for s in rows], [s.get("util_pct") for s in rows], label=f"GPU{gpu} util %")
        ax_gpu.set_ylim(0, 105)
        twin = ax_gpu.twinx()
        for gpu in sorted({s.get("gpu", 0) for s in samples}):
            rows = [s for s in samples if s.get("gpu", 0) == gpu]
            twin.plot([s["t"] - t0 for s in rows], [s.get("mem_used_gib") for s in rows], ls="--",
                      color="tab:orange" if gpu == samples[0].get("gpu", 0) else None,
                      label=f"GPU{gpu} VRAM used (GiB)")
        twin.set_ylabel("VRAM (GiB)")
        twin.set_ylim(bottom=0)
        _legend(ax_gpu, twin)
    else:
        _empty(ax_gpu, f"NVML unavailable: {nvml.get('reason') or 'not sampled'}")
    ax_gpu.set_ylabel("utilization (%)")

    rows = server.get("samples") or []
    if rows:
        ts = [r["t"] - t0 for r in rows]
        ax_sched.step(ts, [r.get("running") for r in rows], where="post", label="running", color="tab:green")
        ax_sched.step(ts, [r.get("waiting") for r in rows], where="post", label="waiting", color="tab:red")
        twin = ax_sched.twinx()
        twin.plot(ts, [r.get("kv_cache_usage_pct") for r in rows], color="tab:blue", ls="--", label="KV cache %")
        twin.set_ylim(0, 105)
        twin.set_ylabel("KV cache (%)")
        _legend(ax_sched, twin)
    else:
        _empty(ax_sched, f"/metrics unavailable: {server.get('reason') or 'not scraped'}")
    ax_sched.set_ylabel("requests")
    ax_sched.set_xlabel("seconds since the window began")
    for ax in (ax_load, ax_gpu, ax_sched):
        ax.grid(alpha=0.3)
    window = timeline.get("window") or {}
    if _num(window.get("start")) and _num(window.get("end")):
        for ax in (ax_load, ax_gpu, ax_sched):
            ax.axvspan(window["start"] - t0, window["end"] - t0, color="tab:gray", alpha=0.06)
    fig.suptitle(title or "GPU and scheduler timeline", fontsize=11)
    return _save(fig, path)


def _legend(ax, twin) -> None:
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = twin.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=8, loc="upper right")


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="tab:gray")


def _num(x: Any) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def _spread(values: Sequence[Any]) -> tuple[float, float, float] | None:
    v = [float(x) for x in values if _num(x)]
    return (sum(v) / len(v), min(v), max(v)) if v else None


def _pctl(sorted_values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.quantile(sorted_values, q))


def _interp(quantile_values: Sequence[float], q: float) -> float:
    import numpy as np

    return float(np.interp(q, np.linspace(0, 1, len(quantile_values)), quantile_values))


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
