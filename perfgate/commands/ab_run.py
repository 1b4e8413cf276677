"""``perfgate ab run``: an interleaved A/B of two Python environments' vLLM (an upgrade check).

    perfgate ab run --a-python .venv/bin/python --b-python .venv-candidate/bin/python \
        --profile cpu-tiny --scenario cpu-closed --repeats 3 --results results/upgrade-ab

Exit codes (perfgate.verdict.exit_codes): 0 B is not worse (the gate PASSes B against A's interleaved
repeats), 1 B is worse (REGRESSED), 3 inconclusive (undecided, or a side's run was invalid), 2 bad input or a
server that could not start.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from perfgate._errors import ConfigError
from perfgate.run.ab_run import read_side_env, run_env_ab, session_for, write_result


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="start two servers from two Python environments and A/B them, interleaved",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a-python", required=True, metavar="PATH",
                   help="interpreter of environment A, the reference (e.g. .venv/bin/python: the pinned vLLM)")
    p.add_argument("--b-python", required=True, metavar="PATH",
                   help="interpreter of environment B, the candidate (e.g. .venv-candidate/bin/python)")
    p.add_argument("--profile", required=True, help="launch profile both sides serve")
    p.add_argument("--scenario", required=True, help="scenario both sides are measured on")
    p.add_argument("--repeats", type=int, default=3, help="measured repeats per side (default 3, at least 2)")
    p.add_argument("--results", type=Path, required=True, metavar="DIR",
                   help="where phases (DIR/A, DIR/B), server logs, ab-verdict.json and summary.md go")
    p.add_argument("--one-at-a-time", action="store_true",
                   help="only one server up at a time (a GPU that holds one): each repeat restarts its side's server")
    p.add_argument("--gpu-memory", default=None, metavar="SIZE", help="GPU memory for the doctor when NVML cannot tell")
    p.add_argument("--api-key-env", default=None, metavar="VAR", help="environment variable holding vLLM's API key")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            raise ConfigError(f"--api-key-env {args.api_key_env}: that environment variable is not set",
                              fix=f"export {args.api_key_env}=<key>, or drop the option")
    a = read_side_env("A", args.a_python)
    b = read_side_env("B", args.b_python)
    pg = session_for(args.results, api_key=api_key, gpu_memory=args.gpu_memory)

    def log(line: str) -> None:
        print(f"perfgate ab run: {line}", file=sys.stderr, flush=True)

    pg.progress = lambda line, **_: log(line)  # each server's start stages

    log(f"A = vLLM {a.vllm_version} ({a.python}), B = vLLM {b.vllm_version} ({b.python}); {args.repeats} "
        f"repeat(s) a side of {args.profile}/{args.scenario}, interleaved A B A B"
        + (", one server at a time" if args.one_at_a_time else ", both servers up"))
    try:
        result = asyncio.run(run_env_ab(pg, args.profile, args.scenario, a, b, repeats=args.repeats,
                                        one_at_a_time=args.one_at_a_time, log=log))
    finally:
        pg.write_manifest()  # what ran, even when a server failed
    write_result(result, args.results)
    print(pg.redact(result.table()))
    print(f"results: {args.results}")
    return result.exit_code
