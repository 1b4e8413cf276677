"""What makes two runs' figures comparable, and what changed between them.

A fingerprint (``perfgate.run.target.environment_fingerprint`` plus the phase's ``scenario_digest``) holds two
kinds of fact:

* **identity**, which refuses a comparison when it differs: the GPU model, the model's architecture and
  dtype, the scenario's content (a digest of what it sends, not its name) and the measurement-method version.
  Figures of another card, another model or another workload are not "slower", they are something else.
* **change**, which is compared and named: the vLLM, torch and CUDA versions, the driver and the launch
  flags (the profile's command line, normalized as lint reads it). "Did this vLLM upgrade make serving
  worse?" is the question the gate exists for, so an upgrade is judged, never refused.

A baseline recorded before a field existed is compared on what both sides record; the fields it lacks are
named as unchecked. Only the GPU model is refused when one side does not know it.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from perfgate._errors import PerfgateError
from perfgate.serving.lint import canonical_flag, is_flag, strip_program

# Identity fields in the fingerprint (the method version is a field of PhaseResult and Baseline), in the
# words a person reads them.
IDENTITY_KEYS: dict[str, str] = {"gpu_model": "GPU model", "model_architecture": "model architecture",
                                 "model_dtype": "model dtype", "scenario_digest": "scenario content"}
# An identity field whose absence on one side still refuses: without it the card cannot be told apart.
REQUIRED_IDENTITY = ("gpu_model",)
# Compared and named in the verdict's first line, in that order.
CHANGE_KEYS: dict[str, str] = {"vllm_version": "vLLM", "torch_version": "torch", "cuda_version": "CUDA",
                               "driver": "driver", "command_line": "flags"}
# Launch options that name where or as what the server listens, not how it serves.
_NOT_SERVING = {"--model", "--host", "--port", "--api-key", "--served-model-name"}


@dataclass(frozen=True)
class Change:
    key: str  # fingerprint key
    label: str  # "vLLM", "flags", ...
    old: Any
    new: Any
    detail: str = ""  # for flags: which flags changed

    def __str__(self) -> str:
        if self.detail:
            return f"{self.label} {self.detail}"
        return f"{self.label} {self.old} → {self.new}"


def normalized_flags(command_line: str) -> dict[str, str]:
    """A launch command line as {flag: value} the way vLLM reads it: the program and the model path dropped
    (the model's identity is compared on its own), ``--x_y`` read as ``--x-y``, ``--x=v`` as ``--x v``, and
    the options that only say where the server listens left out. A line that cannot be read (an attached
    server's "(attached to URL)") is kept whole under ``""``."""
    if not command_line:
        return {}
    try:
        options, _ = strip_program(shlex.split(command_line))
    except (PerfgateError, ValueError):
        return {"": command_line}
    flags: dict[str, str] = {}
    i = 0
    while i < len(options):
        token = options[i]
        if not is_flag(token):
            i += 1  # a positional argument: the model path
            continue
        name, eq, value = token.partition("=")
        name = canonical_flag(name)
        if not eq:
            value = ""
            if i + 1 < len(options) and not is_flag(options[i + 1]):
                value = options[i + 1]
                i += 1
        if name not in _NOT_SERVING:
            flags[name] = value
        i += 1
    return flags


def flag_changes(old_line: str, new_line: str) -> str:
    """``--max-num-seqs 8 → 16, +--enforce-eager, −--block-size 16``; empty when the flags are the same."""
    old, new = normalized_flags(old_line), normalized_flags(new_line)
    if "" in old or "" in new:  # one side is not a command line (an attached server): say what is known
        return "" if old == new else f"not comparable: {old.get('', 'launched')} → {new.get('', 'launched')}"
    parts = []
    for name in sorted(set(old) | set(new)):
        if name in old and name in new:
            if old[name] != new[name]:
                parts.append(f"{name} {old[name] or '(on)'} → {new[name] or '(on)'}")
        elif name in new:
            parts.append(f"+{name}" + (f" {new[name]}" if new[name] else ""))
        else:
            parts.append(f"−{name}" + (f" {old[name]}" if old[name] else ""))
    return ", ".join(parts)


def changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """What changed between two fingerprints among ``CHANGE_KEYS`` (both sides recorded, values differ)."""
    out = []
    for key, label in CHANGE_KEYS.items():
        before, after = old.get(key), new.get(key)
        if before is None or after is None:
            continue
        if key == "command_line":
            detail = flag_changes(str(before), str(after))
            if detail:
                out.append(Change(key, label, before, after, detail))
        elif str(before) != str(after):
            out.append(Change(key, label, before, after))
    return out


def describe_changes(found: list[Change]) -> str:
    """One phrase: ``vLLM 0.25.1 → 0.26.0; flags --max-num-seqs 8 → 16``, or that nothing changed."""
    if not found:
        return "no change in " + ", ".join(CHANGE_KEYS.values())
    return "; ".join(str(c) for c in found)


@dataclass
class IdentityCheck:
    problems: list[str]  # why the two may not be compared (empty: they may)
    unknown: list[str]  # identity fields one side does not record: not checked, said


def check_identity(old: Mapping[str, Any], new: Mapping[str, Any], *, old_method: int,
                   new_method: int) -> IdentityCheck:
    """Compare the identity fields of a baseline's fingerprint (``old``) and a run's (``new``)."""
    problems, unknown = [], []
    old, new = _with_dtype(old), _with_dtype(new)
    for key, label in IDENTITY_KEYS.items():
        before, after = old.get(key), new.get(key)
        if before is not None and after is not None:
            if str(before) != str(after):
                problems.append(f"{label} differs: baseline {before!r}, this run {after!r}")
        elif key in REQUIRED_IDENTITY:
            if before is not None or after is not None:  # both None: no GPU on either side (the CPU path)
                side, other = ("this run", before) if after is None else ("the baseline", after)
                problems.append(f"{label} unknown for {side} (the other: {other!r}), so the card cannot be "
                                "shown to be the same")
        elif before is None and after is None:
            unknown.append(f"{label} (unknown on both sides)")
        else:
            side = "this run" if after is None else "the baseline"
            unknown.append(f"{label} (not recorded by {side})" if key not in (new if after is None else old)
                           else f"{label} (unknown for {side})")
    if old_method != new_method:
        problems.append(f"measurement method differs: baseline method {old_method}, this run method {new_method}")
    return IdentityCheck(problems, unknown)


def _with_dtype(fingerprint: Mapping[str, Any]) -> Mapping[str, Any]:
    """A fingerprint from before ``model_dtype`` was recorded still says its dtype in ``--dtype``."""
    if fingerprint.get("model_dtype") is not None:
        return fingerprint
    dtype = normalized_flags(str(fingerprint.get("command_line") or "")).get("--dtype")
    return {**fingerprint, "model_dtype": dtype} if dtype and dtype != "auto" else fingerprint


def baseline_fingerprint(fingerprint: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
    """A baseline's fingerprint with its top-level fields (``gpu_model``, ``vllm_version``) filled in where
    the fingerprint itself lacks them (old files)."""
    merged = dict(fingerprint)
    for key, value in fields.items():
        if merged.get(key) is None and value is not None:
            merged[key] = value
    return merged
