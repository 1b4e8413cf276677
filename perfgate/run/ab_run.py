"""An A/B of two Python environments (an upgrade check): the same profile and scenario, served once by
environment A's vLLM (the pinned one) and once by environment B's (the candidate), repeats interleaved.

Each side's vLLM and torch versions are read from that side's interpreter (a subprocess of it) and from its
server's ``/version``, never from this process: perfgate may run in neither environment. Repeats go
A B A B ... so a slow drift of the machine hits both sides. With both servers up at once (the default) each
side is one server session; ``one_at_a_time`` (a GPU that holds one server) restarts a side's server for
each of its repeats, so only one server is up at any moment.

Two judgements, both printed: the A/B (every serving metric, B/A with its confidence interval, from
``perfgate.verdict.ab``) and the baseline gate with A's interleaved repeats as the baseline (``perfgate.verdict.gate``),
whose verdict is the result: PASS (B is not worse), REGRESSED (B is worse), anything else inconclusive.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from perfgate._errors import BaselineError, ConfigError, InvalidRunError
from perfgate.core.fmt import pct
from perfgate.core.phase import PhaseResult, write_json_atomic
from perfgate.load.scenario import load_scenario
from perfgate.report.tables import table as render_table
from perfgate.run.launch import launch_target
from perfgate.run.measure import measure_phase
from perfgate.run.session import PerfgateSession
from perfgate.run.target import Target, server_version
from perfgate.serving._vllm_argspec import find_vllm_version
from perfgate.verdict.ab import AbVerdict, ab_compare
from perfgate.verdict.baseline import baseline_from_phases
from perfgate.verdict.exit_codes import EXIT_INCONCLUSIVE, EXIT_USAGE, EXIT_WORSE, gate_exit_code  # noqa: F401
from perfgate.verdict.exit_codes import EXIT_PASS as EXIT_NOT_WORSE  # noqa: F401
from perfgate.verdict.gate import INVALID, PASS, GateVerdict, compare
from perfgate.verdict.gate_settings import load_gate_settings

# EXIT_*: perfgate.verdict.exit_codes' (one mapping for every verdict command), still importable from here.
ENV_FIX = ("point --a-python/--b-python at the `bin/python` of an environment with vLLM installed; "
           "make a candidate one with `bash scripts/setup-candidate.sh VERSION`")

# Run under the side's interpreter: perfgate need not be installed there, so the function travels as source.
_VERSIONS_SCRIPT = inspect.getsource(find_vllm_version) + """
import importlib.metadata as md, json, platform
try:
    torch = md.version("torch")
except md.PackageNotFoundError:
    torch = None
print(json.dumps({"vllm": find_vllm_version(), "torch": torch, "python": platform.python_version()}))
"""


@dataclass(frozen=True)
class SideEnv:
    """One side of the A/B: its interpreter and the versions installed there."""

    label: str  # "A" or "B"
    python: str
    vllm_version: str
    torch_version: str | None
    python_version: str | None = None


def read_side_env(label: str, python: str, timeout_s: float = 120.0) -> SideEnv:
    """The vLLM and torch versions ``python`` has installed (a subprocess of that interpreter).

    The path is made absolute but not resolved: a venv's ``bin/python`` links to the base interpreter, and
    only the unresolved path puts the venv's packages on ``sys.path``."""
    python = os.path.abspath(python)
    if not (os.path.isfile(python) and os.access(python, os.X_OK)):
        raise ConfigError(f"--{label.lower()}-python {python}: no executable there", fix=ENV_FIX)
    try:
        proc = subprocess.run([python, "-c", _VERSIONS_SCRIPT], capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"--{label.lower()}-python {python} could not run: {exc}", fix=ENV_FIX) from None
    try:
        found = json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise ConfigError(f"--{label.lower()}-python {python} did not report its versions (exit "
                          f"{proc.returncode}): {proc.stderr.strip()[-400:]}", fix=ENV_FIX) from None
    if not found.get("vllm"):
        raise ConfigError(f"--{label.lower()}-python {python}: vLLM is not installed in that environment",
                          fix=ENV_FIX)
    return SideEnv(label, python, found["vllm"], found.get("torch"), found.get("python"))


