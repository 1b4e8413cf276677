"""``perfgate lint``: check launch profiles, or a pasted vLLM command line, against the installed vLLM."""

from __future__ import annotations

import argparse
from pathlib import Path

from perfgate._errors import PerfgateError
from perfgate.serving.lint import lint_argv, lint_profile
from perfgate.serving.profile import available_profiles, default_profiles_dir, load_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "lint", help="check profile flags against the installed vLLM's own argument parser",
        description="Check every vLLM flag of a profile (or of a command line given after `--`, e.g. "
                    "`perfgate lint -- vllm serve MODEL --flag ...`) against the installed vLLM's parser. "
                    "Exit 0: all flags exist and take their values; 1: problems found; 2: bad input.")
    p.add_argument("targets", nargs="*", metavar="NAME|FILE", help="profiles to check (default: all)")
    p.add_argument("--gpu-class", default=None, help="apply this GPU class's [gpu.<class>] overrides first")
    p.add_argument("--python", default=None, help="the interpreter whose vLLM to check against (default: this one)")
    p.add_argument("--profiles-dir", type=Path, default=None, help="where profiles live (default: profiles/)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    raw = getattr(args, "raw_command", [])
    if raw and args.targets:
        raise PerfgateError("give profiles or a command line after `--`, not both",
                            fix="perfgate lint NAME, or perfgate lint -- vllm serve MODEL --flag ...")
    if raw:
        reports = [lint_argv(raw, python=args.python)]
    else:
        targets = args.targets or available_profiles(args.profiles_dir or default_profiles_dir())
        if not targets:
            raise PerfgateError("no profiles to check", fix="name a profile or a .toml file")
        reports = [lint_profile(load_profile(t, gpu_class=args.gpu_class, profiles_dir=args.profiles_dir),
                                python=args.python) for t in targets]
    for report in reports:
        print(report.render())
    return 0 if all(r.ok for r in reports) else 1
