"""Locust run headless as a child process, and the raw per-request records its users write.

Importing Locust monkey-patches the interpreter through gevent (sockets, threads, ssl), which would break
pytest-asyncio, httpx and the telemetry samplers of the test process. So Locust only ever runs in a child
(``python -m locust -f perf_tests/locustfile.py --headless ...``), and nothing here imports it: this module
holds the runner and the plain helpers the Locust side shares (ramp stages, record files).

Locust's own percentiles are bucketed (response times rounded to 2 significant digits), so SLO verdicts
never read its CSV: every LLM user writes one JSON line per request (the fields of ``RequestRecord``) to the
file named by ``$PERFGATE_LOCUST_RECORDS`` (each ``--processes`` worker to its own ``<stem>.worker-<pid>``
file next to it), and ``perfgate.load.metrics`` computes ``vllm bench serve``'s metrics from them.

The prompts come from the run's ``PromptStream``: its nonce and repeat travel as ``--perfgate-prompt-nonce``
and ``--perfgate-prompt-repeat`` (the seed is the scenario's), and every worker draws its own part of it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from perfgate._errors import ConfigError, PerfgateError
from perfgate.core.progress import Progress, silent
from perfgate.core.records import RequestRecord
from perfgate.load.metrics import compute_metrics, mismatch_summary
from perfgate.load.ramp_progress import RampWatch, wait_polling
from perfgate.load.scenario import ClosedLoop, OpenLoop, Scenario, load_scenario
from perfgate.load.stream import PromptStream, new_nonce
from perfgate.serving.server import tail

RECORDS_ENV = "PERFGATE_LOCUST_RECORDS"  # where the users write their records (a .jsonl path)
API_KEY_ENV = "PERFGATE_API_KEY"  # bearer token for the server; never on a command line (ps shows argv)
# Exit code the child uses when some requests failed, so it differs from Locust's own error exit (1).
FAILED_REQUESTS_RC = 3
_RECORD_FIELDS = {f.name for f in dataclasses.fields(RequestRecord)}


class LocustRunError(PerfgateError):
    """Locust did not start, crashed, or ran past its time limit (records so far are kept in ``result``)."""

    def __init__(self, message: str, *, result: LocustResult | None = None, **kw) -> None:
        self.result = result
        super().__init__(message, **kw)


# --- ramps --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Stage:
    """Move to ``users`` users at ``spawn_rate`` users/s, then hold; the stage lasts ``duration_s``."""

    users: int
    spawn_rate: float
    duration_s: float


def parse_ramp(text: str, *, source: str = "--perfgate-ramp") -> list[Stage]:
    """``"USERS:SPAWN_RATE:SECONDS,..."`` (e.g. ``2:1:10,8:2:20,0:8:5``) -> stages; ConfigError if malformed."""
    fix = "write stages as USERS:SPAWN_RATE:SECONDS separated by commas, e.g. 2:1:10,8:2:20"
    stages: list[Stage] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        bits = part.split(":")
        try:
            if len(bits) != 3:
                raise ValueError
            stage = Stage(int(bits[0]), float(bits[1]), float(bits[2]))
        except ValueError:
            raise ConfigError(f"ramp stage '{part}' is not USERS:SPAWN_RATE:SECONDS", source=source, fix=fix) from None
        if stage.users < 0 or stage.spawn_rate <= 0 or stage.duration_s <= 0:
            raise ConfigError(f"ramp stage '{part}': users must be >= 0, spawn rate and seconds > 0",
                              source=source, fix=fix)
        stages.append(stage)
    if not stages:
        raise ConfigError("the ramp has no stages", source=source, fix=fix)
    return stages


def stage_at(stages: list[Stage], t: float) -> Stage | None:
    """The stage running ``t`` seconds into the test, or None once the ramp is over (the test stops)."""
    end = 0.0
    for stage in stages:
        end += stage.duration_s
        if t < end:
            return stage
    return None


# --- record files -------------------------------------------------------------------------------------

def worker_records_path(path: Path, pid: int) -> Path:
    """The file a ``--processes``/``--worker`` process writes (one writer per file, no interleaving)."""
    return path.with_name(f"{path.stem}.worker-{pid}{path.suffix}")


def records_files(path: Path) -> list[Path]:
    """``path`` (a standalone Locust's records) and every worker's file beside it."""
    found = [path] if path.is_file() else []
    return found + sorted(path.parent.glob(f"{path.stem}.worker-*{path.suffix}"))


def record_line(record: RequestRecord, **extra: object) -> str:
    """One JSON line: the record's own fields (``dataclasses.asdict``), plus ``extra`` keys."""
    return json.dumps({**dataclasses.asdict(record), **extra}, separators=(",", ":"))


def load_records(path: Path) -> list[RequestRecord]:
    """Every record of ``path`` and its workers' files, ordered by send time.

    A last line cut short (the process was killed mid-write) is skipped; any other bad line is an error
    naming the file and line. Indices are renumbered in send order, since workers number independently.
    """
    records: list[RequestRecord] = []
    for file in records_files(path):
        lines = file.read_text(encoding="utf-8").splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                records.append(RequestRecord(**{k: v for k, v in data.items() if k in _RECORD_FIELDS}))
            except (ValueError, TypeError) as exc:
                if number == len(lines):
                    continue  # torn final write
                raise ConfigError(f"line {number} is not a request record: {exc}", source=str(file),
                                  fix="records are written by perfgate's Locust user; rerun the test") from None
    records.sort(key=lambda r: r.sent)
    for i, record in enumerate(records):
        record.index = i
    return records


# --- the run ------------------------------------------------------------------------------------------

@dataclass
class LocustResult:
    records: list[RequestRecord]  # measured (phase "measure"), in send order
    warmup_records: list[RequestRecord]
    metrics: dict[str, float]  # perfgate.load.metrics over `records` (vllm bench serve keys)
    stats_csv: dict[str, Path]  # Locust's own CSVs (bucketed: for people, never for SLOs)
    returncode: int
    log: Path
    command: list[str]
    wall_s: float
    cpu_s: float  # CPU time of the whole Locust process tree (start-up and tokenizer load included)
    invalid_reasons: list[str] = field(default_factory=list)
    prompt_stream: dict[str, object] = field(default_factory=dict)  # PromptStream.as_dict() of its prompts

    @property
    def valid(self) -> bool:
        return not self.invalid_reasons

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log, lines)


