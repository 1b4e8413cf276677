"""Profile lint: every flag checked against the installed vLLM's own argument parser, before anything launches.

The parser is read from vLLM itself (``make_arg_parser``), not from a list kept here, so lint follows vLLM
versions. Importing vLLM takes seconds, so a subprocess of the chosen Python dumps the parser's actions as
JSON (``perfgate/serving/_vllm_argspec_dump.py``) once per vLLM version into ``~/.cache/perfgate``; later lints read
the file. Command lines are then walked token by token here, because argparse stops at the first error and,
worse, silently accepts a unique prefix: ``--num-gpu-blocks 16384`` parses as ``--num-gpu-blocks-override``.
"""

from __future__ import annotations

import difflib
import itertools
import json
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfgate._errors import LintError, PerfgateError
from perfgate._toml import find_line
from perfgate.core.hardware import known_class_keys
from perfgate.serving._vllm_argspec import ArgSpec, load_arg_spec
from perfgate.serving.profile import Profile, flags_to_argv

# Flags perfgate passes itself (Profile.command); in [vllm] they would be given twice.
_MANAGED_FLAGS = {
    "model": "set the profile's top-level `model` field",
    "served-model-name": "set the profile's top-level `served-model-name` field",
    "load-format": "set the profile's top-level `load-format` field",
    "host": "set the profile's top-level `host` field",
    "port": "perfgate picks a free port itself",
    "api-key": "perfgate passes --api-key itself, read from the environment, so it never lands in a file",
}

# Why some flags seen in write-ups are gone; shown next to difflib's closest real flag.
_REMOVED_HINTS = {
    "--num-gpu-blocks": "the KV cache size follows --gpu-memory-utilization (or --kv-cache-memory-bytes)",
    "--num-swapped-blocks": "vLLM's V1 engine has no CPU swap space; preempted requests are recomputed",
    "--swap-space": "vLLM's V1 engine has no CPU swap space; preempted requests are recomputed",
    "--batching-strategy": "vLLM always batches continuously; there is nothing to choose",
    "--scheduler-delay-factor": "removed with vLLM's V0 scheduler",
}

# `python -m <module>` launchers that serve vLLM's OpenAI-compatible API (the one perfgate drives).
_SERVING_MODULES = ("vllm.entrypoints.openai.api_server", "vllm.entrypoints.cli.main")
# Entry points write-ups still use that vLLM no longer has, with why.
_REMOVED_MODULES = {
    "vllm.entrypoints.api_server": "vLLM's old demo server (a bare /generate endpoint, never OpenAI-compatible), "
                                   "removed from vLLM",
}
_USE_INSTEAD = "`vllm serve MODEL ...` or `python -m vllm.entrypoints.openai.api_server --model MODEL ...`"

_NUMBER = re.compile(r"^-\d+(\.\d*)?([eE][-+]?\d+)?$|^-\.\d+$")
_INT = re.compile(r"^[-+]?\d+$")
_HUMAN_INT = re.compile(r"^\d+(\.\d+)?[kKmMgGtT]?$")
_EXPECTS = {"int": "an integer", "float": "a number", "json": "JSON", "bool": "true or false", "str": "text",
            "other": "another value"}
_ENV_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass(frozen=True)
class LintProblem:
    flag: str  # as written, e.g. "--num-gpu-blocks"
    message: str
    suggestion: str | None = None  # the closest real flag, when there is one
    source: str | None = None  # "profiles/x.toml:12" or "command line"
    value: str | None = None

    def __str__(self) -> str:
        shown = self.flag if self.value is None else f"{self.flag} {self.value}"
        text = f"{self.source}: {shown}: {self.message}" if self.source else f"{shown}: {self.message}"
        return text


@dataclass
class LintReport:
    subject: str  # profile name / file, or "command line"
    vllm_version: str
    problems: list[LintProblem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    flags_checked: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def render(self) -> str:
        if self.ok:
            lines = [f"{self.subject}: ok ({self.flags_checked} flags checked against vLLM {self.vllm_version})"]
        else:
            lines = [f"{self.subject}: {len(self.problems)} problem(s) against vLLM {self.vllm_version}:"]
            lines += [f"  {p}" for p in self.problems]
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)

    def raise_if_problems(self) -> LintReport:
        if self.problems:
            raise LintError(self.render(), problems=self.problems,
                            fix="correct or remove the flags above (`vllm serve --help=all` lists the real ones)")
        return self


# --------------------------------------------------------------------------- walking a command line


def is_flag(token: str) -> bool:
    """An option, not a value: ``-5`` and ``-0.5`` are values."""
    return token.startswith("-") and token != "-" and not _NUMBER.match(token)