@dataclass
class EnvAbResult:
    """What an environment A/B found: each side's environment and served version, phases and verdicts."""

    a: SideEnv
    b: SideEnv
    served: dict[str, str | None]  # side label -> the server's own /version
    phases_a: list[PhaseResult]
    phases_b: list[PhaseResult]
    ab: AbVerdict
    gate: GateVerdict
    notes: list[str] = field(default_factory=list)

    def version(self, side: SideEnv) -> str:
        return self.served.get(side.label) or side.vllm_version

    @property
    def exit_code(self) -> int:
        return gate_exit_code(self.gate)

    def headline(self) -> str:
        """``vLLM 0.32.0 → 0.31.0: PASS; output_throughput -3.1 % [-9.0, +3.2]`` (B relative to A)."""
        status = self.gate.status.upper() + (" (smoke gate)" if self.gate.settings.smoke else "")
        line = f"vLLM {self.version(self.a)} → {self.version(self.b)}: {status}"
        rows = [r for r in self.ab.rows if r.change is not None]
        lead = next((r for r in rows if r.metric == "output_throughput"), rows[0] if rows else None)
        if lead is not None:
            c = lead.change
            line += f"; {lead.metric} {pct(c.relative)} [{pct(c.ci_low)}, {pct(c.ci_high)}]"
        return line

    def table(self) -> str:
        sides = [f"  {s.label}: vLLM {self.version(s)} (torch {s.torch_version or '?'}) from {s.python}"
                 for s in (self.a, self.b)]
        return "\n".join([self.headline(), *sides, "", render_table(self.gate), "", render_table(self.ab),
                          *[f"note: {n}" for n in self.notes]])

    def to_dict(self) -> dict:
        return {"status": self.gate.status, "exit_code": self.exit_code, "headline": self.headline(),
                "sides": {s.label: {"python": s.python, "vllm_version": s.vllm_version,
                                    "served_version": self.served.get(s.label), "torch_version": s.torch_version}
                          for s in (self.a, self.b)},
                "repeats": {"A": len(self.phases_a), "B": len(self.phases_b)}, "notes": self.notes}


def _side_fingerprint(target: Target, side: SideEnv) -> str | None:
    """Put the side's own versions in its phases' fingerprint (the default reads this process's torch)."""
    served = server_version(target.base_url, target.api_key)
    target.fingerprint["vllm_version"] = served or side.vllm_version
    target.fingerprint["torch_version"] = side.torch_version
    target.fingerprint["python"] = side.python_version
    return served


async def run_env_ab(pg: PerfgateSession, profile: str, scenario_name: str, a: SideEnv, b: SideEnv, *,
                     repeats: int, one_at_a_time: bool = False,
                     log: Callable[[str], None] = lambda _: None) -> EnvAbResult:
    """Measure ``repeats`` phases a side, interleaved A B A B, and judge B against A."""
    if repeats < 2:
        raise ConfigError(f"--repeats {repeats}: an A/B needs at least 2 repeats a side (3 or more to resolve "
                          "anything)", fix="--repeats 3 or more")
    scenario = load_scenario(scenario_name)
    sides = (a, b)
    out = {s.label: pg.results_dir / s.label for s in sides}
    phases: dict[str, list[PhaseResult]] = {s.label: [] for s in sides}
    targets: dict[str, Target] = {}
    served: dict[str, str | None] = {}
    finalizers: list[Callable[[], None]] = []

    def start(side: SideEnv, r: int) -> Target:
        if side.label not in targets:
            log(f"starting {profile} for {side.label} (vLLM {side.vllm_version}, {side.python})")
            target = launch_target(pg, profile, finalizers.append, python=side.python)
            targets[side.label] = target
        else:
            target = targets[side.label]
            log(f"restarting {side.label}'s server for repeat {r}")
            target.server.restart(pg.path("servers", f"{profile}-{side.label}-r{r}.log"))  # type: ignore[attr-defined]
        served[side.label] = _side_fingerprint(target, side)
        return target

    try:
        if not one_at_a_time:
            for side in sides:
                await asyncio.to_thread(start, side, 0)
        for r in range(repeats):
            for side in sides:
                target = await asyncio.to_thread(start, side, r) if one_at_a_time else targets[side.label]
                phase = await measure_phase(target, scenario, results_dir=out[side.label], repeat=r,
                                            nonce=pg.prompt_nonce, throttle_limit_pct=load_gate_settings(
                                                target.gpu_class).throttle_limit_pct)
                # Not added to pg.phases: the manifest then declares no top-level phases, so a baseline
                # refresh from this directory finds nothing to pool (A and B live in DIR/A and DIR/B).
                phases[side.label].append(phase)
                m = phase.metrics
                log(f"{side.label} r{r}: {m.get('output_throughput', float('nan')):.1f} tok/s, p99 e2el "
                    f"{m.get('p99_e2el_ms', float('nan')):.0f} ms{'' if phase.valid else ' INVALID'}")
                if one_at_a_time:
                    await asyncio.to_thread(target.server.stop)
    finally:
        for stop in reversed(finalizers):
            stop()
    return judge(a, b, served, phases["A"], phases["B"], results_dir=pg.results_dir)