def default_locustfile() -> Path:
    """``perf_tests/locustfile.py`` in the current directory (a project's own users), else the packaged
    ``perfgate/load/locustfile.py``: an installed perfgate drives Locust with no file of the project's."""
    if (candidate := Path.cwd() / "perf_tests" / "locustfile.py").is_file():
        return candidate
    return Path(__file__).with_name("locustfile.py")


def locust_command(base_url: str, scenario_file: Path, *, model: str, tokenizer: str, results_dir: Path,
                   users: int, spawn_rate: float, run_time_s: float | None, ramp: str | None,
                   processes: int | None, warmup_s: float, stop_timeout_s: float, locustfile: Path,
                   python: str = sys.executable, extra_args: tuple[str, ...] = (),
                   prompt_stream: PromptStream | None = None) -> list[str]:
    argv = [python, "-m", "locust", "-f", str(locustfile), "--headless", "--host", base_url,
            "--csv", str(results_dir / "locust"), "--html", str(results_dir / "locust_report.html"),
            "--only-summary", "--stop-timeout", f"{stop_timeout_s:g}",
            "--exit-code-on-error", str(FAILED_REQUESTS_RC),
            "--perfgate-scenario", str(scenario_file), "--perfgate-model", model,
            "--perfgate-tokenizer", tokenizer, "--perfgate-warmup-s", f"{warmup_s:g}"]
    if prompt_stream is not None:
        argv += ["--perfgate-prompt-nonce", prompt_stream.nonce, "--perfgate-prompt-repeat", str(prompt_stream.repeat)]
    if ramp:
        argv += ["--perfgate-ramp", ramp]  # the shape sets users and the end; -u/-r/-t would be ignored
    else:
        argv += ["--users", str(users), "--spawn-rate", f"{spawn_rate:g}", "--run-time", f"{run_time_s:g}s"]
    if processes:
        argv += ["--processes", str(processes)]
    return argv + list(extra_args)


