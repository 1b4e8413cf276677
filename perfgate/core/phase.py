"""A phase: one measured window of one scenario against one server, and everything measured in it.

The join point of the data flow: load metrics, client self-check and telemetry land here as one flat
``metrics`` dict (keys from ``perfgate.core.catalog``); SLOs, the baseline gate and reports read only this.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from perfgate.core.method import METHOD_VERSION

SCHEMA_VERSION = 1


@dataclass
class PhaseResult:
    profile: str
    scenario: str
    gpu_class: str  # "h100", "a10g", ..., or "cpu"
    metrics: dict[str, float] = field(default_factory=dict)
    # A run is invalid when the client could not keep its schedule (or counts disagree with the server):
    # its figures describe the client, not the server, so SLOs and baselines must not trust them.
    valid: bool = True
    invalid_reasons: list[str] = field(default_factory=list)
    # Over capacity: the waiting queue grew through the window, or the server preempted.
    saturated: bool | None = None
    saturation_reasons: list[str] = field(default_factory=list)
    # Telemetry sources that could not be read, with the reason ("nvml": "no NVIDIA driver").
    unavailable: dict[str, str] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    started_at: float = 0.0  # unix time
    repeat: int = 0
    # Which server process served it: repeats of one session share it; a baseline needs two or more.
    server_session: str = ""
    # How its prompts were drawn (scenario seed, the run's nonce, repeat index): enough to rebuild them.
    prompt_stream: dict[str, Any] = field(default_factory=dict)
    # perfgate.core.method.METHOD_VERSION of the code that measured it (files written before it existed: 1).
    method_version: int = METHOD_VERSION
    # Paths (relative to the results directory) of the raw records and the timeline.
    artifacts: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        """``gpu_class/profile/scenario``: how SLOs and baselines are looked up."""
        return f"{self.gpu_class}/{self.profile}/{self.scenario}"

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PhaseResult:
        data = {k: v for k, v in data.items() if k != "schema_version"}
        data.setdefault("method_version", 1)
        return cls(**data)



def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that a reader sees the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, sort_keys=False, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
