"""``perfgate profiles``: every launch profile, what it is for, and the exact command line it produces."""

from __future__ import annotations

import argparse
from pathlib import Path

from perfgate._errors import PerfgateError
from perfgate.serving.profile import available_profiles, default_profiles_dir, load_profile


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profiles", help="list launch profiles and the vLLM command line each produces")
    p.add_argument("names", nargs="*", metavar="NAME", help="only these profiles (default: all)")
    p.add_argument("--profiles-dir", type=Path, default=None, help="where profiles live (default: profiles/)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    directory = args.profiles_dir or default_profiles_dir()
    names = args.names or available_profiles(directory)
    if not names:
        raise PerfgateError(f"no profiles in {directory}", fix="add profiles/<name>.toml, or pass --profiles-dir")
    status = 0
    for index, name in enumerate(names):
        if index:
            print()
        try:
            profile = load_profile(name, profiles_dir=args.profiles_dir)
        except PerfgateError as exc:  # one broken file must not hide the others
            print(f"{name}: error: {exc}")
            status = 2
            continue
        parent = f" (extends {Path(profile.files[1]).stem})" if len(profile.files) > 1 else ""
        print(f"{profile.name}{parent}: {profile.description or '(no description)'}")
        print(f"  platform {profile.platform}, model {profile.model}")
        if profile.env:
            print("  env: " + " ".join(f"{k}={v}" for k, v in profile.env.items()))
        print(f"  {profile.display_command()}")
        for gpu_class in profile.gpu_overrides:
            variant = load_profile(name, gpu_class=gpu_class, profiles_dir=args.profiles_dir)
            print(f"  on {gpu_class}: {variant.display_command()}")
    return status