def canonical_flag(name: str) -> str:
    """``--max_model_len`` -> ``--max-model-len``, as vLLM's FlexibleArgumentParser reads it; a dotted
    suffix (``--compilation-config.mode``) is kept as written."""
    if not name.startswith("--"):
        return name
    head, dot, rest = name[2:].partition(".")
    return "--" + head.replace("_", "-") + dot + rest


def _normalise(name: str) -> tuple[str, bool]:
    """``--compilation-config.mode`` -> (``--compilation-config``, dotted=True): lint checks the head."""
    head, dot, _ = canonical_flag(name).partition(".")
    return head, bool(dot)


def _check_value(action: dict[str, Any], flag: str, value: str, source: str | None) -> LintProblem | None:
    choices = action.get("choices")
    if choices is not None:
        candidate = value.lower() if action.get("lowercases") else value
        if candidate not in choices and value not in choices:
            shown = ", ".join(choices[:20]) + (", ..." if len(choices) > 20 else "")
            return LintProblem(flag, f"'{value}' is not one of its choices: {shown}",
                               suggestion=(difflib.get_close_matches(value, choices, n=1) or [None])[0],
                               source=source, value=value)
        return None
    if value in action.get("accepts", ()):
        return None
    kind = action.get("type")
    probes = set(action.get("probes_all", ()))
    if value in probes:  # one of the probed strings and it was rejected
        return LintProblem(flag, f"cannot take the value '{value}' (expects {_EXPECTS.get(kind, kind)})",
                           source=source, value=value)
    ok = True
    if kind == "int":
        pattern = _HUMAN_INT if "1k" in action.get("accepts", ()) else _INT
        ok = bool(pattern.match(value))
    elif kind == "float":
        try:
            float(value)
        except ValueError:
            ok = False
    elif kind == "json":
        try:
            json.loads(value)
        except ValueError:
            ok = False
    elif kind == "bool":
        ok = value.lower() in ("true", "false", "1", "0", "yes", "no")
    if ok:
        return None
    return LintProblem(flag, f"cannot take the value '{value}' (expects {_EXPECTS[kind]})", source=source, value=value)


def check_tokens(tokens: list[str], spec: ArgSpec, *, source: str | None = None,
                 allow_positional: bool = False) -> tuple[list[LintProblem], list[str], int]:
    """Walk vLLM options token by token; returns (problems, warnings, flags seen). Never stops early."""
    problems: list[LintProblem] = []
    warnings: list[str] = []
    probes = spec.data.get("probes", [])
    positional_free = allow_positional and spec.takes_positional
    seen = 0
    i, n = 0, len(tokens)
    while i < n:
        token = tokens[i]
        i += 1
        if not is_flag(token):
            if positional_free:
                positional_free = False  # the model (vLLM's `model_tag`)
                continue
            problems.append(LintProblem(token, "unexpected argument (not a flag, and not the value of one)",
                                        source=source))
            continue
        seen += 1
        written, eq, attached = token.partition("=") if token.startswith("--") else (token, "", "")
        if not token.startswith("--") and token.startswith("-O") and len(token) > 2 and "--optimization-level" in spec.by_option:
            written, eq, attached = "--optimization-level", "=", token[2:].lstrip("=")
        name, dotted = _normalise(written)
        action = spec.by_option.get(name)
        if action is None:
            value = attached if eq else (tokens[i] if i < n and not is_flag(tokens[i]) else None)
            if not eq and value is not None:
                i += 1  # the unknown flag's value, so it is not reported again as a stray argument
            problems.append(_unknown(name, written, spec, source, value))
            continue
        action = {**action, "probes_all": probes}
        if action.get("deprecated"):
            warnings.append(f"{written} is deprecated in vLLM {spec.version}")
        nargs = action.get("nargs")
        if dotted:  # --json-arg.key value: one value, any JSON leaf
            if not eq:
                i += 1 if i < n and not is_flag(tokens[i]) else 0
            continue
        if nargs == 0:
            if eq:
                problems.append(LintProblem(written, f"takes no value (it is {_flag_kind(action)}); "
                                            f"write {_on_off(action)}", source=source, value=attached))
            elif i < n and not is_flag(tokens[i]) and (not positional_free or _looks_boolean(tokens[i])):
                problems.append(LintProblem(written, f"takes no value (it is {_flag_kind(action)}), so '{tokens[i]}' "
                                            f"would be a stray argument; write {_on_off(action)}",
                                            source=source, value=tokens[i]))
                i += 1
            continue
        values: list[str] = [attached] if eq else []
        if nargs in (None, 1) or isinstance(nargs, int):
            want = 1 if nargs is None else int(nargs)
            while len(values) < want and i < n and not is_flag(tokens[i]):
                values.append(tokens[i])
                i += 1
            if len(values) < want:
                problems.append(LintProblem(written, "needs a value" if want == 1 else f"needs {want} values",
                                            source=source))
                continue
        elif nargs == "?":
            if not eq and i < n and not is_flag(tokens[i]):
                values.append(tokens[i])
                i += 1
        else:  # "+", "*", argparse.REMAINDER...
            while i < n and not is_flag(tokens[i]):
                values.append(tokens[i])
                i += 1
            if nargs == "+" and not values:
                problems.append(LintProblem(written, "needs at least one value", source=source))
                continue
        for value in values:
            if (problem := _check_value(action, written, value, source)) is not None:
                problems.append(problem)
    return problems, warnings, seen


