"""perfgate's Locust LLM user: streams a scenario's requests, reports TTFT/ITL/E2E, writes raw records.

Import this only inside a Locust process (``locust -f perf_tests/locustfile.py``): importing locust
monkey-patches the interpreter through gevent. From pytest, use ``perfgate.load.locust_runner.run_locust``,
which runs Locust as a child process.

This module is the Locust glue: command-line options, the per-process ``LocustRun``
(``perfgate.load.locust_setup``: scenario, prepared requests, records file), distributed start-up, the ramp
shape and the user. Each request is streamed and parsed by the engine's SSE parser
(``perfgate.load.sse.read_lines``). Locust sees three request events per request: ``e2e`` (the request
itself; failures carry the error class), ``ttft`` and ``itl`` (the request's mean inter-token gap), all in
ms, for its UI and CSV. Locust rounds response times into buckets, so the numbers an SLO reads come from
the raw records each process writes to ``$PERFGATE_LOCUST_RECORDS`` (``RequestRecord`` fields, one JSON
line per request, flushed per line so a killed run keeps what it measured).

geventhttpclient's ``read(n)`` waits until ``n`` bytes have arrived, so Locust's ``iter_content(1024)``
would batch several small SSE events into one and stamp them all with the last one's arrival time; this
user reads line by line (``readline``), which returns as soon as a line is complete.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import sys
import time
from http.client import HTTPException
from typing import Any

import gevent
from locust import FastHttpUser, LoadTestShape, constant, events, runners, task
from locust.runners import MasterRunner, WorkerRunner

# Imported before Locust forks its --processes workers, so they share it instead of each importing it.
from transformers import AutoTokenizer  # noqa: F401

from perfgate._errors import ConfigError, PerfgateError
from perfgate.core.records import RequestRecord, RequestSpec
from perfgate.load.locust_runner import RECORDS_ENV, stage_at
from perfgate.load.locust_setup import LocustRun
from perfgate.load.scenario import OpenLoop
from perfgate.load.sse import StreamError, read_lines

log = logging.getLogger("perfgate.locust")


@events.init_command_line_parser.add_listener
def add_arguments(parser: Any) -> None:
    parser.add_argument("--perfgate-scenario", env_var="PERFGATE_SCENARIO", default="",
                        help="perfgate scenario: a name in scenarios/, or a .toml/.json file")
    parser.add_argument("--perfgate-model", env_var="PERFGATE_MODEL", default="",
                        help="served model name (default: the server's first model in /v1/models)")
    parser.add_argument("--perfgate-tokenizer", env_var="PERFGATE_TOKENIZER", default="",
                        help="the served model's tokenizer: a directory or synthetic:<name> "
                             "(default: the model's 'root' in /v1/models)")
    parser.add_argument("--perfgate-ramp", env_var="PERFGATE_RAMP", default="",
                        help="user ramp USERS:SPAWN_RATE:SECONDS,... (replaces --users/--spawn-rate/--run-time)")
    parser.add_argument("--perfgate-warmup-s", type=float, env_var="PERFGATE_WARMUP_S", default=0.0,
                        help="requests sent in the first N seconds are recorded as phase 'warmup'")
    parser.add_argument("--perfgate-prompt-pool", type=int, env_var="PERFGATE_PROMPT_POOL", default=256,
                        help="requests built before the test starts (more are built on the fly, as send lag)")
    parser.add_argument("--perfgate-prompt-nonce", env_var="PERFGATE_PROMPT_NONCE", default="",
                        help="the run's prompt nonce (default: a fresh one, logged): the same nonce and repeat "
                             "rebuild the same prompts, another gives prompts the server has not cached")
    parser.add_argument("--perfgate-prompt-repeat", type=int, env_var="PERFGATE_PROMPT_REPEAT", default=0,
                        help="the repeat index of the prompt stream (default %(default)s)")
    parser.add_argument("--perfgate-records", env_var=RECORDS_ENV, default="",
                        help="raw per-request records (.jsonl); --processes workers write <stem>.worker-<pid>")


def ramp_requested(argv: list[str] | None = None) -> bool:
    """Whether a ramp was asked for; the locustfile defines its LoadTestShape only then.

    Decided at import time, before Locust parses options: a shape class that exists always takes over
    from --users/--spawn-rate/--run-time, also in the web UI.
    """
    argv = sys.argv if argv is None else argv
    return bool(os.environ.get("PERFGATE_RAMP")) or any(
        a == "--perfgate-ramp" or a.startswith("--perfgate-ramp=") for a in argv)


RUN = LocustRun()


# Distributed runs: a worker connects to its master before Locust fires `init`, then prepares its prompts
# (tokenizer load: seconds) without answering heartbeats, and the master would start the test meanwhile.
# So the master waits for every worker's "ready" (or "failed") before starting, and tolerates the silence.
runners.HEARTBEAT_LIVENESS = max(runners.HEARTBEAT_LIVENESS, 60)
_READY, _FAILED = "perfgate_ready", "perfgate_failed"
_WORKERS_READY_TIMEOUT_S = 300.0


@events.init.add_listener
def _on_init(environment: Any, runner: Any = None, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None or not hasattr(opts, "perfgate_scenario"):
        return  # Locust used as a library without our command line
    runner = runner or environment.runner
    master, worker = isinstance(runner, MasterRunner), isinstance(runner, WorkerRunner)
    if master:
        replies: dict[str, str] = {}
        runner.register_message(_READY, lambda msg, **kw: replies.setdefault(msg.node_id, ""))
        runner.register_message(_FAILED, lambda msg, **kw: replies.setdefault(msg.node_id, str(msg.data)))
    try:
        RUN.configure(opts, environment.host, prepare=not master, worker=worker)
        LlmUser.network_timeout = RUN.scenario.request_timeout_s  # bounds a stalled stream
        if master and opts.headless:
            _wait_for_workers(replies, opts.expect_workers)
    except PerfgateError as exc:
        if worker:
            runner.send_message(_FAILED, str(exc))
            gevent.sleep(0.5)  # let the message leave before exiting
        sys.stderr.write(f"perfgate: {exc}\n")
        sys.stderr.flush()
        sys.exit(2)
    if worker:
        runner.send_message(_READY)
    # Preparing took seconds without yielding to gevent, whose loop caches "now": without this, timers
    # armed next (Locust's --run-time) would count the preparation and end the test early.
    gevent.get_hub().loop.update_now()


def _wait_for_workers(replies: dict[str, str], expected: int) -> None:
    deadline = time.monotonic() + _WORKERS_READY_TIMEOUT_S
    while len(replies) < expected:
        if errors := [e for e in replies.values() if e]:
            raise ConfigError(f"a worker could not prepare its requests: {errors[0]}")
        if time.monotonic() > deadline:
            raise ConfigError(f"only {len(replies)} of {expected} workers prepared their requests within "
                              f"{_WORKERS_READY_TIMEOUT_S:g} s", fix="read the workers' log lines above")
        gevent.sleep(0.2)
    if errors := [e for e in replies.values() if e]:
        raise ConfigError(f"a worker could not prepare its requests: {errors[0]}")
    log.info("perfgate: %d workers ready", len(replies))


@events.quitting.add_listener
def _on_quitting(**_: Any) -> None:
    RUN.close()


class RampShape(LoadTestShape):
    """Follows ``--perfgate-ramp`` stages, then stops the test. Subclassed by the locustfile when asked for."""

    abstract = True

    def tick(self) -> tuple[int, float] | None:
        stage = stage_at(RUN.stages, self.get_run_time())
        return None if stage is None else (stage.users, stage.spawn_rate)


def _discard(raw: Any) -> None:
    """Close a connection whose body was not read to the end (it must not go back to the pool)."""
    pool, sock = getattr(raw, "_pool", None), getattr(raw, "_sock", None)
    if pool is not None and sock is not None:
        pool.release_socket(sock)
        raw._sock = raw._pool = None


class LlmUser(FastHttpUser):
    """One simulated client: sends the scenario's next request as soon as its last one finished.

    For an open-loop scenario each user paces itself at ``rate / users`` with the scenario's arrival
    process; a request that cannot go out on time (the user's previous one is still streaming) shows as
    send lag, never as a silently lower rate.
    """

    wait_time = constant(0)
    connection_timeout = 10.0
    network_timeout = 600.0  # set from the scenario's request_timeout_s at init
    max_retries = 0
    concurrency = 1  # one request in flight per user

    def on_start(self) -> None:
        self._rng = random.Random()
        self._due: float | None = None

    def _scheduled(self) -> float:
        load = RUN.scenario.load if RUN.scenario else None
        now = time.perf_counter()
        if not isinstance(load, OpenLoop):
            return now
        rate = load.rate / RUN.users_target
        self._due = (now if self._due is None else self._due) + self._rng.gammavariate(
            load.burstiness, 1.0 / (rate * load.burstiness))
        if self._due > now:
            gevent.sleep(self._due - now)
        return self._due

    @task
    def generate(self) -> None:
        scheduled = self._scheduled()
        spec = next(RUN.specs)
        record = self.send(spec, scheduled)
        RUN.write(record)

    def send(self, spec: RequestSpec, scheduled: float) -> RequestRecord:
        """Stream ``spec``; report it to Locust; return its record (never raises, except GreenletExit)."""
        record = RequestRecord.for_spec(spec, scheduled=scheduled, phase=RUN.phase(scheduled))
        kind = "chat" if spec.chat else "completions"
        timeout_s = RUN.scenario.request_timeout_s if RUN.scenario else 600.0
        record.sent = time.perf_counter()
        try:
            with self.client.request("POST", spec.path, data=spec.body, headers=RUN.headers, stream=True,
                                     catch_response=True, name="e2e") as resp:
                self._read(resp, record, chat=spec.chat, deadline=record.sent + timeout_s)
                meta = resp.request_meta
                meta["request_type"] = kind
                if record.success:
                    meta["response_time"] = (record.end - record.sent) * 1000.0  # type: ignore[operator]
                    resp.success()
                else:
                    meta["response_time"] = (time.perf_counter() - record.sent) * 1000.0
                    resp.failure(f"{record.error}: {record.error_detail[:160]}")
        except Exception as exc:  # noqa: BLE001 - an unforeseen client error is still a record, never lost
            if record.error is None:
                record.fail("stream" if record.status else "connect", f"{type(exc).__name__}: {exc}")
        if record.success:
            fire = self.environment.events.request.fire
            fire(request_type=kind, name="ttft", response_time=record.ttft * 1000.0,  # type: ignore[operator]
                 response_length=0, exception=None, context={})
            if gaps := record.itl:
                fire(request_type=kind, name="itl", response_time=sum(gaps) / len(gaps) * 1000.0,
                     response_length=0, exception=None, context={})
        return record

    @staticmethod
    def _read(resp: Any, record: RequestRecord, *, chat: bool, deadline: float) -> None:
        raw = getattr(resp, "_response", None)
        error = getattr(resp, "error", None)
        record.status = raw.get_code() if raw is not None else 0
        if raw is None or (error is not None and not record.status):
            timeout = isinstance(error, (socket.timeout, TimeoutError, gevent.Timeout))
            record.fail("timeout" if timeout else "connect", f"{type(error).__name__}: {error}")
            return
        if record.status != 200:
            # geventhttpclient read the error body already (for its log); Locust keeps it here.
            body = (getattr(resp, "_cached_content", None) or b"")[:300].decode("utf-8", "replace")
            _discard(raw)
            record.fail("http_4xx" if 400 <= record.status < 500 else "http_5xx", f"HTTP {record.status}: {body}")
            return
        try:
            read_lines(lambda: raw.readline(b"\n"), record, chat=chat, deadline=deadline,
                       timeout_detail="request exceeded the scenario's request_timeout_s")
            if record.error == "timeout":
                _discard(raw)
        except StreamError as exc:
            _discard(raw)
            record.fail("stream", f"error event in the stream: {exc}")
        except (TimeoutError, gevent.Timeout) as exc:
            _discard(raw)
            record.fail("timeout", f"no data within {LlmUser.network_timeout:g} s: {type(exc).__name__}")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            _discard(raw)
            record.fail("stream", f"malformed SSE event: {type(exc).__name__}: {exc}")
        except (OSError, HTTPException) as exc:  # reset or closed mid-stream (HTTPConnectionClosed, parse errors)
            _discard(raw)
            record.fail("stream", f"{type(exc).__name__}: {exc}")
