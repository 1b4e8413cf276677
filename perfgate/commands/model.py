"""``perfgate model synth NAME DIR`` / ``perfgate model list``: synthetic model directories."""

from __future__ import annotations

import argparse
from pathlib import Path

from perfgate.models import SYNTHETIC_MODELS, write_model
from perfgate.models.synth import _synthetic


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="write a synthetic model directory (config + tokenizer) for --load-format dummy")
    msub = p.add_subparsers(dest="model_command", metavar="ACTION")
    msub.required = True
    synth = msub.add_parser("synth", help="write NAME's config.json, tokenizer and chat template into DIR")
    synth.add_argument("name", help=f"one of: {', '.join(sorted(SYNTHETIC_MODELS))}")
    synth.add_argument("directory", type=Path)
    synth.set_defaults(func=run_synth)
    lst = msub.add_parser("list", help="list the synthetic models")
    lst.set_defaults(func=run_list)


def run_synth(args: argparse.Namespace) -> int:
    model = _synthetic(args.name)  # ConfigError listing the valid names
    path = write_model(model.name, args.directory)
    cfg = model.config
    print(f"wrote synthetic:{model.name} to {path}\n  {model.description}\n"
          f"  layers {cfg['num_hidden_layers']}, hidden {cfg['hidden_size']}, heads {cfg['num_attention_heads']}"
          f" ({cfg['num_key_value_heads']} KV), vocab {cfg['vocab_size']:,}\n"
          f"serve it with: python -m vllm.entrypoints.openai.api_server --model {path} --load-format dummy")
    return 0


def run_list(args: argparse.Namespace) -> int:
    for name, model in sorted(SYNTHETIC_MODELS.items()):
        print(f"synthetic:{name:<26} {model.description}")
    return 0