def run_locust(base_url: str, scenario: Scenario | str, *, model: str, tokenizer: str, results_dir: Path,
               users: int | None = None, spawn_rate: float | None = None, run_time_s: float | None = None,
               ramp: str | None = None, processes: int | None = None, api_key: str | None = None,
               warmup_s: float = 0.0, stop_timeout_s: float = 30.0, timeout_s: float | None = None,
               goodput_slos_ms: dict[str, float] | None = None, locustfile: Path | None = None,
               extra_args: tuple[str, ...] = (), launcher: tuple[str, ...] = (),
               prompt_stream: PromptStream | None = None, progress: Progress = silent) -> LocustResult:
    """Run perfgate's Locust LLM user headless in a child process and measure from its raw records.

    ``users`` defaults to the scenario's concurrency, ``spawn_rate`` to ``users`` (all within a second),
    ``run_time_s`` to the scenario's ``duration_s``. ``ramp`` ("USERS:SPAWN_RATE:SECONDS,...") replaces all
    three. Requests sent in the first ``warmup_s`` seconds are kept apart (``warmup_records``). The child
    gets ``timeout_s`` (default: run time + stop timeout + 180 s of start-up); past it, or on Ctrl-C, its
    whole process group is ended. Raises LocustRunError when Locust fails to start or crashes.
    ``extra_args`` go to Locust as they are; ``launcher`` prefixes the command (``("taskset", "-c", "1")``).
    ``prompt_stream``: where the users' prompts come from (default: a fresh nonce, repeat 0); its seed
    replaces the scenario's in the scenario file the users read. ``progress`` gets a line per ramp stage.
    """
    if isinstance(scenario, str):
        scenario = load_scenario(scenario)
    results_dir = Path(results_dir).resolve()
    results_dir.mkdir(parents=True, exist_ok=True)
    if ramp:
        stages = parse_ramp(ramp)
        run_time_s = sum(stage.duration_s for stage in stages)
        users = max(stage.users for stage in stages)  # the ramp's peak; the shape sets the rest
    load = scenario.load
    if users is None:
        users = load.concurrency if isinstance(load, ClosedLoop) else load.max_concurrency
        if users is None:
            raise ConfigError(f"scenario '{scenario.name}' is open loop without max_concurrency",
                              fix="pass users= (how many Locust users share the offered rate)")
    run_time_s = run_time_s if run_time_s is not None else scenario.duration_s
    if run_time_s is None:
        raise ConfigError(f"scenario '{scenario.name}' gives num_requests, not duration_s",
                          fix="pass run_time_s= (Locust runs for a time, not a request count)")
    if timeout_s is None:
        timeout_s = run_time_s + stop_timeout_s + 180.0

    stream = prompt_stream or PromptStream(scenario.seed, new_nonce(), 0)
    if stream.seed != scenario.seed:
        scenario = scenario.model_copy(update={"seed": stream.seed})
    # The resolved scenario travels as JSON: the exact workload is kept with the results.
    scenario_file = results_dir / "locust_scenario.json"
    scenario_file.write_text(scenario.model_dump_json(indent=2), encoding="utf-8")
    records_path = results_dir / "locust_records.jsonl"
    for stale in records_files(records_path):
        stale.unlink()
    tokenizer = str(Path(tokenizer).resolve()) if Path(tokenizer).exists() else tokenizer
    command = locust_command(base_url, scenario_file, model=model, tokenizer=tokenizer, results_dir=results_dir,
                             users=users, spawn_rate=spawn_rate or users, run_time_s=run_time_s, ramp=ramp,
                             processes=processes, warmup_s=warmup_s, stop_timeout_s=stop_timeout_s,
                             locustfile=(locustfile or default_locustfile()).resolve(), extra_args=extra_args,
                             prompt_stream=stream)
    command = [*launcher, *command]
    env = {**os.environ, RECORDS_ENV: str(records_path), "PYTHONUNBUFFERED": "1"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                      env.get("PYTHONPATH")]))
    env.pop(API_KEY_ENV, None)
    if api_key:
        env[API_KEY_ENV] = api_key

    log_path = results_dir / "locust.log"
    cpu0 = _children_cpu()
    t0 = time.monotonic()
    with log_path.open("wb") as log:
        log.write(f"# perfgate: {' '.join(command)}\n".encode())
        log.flush()
        # Own session: the workers --processes forks share its group, so one killpg ends them all.
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=results_dir, start_new_session=True)
        timed_out = False
        try:
            returncode = (wait_polling(proc, timeout_s, RampWatch(log_path, stages, progress).poll) if ramp
                          else proc.wait(timeout=timeout_s))
        except subprocess.TimeoutExpired:
            timed_out = True
            returncode = _end_group(proc)
        except BaseException:  # Ctrl-C (KeyboardInterrupt) or a cancelled test: no orphan Locust
            _end_group(proc)
            raise
    wall_s = time.monotonic() - t0
    cpu_s = _children_cpu() - cpu0

    everything = load_records(records_path)
    measured = [r for r in everything if r.phase != "warmup"]
    warm = [r for r in everything if r.phase == "warmup"]
    metrics: dict[str, float] = {}
    if measured:
        start = min(r.scheduled for r in measured)
        end = max(max(t for t in (r.sent, r.end, r.closed) if t is not None) for r in measured)
        metrics = compute_metrics(measured, max(end - start, 1e-9), goodput_slos_ms=goodput_slos_ms)
        sends = max(r.sent for r in measured) - start
        metrics["achieved_rate"] = len(measured) / sends if sends > 0 else float(len(measured))
        if isinstance(load, OpenLoop):
            metrics["offered_rate"] = load.rate
            metrics["achieved_rate_ratio"] = min(1.0, metrics["achieved_rate"] / load.rate)
    csvs = {kind: results_dir / f"locust_{kind}.csv" for kind in ("stats", "failures", "exceptions", "stats_history")}
    result = LocustResult(records=measured, warmup_records=warm, metrics=metrics,
                          stats_csv={k: p for k, p in csvs.items() if p.is_file()}, returncode=returncode,
                          log=log_path, command=command, wall_s=wall_s, cpu_s=cpu_s,
                          invalid_reasons=_invalid_reasons(scenario, metrics, measured, mismatch_summary),
                          prompt_stream=stream.as_dict())
    if timed_out:
        raise LocustRunError(f"Locust ran past its {timeout_s:g} s limit and was stopped "
                             f"({len(everything)} records kept in {records_path})", result=result,
                             fix="raise timeout_s, or look for a stalled server in the log below:\n"
                                 + result.log_tail(20))
    if returncode not in (0, FAILED_REQUESTS_RC) and not everything:
        raise LocustRunError(f"Locust exited with code {returncode} before any request", result=result,
                             fix=f"read its log ({log_path}):\n" + result.log_tail(25))
    return result


def _invalid_reasons(scenario: Scenario, metrics: dict[str, float], records: list[RequestRecord],
                     mismatch_summary) -> list[str]:
    reasons: list[str] = []
    if not metrics.get("completed"):
        first = next((r.error_detail for r in records if r.error), "no request was sent")
        reasons.append(f"no request completed ({len(records)} sent); first error: {first}")
    lag = metrics.get("p99_send_lag_ms", 0.0)
    if isinstance(scenario.load, OpenLoop) and lag > scenario.self_check.max_p99_send_lag_ms:
        reasons.append(f"Locust users fell behind their schedule: P99 send lag {lag:.1f} ms > "
                       f"{scenario.self_check.max_p99_send_lag_ms:g} ms (more users, or --processes)")
    if metrics.get("token_count_mismatches"):
        reasons.append(f"{int(metrics['token_count_mismatches'])} request(s) served other token counts than "
                       "asked: " + "; ".join(mismatch_summary(records, 3)))
    return reasons


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _end_group(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> int:
    """SIGTERM Locust's group (it writes its CSVs and exits), then SIGKILL whatever is left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            code = proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        try:  # forked workers can outlive their master: the group goes with it
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return code
    return proc.returncode if proc.returncode is not None else -signal.SIGKILL
