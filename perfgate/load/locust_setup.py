"""One Locust process's side of a perfgate run: the scenario, its prepared requests, the records file.

Plain Python (no Locust, no gevent), so it is importable and testable anywhere; ``perfgate.load.locust_user``
holds the one ``LocustRun`` of a Locust process and configures it from Locust's parsed options.

Each request is built from the scenario like the async engine's (``perfgate.load.schedule.request_specs``:
prompts of an exact token count from the served model's tokenizer, built before the test starts, drawn from
``PromptStream(scenario.seed, --perfgate-prompt-nonce, --perfgate-prompt-repeat)``; each ``--processes``
worker draws its own part of it, so no two send the same prompt).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from perfgate._errors import ConfigError
from perfgate._toml import validate
from perfgate.core.records import RequestRecord, RequestSpec
from perfgate.load.locust_runner import API_KEY_ENV, Stage, parse_ramp, record_line, worker_records_path
from perfgate.load.prompts import PromptBuilder, load_tokenizer
from perfgate.load.scenario import Scenario, load_scenario
from perfgate.load.schedule import request_specs
from perfgate.load.stream import PromptStream, new_nonce

log = logging.getLogger("perfgate.locust")


class LocustRun:
    """Per-process state: the scenario, its prepared requests, the records file."""

    def __init__(self) -> None:
        self.scenario: Scenario | None = None
        self.model = ""
        self.specs: Iterator[RequestSpec] = iter(())
        self.headers: dict[str, str] = {}
        self.stages: list[Stage] = []
        self.users_target = 1
        self.warmup_s = 0.0
        self.t0: float | None = None
        self.records_path: Path | None = None
        self._records: TextIO | None = None

    def configure(self, opts: Any, host: str | None, *, prepare: bool, worker: bool) -> None:
        if not opts.perfgate_scenario:
            raise ConfigError("no scenario given", fix="pass --perfgate-scenario NAME (or set PERFGATE_SCENARIO)")
        self.scenario = _read_scenario(opts.perfgate_scenario)
        self.stages = parse_ramp(opts.perfgate_ramp) if opts.perfgate_ramp else []
        self.users_target = max((s.users for s in self.stages), default=0) or opts.num_users or 1
        self.warmup_s = opts.perfgate_warmup_s
        api_key = os.environ.get(API_KEY_ENV)
        self.headers = {"Content-Type": "application/json", "Accept": "text/event-stream",
                        "Accept-Encoding": "identity"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        if opts.perfgate_records:
            path = Path(opts.perfgate_records)
            self.records_path = worker_records_path(path, os.getpid()) if worker else path
        if not prepare:  # the master of a distributed run sends nothing
            return
        model, root = opts.perfgate_model, None
        if not model or not opts.perfgate_tokenizer:
            model, root = _served_model(host, model, self.headers)
        self.model = model
        tokenizer = opts.perfgate_tokenizer or root
        builder = PromptBuilder(load_tokenizer(tokenizer), chat=self.scenario.endpoint.endswith("chat/completions"))
        # Without a nonce from the command line every process draws its own: prompts stay fresh, but then a
        # shared prefix is shared per process only.
        stream = PromptStream(self.scenario.seed, opts.perfgate_prompt_nonce or new_nonce(),
                              opts.perfgate_prompt_repeat)
        # Workers draw different prompts (identical ones would hit vLLM's prefix cache); the phase's shared
        # prefix, if the scenario declares one, is the same for all of them.
        lazy = request_specs(self.scenario, builder, model, stream, f"locust-{os.getpid()}" if worker else "locust",
                             prefix_name="locust")
        pool = list(itertools.islice(lazy, max(0, opts.perfgate_prompt_pool)))
        self.specs = itertools.chain(pool, lazy)
        log.info("perfgate: scenario %s (%s), %d requests prepared, prompt stream %s", self.scenario.name,
                 self.scenario.workload(), len(pool), stream.as_dict())

    def phase(self, scheduled: float) -> str:
        if self.t0 is None:
            self.t0 = scheduled
        return "warmup" if scheduled < self.t0 + self.warmup_s else "measure"

    def write(self, record: RequestRecord) -> None:
        if self.records_path is None:
            return
        if self._records is None:  # opened on first use: a distributed master never creates a file
            self.records_path.parent.mkdir(parents=True, exist_ok=True)
            self._records = self.records_path.open("a", encoding="utf-8", buffering=1)
        self._records.write(record_line(record, pid=os.getpid()) + "\n")

    def close(self) -> None:
        if self._records is not None:
            self._records.close()
            self._records = None



def _read_scenario(name: str) -> Scenario:
    if name.endswith(".json"):  # what run_locust writes: the resolved scenario, exactly as the test built it
        path = Path(name)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read the scenario: {exc}", source=name) from None
        return validate(Scenario, data, path, "scenario")
    return load_scenario(name)


def _served_model(host: str | None, model: str, headers: dict[str, str]) -> tuple[str, str | None]:
    """(model, its tokenizer directory) from the server's /v1/models (vLLM lists the model path as 'root')."""
    fix = "pass --perfgate-model and --perfgate-tokenizer, or check --host"
    if not host:
        raise ConfigError("no --host to ask for the served model", fix=fix)
    request = urllib.request.Request(host.rstrip("/") + "/v1/models",
                                     headers={k: v for k, v in headers.items() if k == "Authorization"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            entries = json.load(response)["data"]
    except Exception as exc:  # noqa: BLE001 - URLError, HTTPError, bad JSON: all mean "cannot discover"
        raise ConfigError(f"cannot list the models of {host}: {type(exc).__name__}: {exc}", fix=fix) from None
    entry = next((e for e in entries if not model or e.get("id") == model), None)
    if entry is None:
        raise ConfigError(f"{host} serves no model '{model}' (it serves {', '.join(e['id'] for e in entries)})",
                          fix=fix)
    return entry["id"], entry.get("root")