def _unknown(name: str, written: str, spec: ArgSpec, source: str | None, value: str | None) -> LintProblem:
    if name.startswith("--no-") and ("--" + name[5:]) in spec.by_option:
        positive = spec.by_option["--" + name[5:]]
        if positive.get("nargs") == 0:
            return LintProblem(written, f"no such flag: --{name[5:]} is {_flag_kind(positive)}, off unless given; "
                               "remove it (in a profile: delete the line, or set it true to turn it on)",
                               source=source, value=value)
        return LintProblem(written, f"no such flag: --{name[5:]} takes a value, not an on/off switch",
                           suggestion="--" + name[5:], source=source, value=value)
    prefixed = [o for o in spec.long_options if o.startswith(name)]
    suggestion = prefixed[0] if len(prefixed) == 1 else spec.closest(name)
    message = f"not a vLLM {spec.version} flag"
    if len(prefixed) == 1:
        # argparse (allow_abbrev) would take it silently as this other flag, with its meaning.
        message += f"; vLLM's argparse would silently read it as an abbreviation of {prefixed[0]}"
    if suggestion:
        message += f"; closest real flag: {suggestion}"
    if hint := _REMOVED_HINTS.get(name):
        message += f"; note: {hint}"
    return LintProblem(written, message, suggestion=suggestion, source=source, value=value)


def _flag_kind(action: dict[str, Any]) -> str:
    return {"_StoreTrueAction": "a store-true flag", "_StoreFalseAction": "a store-false flag",
            "BooleanOptionalAction": "an on/off switch"}.get(action.get("action", ""), "a flag without a value")


def _on_off(action: dict[str, Any]) -> str:
    on = action["options"][0]
    negative = next((o for o in action["options"] if o.startswith("--no-")), None)
    return f"{on} to turn it on" + (f" or {negative} to turn it off" if negative else ", or leave it out")


def _looks_boolean(token: str) -> bool:
    return token.lower() in ("true", "false", "yes", "no", "on", "off", "0", "1")


# --------------------------------------------------------------------------- public forms


def lint_profile(profile: Profile, *, python: str | None = None, cache_dir: Path | None = None) -> LintReport:
    """Check every ``[vllm]`` flag of a resolved profile (and its load format) against the installed vLLM."""
    spec = load_arg_spec(python, cache_dir=cache_dir)
    subject = f"profile {profile.name}" + (f" (gpu class {profile.gpu_class})" if profile.gpu_class else "")
    report = LintReport(subject=subject, vllm_version=spec.version)
    top_file = profile.files[0] if profile.files else profile.name
    managed = [("--served-model-name", profile.served_model_name, "served-model-name"),
               ("--load-format", profile.load_format, "load-format"), ("--host", profile.host, "host")]
    for flag, value, key in managed:
        problems, _, _ = check_tokens([flag, value], spec, source=_field_source(profile, key, top_file))
        report.problems += problems
    checks = [(key, value, profile.flag_sources.get(key, top_file)) for key, value in profile.flags.items()]
    # Every [gpu.<class>] table too, not only the class asked for: a typo there would otherwise wait for
    # the day that GPU class runs.
    known_classes = known_class_keys()
    for cls, table in profile.gpu_overrides.items():
        if cls not in known_classes:
            where = next((v for k, v in profile.override_sources.items() if k.startswith(f"gpu.{cls}.")), top_file)
            close = difflib.get_close_matches(cls, known_classes, n=1)
            report.problems.append(LintProblem(
                f"[gpu.{cls}]", (f"unknown GPU class (closest: {close[0]}); " if close else "unknown GPU class; ")
                + "known: " + ", ".join(known_classes), suggestion=close[0] if close else None, source=where))
        if cls == profile.gpu_class:
            continue  # already applied to profile.flags
        checks += [(key, value, profile.override_sources.get(f"gpu.{cls}.{key}", top_file))
                   for key, value in table.items()]
    for key, value, source in checks:
        name, _ = _normalise("--" + key)
        if (bare := name[2:]) in _MANAGED_FLAGS:
            report.problems.append(LintProblem(f"--{key}", f"perfgate sets this itself: {_MANAGED_FLAGS[bare]}",
                                               source=source))
            continue
        problems, warnings, seen = check_tokens(flags_to_argv({key: value}), spec, source=source)
        report.problems += problems
        report.warnings += warnings
        report.flags_checked += seen
    report.problems.sort(key=lambda p: _source_order(p.source))
    known_env = set(spec.data.get("env_vars", ()))
    for env_name in profile.env:
        if known_env and env_name.startswith("VLLM_") and env_name not in known_env:
            close = difflib.get_close_matches(env_name, sorted(known_env), n=1)
            report.warnings.append(f"[env] {env_name} is not an environment variable vLLM {spec.version} reads"
                                   + (f"; closest: {close[0]}" if close else ""))
    return report


