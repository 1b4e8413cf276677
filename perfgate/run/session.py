"""One pytest session's perfgate state: results directory, servers started, phases and verdicts.

Lives on ``config.perfgate`` (like pytest-benchmark's session object). Knows nothing of pytest itself,
so ``perfgate bench`` and scripts can use it too.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from perfgate.core.phase import PhaseResult, write_json_atomic
from perfgate.core.progress import Progress, silent
from perfgate.load.stream import new_nonce


@dataclass
class ServerRecord:
    profile: str
    healthy_after_s: float | None
    log_path: str | None
    command_line: str
    error: str | None = None


@dataclass
class PerfgateSession:
    results_dir: Path
    profiles: list[str] | None = None
    vllm_url: str | None = None
    update_baselines: bool = False
    repeats: int | None = None
    api_key: str | None = field(default=None, repr=False)
    gpu_memory: str | None = None
    allow_incomparable: bool = False
    require_baselines: bool = False  # a phase without a baseline (NEW) fails instead of passing
    accept_regression: str = ""  # --perfgate-accept-regression: why update mode may write a regressed baseline
    run_id: str = field(default_factory=lambda: time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6])
    # Seeds every phase's prompts with the repeat index (perfgate.load.stream): this run's prompts differ from
    # every earlier run's; the same nonce rebuilds them.
    prompt_nonce: str = field(default_factory=new_nonce)
    servers: list[ServerRecord] = field(default_factory=list)
    phases: list[PhaseResult] = field(default_factory=list)
    # verdict rows per phase key, written into the report: {"slo": SloVerdict, "gate": GateVerdict, ...}
    verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    started_at: float = field(default_factory=time.time)
    live_pids: set[int] = field(default_factory=set)
    # Where progress lines go (server start stages, phase start and result, Locust ramp stages): nowhere by
    # default; the pytest plugin sets its terminal writer, the CLI stderr.
    progress: Progress = field(default=silent, repr=False, compare=False)

    def path(self, *parts: str) -> Path:
        return self.results_dir.joinpath(*parts)

    def add_phase(self, phase: PhaseResult) -> None:
        self.phases.append(phase)

    def redact(self, text: str) -> str:
        """Every string that leaves perfgate (logs, reports, JUnit) goes through here."""
        if self.api_key and self.api_key in text:
            text = text.replace(self.api_key, "***")
        return text

    def write_manifest(self) -> Path:
        path = self.path("session.json")
        write_json_atomic(path, {
            "run_id": self.run_id,
            "started_at": self.started_at,
            "finished_at": time.time(),
            "cwd": os.getcwd(),
            "prompt_nonce": self.prompt_nonce,
            "servers": [vars(s) for s in self.servers],
            "phases": [f"phases/{p.profile}__{p.scenario}__r{p.repeat}.json" for p in self.phases],
        })
        return path
