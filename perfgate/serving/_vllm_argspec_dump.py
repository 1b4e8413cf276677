"""Dump the installed vLLM's ``serve`` argument parser as JSON. Run as a script, never imported by perfgate.

``python _vllm_argspec_dump.py OUT.json`` imports vLLM (slow: torch and every config class), builds the
parser ``vllm serve`` and ``python -m vllm.entrypoints.openai.api_server`` use, and writes one entry per
action. It is self-contained (standard library + vLLM) so that it can run under another interpreter, e.g. a
GPU host's Python where perfgate itself is not installed. Exit 3: vLLM cannot be imported.

Value types are not portable (vLLM wraps them in closures such as ``optional_type(int)``), so each type is
*probed* here with a fixed set of strings; perfgate.serving.lint classifies values from what was accepted.
"""

import argparse
import importlib
import json
import os
import sys
import warnings

# Strings each value type is tried with; perfgate.serving.lint reads which were accepted.
PROBES = ["0", "1", "-1", "1.5", "abc", "ABC", "true", "false", "True", "False", "None", "auto", "1k",
          "{}", "[]", ""]

PARSER_MODULES = ("vllm.entrypoints.launchers.cli_args",  # vLLM >= 0.3x (0.32 here)
                  "vllm.entrypoints.openai.cli_args")  # vLLM 0.25.x (GPU hosts) and earlier
FLEXIBLE_PARSER_MODULES = ("vllm.utils.argparse_utils", "vllm.utils")


def _import_first(modules, attr):
    errors = []
    for name in modules:
        try:
            return name, getattr(importlib.import_module(name), attr)
        except (ImportError, AttributeError) as exc:
            errors.append(f"{name}.{attr}: {type(exc).__name__}: {exc}")
    raise ImportError("; ".join(errors))


def _probe(type_fn):
    accepted = []
    for text in PROBES:
        try:
            type_fn(text)
        except Exception:  # noqa: BLE001, S112 -- any failure means argparse would reject the value
            continue
        accepted.append(text)
    return accepted


def _classify(type_fn, accepted):
    if type_fn is None or type_fn is str:
        return "str"
    if "abc" in accepted and "ABC" in accepted:
        return "str"
    if "{}" in accepted:
        return "json"
    if "1" in accepted and "1.5" in accepted:
        return "float"
    if "1" in accepted:
        return "int"
    if "true" in accepted and "false" in accepted:
        return "bool"
    return "other"


def _lowercases(type_fn):
    try:
        return type_fn("ABC") == "abc"
    except Exception:  # noqa: BLE001 -- a type that rejects "ABC" does not lowercase
        return False


def _first_sentence(text):
    text = " ".join((text or "").split())
    if "%" in text:
        text = text.replace("%(default)s", "").replace("%%", "%")
    cut = text.find(". ")
    text = text[: cut + 1] if cut > 0 else text
    return text[:160]


def main(out_path):
    warnings.simplefilter("ignore")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import vllm  # noqa: F401
        version = getattr(importlib.import_module("vllm.version"), "__version__", "unknown")
        source, make_arg_parser = _import_first(PARSER_MODULES, "make_arg_parser")
        parser_source, flexible = _import_first(FLEXIBLE_PARSER_MODULES, "FlexibleArgumentParser")
    except Exception as exc:  # noqa: BLE001 -- vLLM missing or broken (e.g. CUDA torchvision next to CPU torch)
        missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "vllm"
        sys.stderr.write(json.dumps({"missing": missing, "error": f"{type(exc).__name__}: {exc}"}) + "\n")
        return 3
    parser = make_arg_parser(flexible(prog="vllm serve"))
    deprecated = getattr(parser, "_deprecated", set())
    actions, positionals = [], []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if not action.option_strings:
            positionals.append({"dest": action.dest, "nargs": action.nargs})
            continue
        accepted = _probe(action.type) if action.type is not None else list(PROBES)
        try:
            choices = None if action.choices is None else [str(c) for c in action.choices]
        except TypeError:
            choices = None
        nargs = action.nargs
        if nargs is None and isinstance(action, (argparse._StoreConstAction, argparse._CountAction)):
            nargs = 0
        actions.append({
            "options": list(action.option_strings),
            "dest": action.dest,
            "action": type(action).__name__,
            "nargs": nargs,
            "choices": choices,
            "type": _classify(action.type, accepted),
            "accepts": accepted,
            "lowercases": bool(action.type) and _lowercases(action.type),
            "deprecated": action in deprecated or bool(getattr(action, "deprecated", False)),
            "help": _first_sentence(action.help if action.help != argparse.SUPPRESS else ""),
        })
    try:
        env_names = sorted(importlib.import_module("vllm.envs").environment_variables)
    except Exception:  # noqa: BLE001 -- optional: only used for warnings about [env]
        env_names = []
    spec = {"format": 1, "vllm_version": version, "parser": f"{source}.make_arg_parser",
            "flexible_parser": parser_source, "python": sys.executable, "probes": PROBES,
            "positionals": positionals, "actions": actions, "env_vars": env_names}
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump(spec, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[-1]))