def _source_order(source: str | None) -> tuple[str, int]:
    file, _, line = (source or "").rpartition(":")
    return (file, int(line)) if line.isdigit() else (source or "", 0)


def _field_source(profile: Profile, key: str, default: str) -> str:
    for file in profile.files:
        if line := find_line(Path(file), key):
            return f"{file}:{line}"
    return default


def strip_program(argv: list[str]) -> tuple[list[str], bool]:
    """Drop ``ENV=1 vllm serve`` / ``python -m vllm.entrypoints.openai.api_server``; returns (options, had_program)."""
    tokens = [t.strip() for t in argv if t.strip() not in ("\\", "")]
    if len(tokens) == 1 and " " in tokens[0]:  # the whole line pasted as one quoted string
        tokens = [t for t in shlex.split(tokens[0].replace("\\\n", " ")) if t.strip() not in ("\\", "")]
    i = 0
    while i < len(tokens) and _ENV_ASSIGN.match(tokens[i]) and not tokens[i].startswith("-"):
        i += 1
    if i >= len(tokens):
        return [], False
    program = os.path.basename(tokens[i])
    if program == "vllm":
        i += 1
        if i < len(tokens) and tokens[i] == "serve":
            i += 1
        return tokens[i:], True
    if program == "serve":
        return tokens[i + 1:], True
    if re.fullmatch(r"python[0-9.]*", program):
        i += 1
        while i < len(tokens) and tokens[i] in ("-u", "-O", "-OO", "-B", "-E", "-s"):
            i += 1
        if i + 1 < len(tokens) and tokens[i] == "-m" and tokens[i + 1].startswith("vllm"):
            return tokens[i + 2:], True
        raise PerfgateError(f"cannot read this command line: {shlex.join(tokens)}",
                            fix="give `python -m vllm.entrypoints.openai.api_server --model M ...` "
                                "or `vllm serve MODEL ...`")
    if is_flag(tokens[i]):
        return tokens[i:], False
    raise PerfgateError(f"'{tokens[i]}' is not a vLLM command", source="command line",
                        fix="paste the whole launch line: `vllm serve MODEL --flag ...` or "
                            "`python -m vllm.entrypoints.openai.api_server --model M ...`")


def entry_point_problem(argv: list[str], vllm_version: str) -> LintProblem | None:
    """A ``python -m vllm.<module>`` launcher that is not vLLM's OpenAI-compatible server, or no longer exists."""
    tokens = [t for arg in argv for t in (shlex.split(arg) if " " in arg.strip() else [arg])]
    module = next((b for a, b in itertools.pairwise(tokens) if a == "-m" and b.startswith("vllm")), None)
    if module is None or module in _SERVING_MODULES:
        return None
    why = _REMOVED_MODULES.get(module, f"not an entry point of vLLM {vllm_version} that serves the OpenAI API")
    return LintProblem(f"python -m {module}", f"{why}; launch with {_USE_INSTEAD}", suggestion="vllm serve",
                       source="command line")


def lint_argv(argv: list[str], *, python: str | None = None, cache_dir: Path | None = None) -> LintReport:
    """Check a raw launch command (``vllm serve MODEL --flag ...``), reporting every bad flag, not the first."""
    options, _ = strip_program(argv)
    if not options:
        raise PerfgateError("empty command line", fix="put the command after `--`: perfgate lint -- vllm serve M ...")
    spec = load_arg_spec(python, cache_dir=cache_dir)
    report = LintReport(subject="command line", vllm_version=spec.version)
    if (program := entry_point_problem(argv, spec.version)) is not None:
        report.problems.append(program)
    # The model is either the positional (vLLM's `model_tag`) or --model; with --model, vLLM takes a
    # positional as a second model, so none is allowed then.
    has_model_flag = any(re.match(r"^--model(=|$)", t) for t in options)
    problems, report.warnings, report.flags_checked = check_tokens(options, spec, allow_positional=not has_model_flag)
    report.problems += problems
    return report


def check_profile(profile: Profile, **kw: Any) -> LintReport:
    """``lint_profile`` that raises ``LintError`` listing every problem (the server fixture calls this)."""
    return lint_profile(profile, **kw).raise_if_problems()


def check_argv(argv: list[str], **kw: Any) -> LintReport:
    return lint_argv(argv, **kw).raise_if_problems()
