"""``perfgate metrics``: list every metric key SLOs and baselines may name."""

from __future__ import annotations

import argparse

from perfgate.core.catalog import METRICS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("metrics", help="list the metric keys SLO files and baselines may use")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    width = max(map(len, METRICS))
    for spec in METRICS.values():
        print(f"{spec.key:<{width}}  {spec.unit:<9} {spec.better:<6} {spec.source:<10} {spec.doc}")
    return 0
