"""``perfgate doctor``: will the profile's KV cache hold one max-model-len request on this GPU, and can its
SLO sets be met at all on this GPU class (``perfgate.verdict.physics``)?"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from perfgate._errors import ConfigError, DoctorError
from perfgate.core.hardware import gpu_class as lookup_gpu_class
from perfgate.core.hardware import known_class_keys, parse_memory
from perfgate.serving.doctor import diagnose, model_dir_for
from perfgate.serving.profile import load_profile
from perfgate.verdict.physics import check_all
from perfgate.verdict.slo_files import default_slos_dir


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor", help="KV-cache arithmetic: refuse a profile that cannot serve one full-length request",
        description="Compute KV bytes per token, the KV tokens the GPU holds and the concurrency at "
                    "max-model-len, from the model's config.json. GPU memory: NVML, or --gpu-memory / "
                    "--gpu-class. On a GPU class, also check the profile's SLO bounds against their physical "
                    "floors (as `perfgate slos check`). Exit 0: fits; 1: refused; 2: bad input.")
    p.add_argument("profile", metavar="NAME|FILE")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--gpu-memory", default=None, metavar="SIZE", help="GPU memory by hand, e.g. 24GiB or 80GB")
    where.add_argument("--gpu-class", default=None, choices=known_class_keys(),
                       help="use this class's memory and its [gpu.<class>] overrides")
    p.add_argument("--model-dir", type=Path, default=None, help="the model directory (default: the profile's model)")
    p.add_argument("--profiles-dir", type=Path, default=None, help="where profiles live (default: profiles/)")
    p.add_argument("--slos-dir", type=Path, default=None, help="where SLO sets live (default: slos/)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    memory = None
    if args.gpu_memory is not None:
        try:
            memory = parse_memory(args.gpu_memory)
        except ValueError as exc:
            raise ConfigError(str(exc), source="--gpu-memory") from None
    gpu_class = None if args.gpu_class == "cpu" else args.gpu_class
    profile = load_profile(args.profile, gpu_class=gpu_class, profiles_dir=args.profiles_dir)
    try:
        report = diagnose(profile, args.model_dir or model_dir_for(profile), gpu_memory_gib=memory,
                          gpu_class=gpu_class)
    except DoctorError as exc:  # refused before the arithmetic could finish (e.g. CPU KV space unset)
        print(f"perfgate doctor: refused: {exc}", file=sys.stderr)
        return 1
    print(report.render())
    kv_ok = report.ok
    if not kv_ok:
        print(f"  fix: lower max-model-len to at most {report.kv_tokens:,} (e.g. in a [gpu.<class>] table), "
              "use --kv-cache-dtype fp8, or run on a GPU with more memory")
    physics_ok = True
    if profile.platform != "cpu":
        found = gpu_class or report.gpu_class
        if found is None or lookup_gpu_class(found) is None:
            print("physics: SLO bounds not checked against physical floors: no known GPU class "
                  "(give --gpu-class)")
        else:
            run_physics = check_all(slos_dir=args.slos_dir or default_slos_dir(), gpu_classes=[found],
                                    profiles=[args.profile], profiles_dir=args.profiles_dir,
                                    model_dir=args.model_dir)
            for physics in run_physics.refused:
                print(physics.render())
            print(run_physics.render().splitlines()[-1])
            physics_ok = not run_physics.refused
    return 0 if kv_ok and physics_ok else 1
