"""``perfgate``: the command line. Each subcommand lives in ``perfgate/commands/<name>.py``.

Every command turns a ``PerfgateError`` into its message and exit code 2 (1 means "the check ran and
failed", as in lint and doctor refusals), never a traceback. Commands that return a verdict (``compare``,
``ab``, ``ab run``) exit 0 pass, 1 regressed, 3 inconclusive, 2 bad input (``perfgate.verdict.exit_codes``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from perfgate._errors import PerfgateError
from perfgate.verdict.exit_codes import EPILOG, EXIT_USAGE

# name -> module under perfgate.commands; each module has `register(subparsers)` which adds its parser
# and sets `func` (args -> int exit code).
COMMANDS = ("profiles", "lint", "doctor", "slos", "model", "serve", "bench", "baselines", "compare", "ab",
            "metrics", "junit_check")  # junit_check registers `perfgate junit-check`


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="perfgate", description="Performance regression gate for vLLM serving.",
                                     epilog=f"{EPILOG} (the verdict commands: compare, ab, ab run).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"perfgate.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"perfgate.commands.{name}":
                continue  # not built yet
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    # `perfgate lint -- vllm serve MODEL --flag ...`: everything after `--` is the raw command line.
    raw: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, raw = argv[:cut], argv[cut + 1:]
    args = parser.parse_args(argv)
    args.raw_command = raw
    try:
        return int(args.func(args) or 0)
    except PerfgateError as exc:
        print(f"perfgate {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