def judge(a: SideEnv, b: SideEnv, served: dict[str, str | None], phases_a: list[PhaseResult],
          phases_b: list[PhaseResult], *, results_dir: Path) -> EnvAbResult:
    """The A/B table and the gate with A's repeats as the baseline (both sides share the machine's drift)."""
    # Paired (repeat i of A with repeat i of B, measured next to each other) when every repeat is usable.
    paired = sum(p.valid for p in phases_a) == sum(p.valid for p in phases_b) == len(phases_a) == len(phases_b)
    ab = ab_compare(phases_a, phases_b, paired=paired)
    ab.a_name, ab.b_name = f"vLLM {served.get('A') or a.vllm_version}", f"vLLM {served.get('B') or b.vllm_version}"
    # One runner by construction: the only intended difference is the environment, which the gate's
    # identity check would otherwise refuse while vLLM's version is an identity key.
    settings = load_gate_settings(phases_b[0].gpu_class, allow_incomparable=True)
    notes = []
    for side in (a, b):
        if served.get(side.label) and served[side.label] != side.vllm_version:
            notes.append(f"{side.label}'s server reports vLLM {served[side.label]}, its environment has "
                         f"{side.vllm_version}")
    try:
        baseline = baseline_from_phases(phases_a, results_dir=results_dir / "A", min_sessions=1)
        gate = compare(phases_b, baseline, settings)
    except (InvalidRunError, BaselineError) as exc:
        gate = GateVerdict(phases_b[0].key, [], INVALID, reasons=[f"A cannot serve as the reference: {exc}"],
                           settings=settings, repeats=len(phases_b))
    if gate.status == PASS and not all(p.valid for p in phases_b):
        gate.status = INVALID
    return EnvAbResult(a, b, served, phases_a, phases_b, ab, gate, notes)


def write_result(result: EnvAbResult, results_dir: Path) -> tuple[Path, Path]:
    """``ab-verdict.json`` (for scripts: status, exit code, each side's versions) and ``summary.md``."""
    verdict_path = results_dir / "ab-verdict.json"
    write_json_atomic(verdict_path, result.to_dict())
    summary = results_dir / "summary.md"
    summary.write_text(f"### Upgrade A/B: {result.headline()}\n\n```text\n{result.table()}\n```\n", encoding="utf-8")
    return verdict_path, summary


def session_for(results_dir: Path, *, api_key: str | None = None, gpu_memory: str | None = None) -> PerfgateSession:
    """A perfgate session for a command-line A/B (results, server logs and the run's prompt nonce)."""
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--results {results_dir}: cannot create it ({exc})", fix="pick a writable directory") from None
    return PerfgateSession(results_dir=results_dir, api_key=api_key, gpu_memory=gpu_memory)

