"""Starting, watching and stopping a vLLM server; or attaching to one that is already running.

A started server runs in its own process group (vLLM spawns an engine-core process, and on the CPU build
more workers), its output goes to a log file that is kept with the results, and stopping it ends the whole
group and waits until every process is gone, so no process and no GPU memory outlive the run.
``AttachedServer`` has the same face for ``--vllm-url``.
"""

from __future__ import annotations

import atexit
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Protocol

import httpx

from perfgate._errors import ServerError
from perfgate.core.progress import Progress, silent
from perfgate.serving import watchdog
from perfgate.serving.gpu_holders import check_gpu_free, start_failure_fix
from perfgate.serving.profile import Profile
from perfgate.serving.startup_stages import StartupWatch
from perfgate.serving.watchdog import OWNER_ENV, RUN_ID_ENV
from perfgate.serving.watchdog import start_ticks as _start_ticks

_LIVE: set[VllmServer] = set()
# Session ids of the servers started by this interpreter (each starts its own session). vLLM renames its
# engine core and workers with setproctitle, which overwrites the environment /proc shows, so the
# PERFGATE_RUN_ID marker is lost on exactly the processes a crash orphans; their session id survives.
# Each id maps to its leader's start time, so a pid reused by another session later is not taken for ours.
_SESSIONS: dict[int, int] = {}


class Server(Protocol):
    base_url: str
    log_path: Path | None

    @property
    def metrics_url(self) -> str: ...
    def pids(self) -> set[int]: ...
    def alive(self) -> bool: ...
    def stop(self) -> None: ...
    @property
    def session_id(self) -> str: ...


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def tail(path: Path | None, lines: int = 40) -> str:
    if path is None or not path.exists():
        return ""
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        return "".join(deque(fh, maxlen=lines)).rstrip()


def descendants(root: int) -> set[int]:
    """``root`` and every process below it, read from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode(errors="replace")
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid in found:
            continue
        found.add(pid)
        todo.extend(children.get(pid, ()))
    return found


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().decode(errors="replace").rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (OSError, IndexError):
        return False


class VllmServer:
    """One vLLM OpenAI-compatible server started from a profile."""

    def __init__(self, profile: Profile, model_path: str, *, log_path: Path, port: int | None = None,
                 api_key: str | None = None, python: str = sys.executable,
                 extra_env: dict[str, str] | None = None, progress: Progress = silent) -> None:
        self.profile = profile
        self.progress = progress  # start stages, read from the log while wait_healthy polls
        self.model_path = model_path
        self.log_path = Path(log_path)
        self.host = profile.host
        self.port = port
        self._api_key = api_key
        self._python = python
        self._extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at: float | None = None
        self.healthy_after_s: float | None = None
        self._known_pids: set[int] = set()

    # -- the common face -------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def metrics_url(self) -> str:
        return self.base_url + "/metrics"

    @property
    def command(self) -> list[str]:
        # The API key goes through the environment (VLLM_API_KEY), never argv: argv is visible in `ps`,
        # in the log header and in reports.
        return self.profile.command(self.model_path, port=self.port, python=self._python)

    def pids(self) -> set[int]:
        if self.proc is None:
            return set()
        live = {p for p in descendants(self.proc.pid) if _pid_alive(p)}
        self._known_pids |= live
        return live

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def session_id(self) -> str:
        """Which server process this is: pid and start ticks (a restart is a new session)."""
        if self.proc is None:
            return ""
        return f"{self.profile.name}:{self.proc.pid}-{_SESSIONS.get(self.proc.pid, 0)}"

    def restart(self, log_path: Path) -> float:
        """Stop this server and start it again (a new server session), logging to ``log_path``."""
        self.stop()
        self.log_path = Path(log_path)
        self.start()
        return self.wait_healthy()

    def log_tail(self, lines: int = 40) -> str:
        return tail(self.log_path, lines)

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> VllmServer:
        if self.port is None:
            self.port = free_port(self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1")
        elif port_in_use(self.host, self.port):
            raise ServerError(f"port {self.port} on {self.host} is already in use",
                              source=f"profile {self.profile.name}",
                              fix="stop whatever listens there, or let perfgate pick a free port")
        check_gpu_free(self.profile)  # before vLLM runs: a held GPU is refused with who holds it
        owner = os.getpid()
        env = {**os.environ, **self.profile.env, **self._extra_env,
               OWNER_ENV: f"{owner}:{_start_ticks(owner) or 0}"}
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("PYTHONUNBUFFERED", "1")
        if self._api_key:
            env["VLLM_API_KEY"] = self._api_key
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            log.write(f"# perfgate: profile {self.profile.name}\n# {' '.join(self.command)}\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            # The watchdog stops the server when this process dies in any way (SIGKILL included).
            argv = self.command if os.environ.get(watchdog.NO_WATCHDOG_ENV) == "1" else watchdog.command(
                owner, self.command)
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        _LIVE.add(self)
        _SESSIONS[self.proc.pid] = _start_ticks(self.proc.pid) or 0
        self._stages = StartupWatch(self.profile.name, self.log_path, self.progress, self.started_at,
                                    pid=self.proc.pid)
        return self

    def wait_healthy(self, timeout_s: float | None = None) -> float:
        """Poll ``/health`` until 200; returns seconds from launch. Fails at once if the server exits."""
        assert self.proc is not None and self.started_at is not None, "start() first"
        timeout_s = self.profile.startup_timeout_s if timeout_s is None else timeout_s
        deadline = self.started_at + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while True:
                code = self.proc.poll()
                if code is not None:
                    self.stop()
                    raise ServerError(
                        f"vLLM exited with code {code} during start-up{_why(self.log_path)}",
                        source=f"profile {self.profile.name}", log_tail=self.log_tail(30),
                        log_path=str(self.log_path),
                        fix=start_failure_fix(self.log_tail(400)))
                self.pids()  # remember the engine processes while they are easy to find
                self._stages.poll()
                try:
                    if client.get(self.base_url + "/health").status_code == 200:
                        self.healthy_after_s = time.monotonic() - self.started_at
                        self._stages.healthy(self.healthy_after_s)
                        return self.healthy_after_s
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    self.stop()
                    raise ServerError(
                        f"vLLM was not healthy {timeout_s:.0f} s after launch", source=f"profile {self.profile.name}",
                        log_tail=self.log_tail(30), log_path=str(self.log_path),
                        fix="raise startup-timeout-s in the profile if the start is just slow, or read the log")
                time.sleep(0.5)

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM the process group, then SIGKILL what is left after ``grace_s``; wait for every pid."""
        if self.proc is None:
            return
        pids = self.pids() | {self.proc.pid}
        _signal_group(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_pid_alive(p) for p in pids | self._known_pids):
            self.proc.poll()
            time.sleep(0.2)
        leftover = {p for p in pids | self._known_pids if _pid_alive(p)}
        if leftover:
            _signal_group(self.proc.pid, signal.SIGKILL)
            for pid in leftover:  # children that left the group (leaves first)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        end = time.monotonic() + 10
        while time.monotonic() < end and any(_pid_alive(p) for p in pids | self._known_pids):
            time.sleep(0.1)
        _LIVE.discard(self)

    def __enter__(self) -> VllmServer:
        self.start()
        try:
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class AttachedServer:
    """A server perfgate did not start (``--vllm-url``): checked at attach time, never stopped."""

    def __init__(self, base_url: str, *, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.log_path: Path | None = None
        self._api_key = api_key
        self.model_ids: list[str] = []
        self.healthy_after_s: float | None = None
        self._process_start: str | None = None

    @property
    def metrics_url(self) -> str:
        return self.base_url + "/metrics"

    def pids(self) -> set[int]:
        return set()

    def alive(self) -> bool:
        try:
            return httpx.get(self.base_url + "/health", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        pass

    @property
    def session_id(self) -> str:
        """The attached server's process start time from /metrics: a restart there is a new session."""
        return f"attached:{self.base_url}:{self._process_start or '?'}"

    def check(self, timeout_s: float = 10.0) -> AttachedServer:
        """Fail at session start if the URL is down or is not a vLLM OpenAI server."""
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        fix = "start vLLM there (`python -m vllm.entrypoints.openai.api_server ...`) or fix --vllm-url"
        try:
            with httpx.Client(timeout=timeout_s, headers=headers) as client:
                health = client.get(self.base_url + "/health")
                models = client.get(self.base_url + "/v1/models")
                metrics = client.get(self.base_url + "/metrics")
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach {self.base_url}: {type(exc).__name__}: {exc}", fix=fix) from None
        if health.status_code != 200:
            raise ServerError(f"{self.base_url}/health answered HTTP {health.status_code}", fix=fix)
        if models.status_code == 401:
            raise ServerError(f"{self.base_url} wants an API key", fix="set --perfgate-api-key-env to the variable holding it")
        try:
            self.model_ids = [m["id"] for m in models.json()["data"]]
        except (ValueError, KeyError, TypeError):
            raise ServerError(f"{self.base_url}/v1/models is not an OpenAI model list: this is not a vLLM server",
                              fix=fix) from None
        if metrics.status_code != 200 or "vllm:" not in metrics.text:
            raise ServerError(f"{self.base_url}/metrics has no vllm: metrics: this is not a vLLM server", fix=fix)
        start = re.search(r"^process_start_time_seconds\s+(\S+)", metrics.text, re.MULTILINE)
        self._process_start = start.group(1) if start else None
        return self


# vLLM's log prefix, "(EngineCore pid=12) ERROR 11-26 03:56:58 [core.py:1510] ", before an exception line.
_LOG_PREFIX = re.compile(r"^(?:\([^)]*\)\s+)?(?:[A-Z]+\s+\d\d-\d\d\s+[\d:.]+\s+\[[^\]]*\]\s+)?")
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit): \S")


def _why(log_path: Path) -> str:
    """vLLM's own error line, pulled out of its log, so it leads the message.

    The root cause comes first: a worker's ``ValueError: ...`` is re-raised by the engine core and then by
    the API server as ``RuntimeError: Engine core initialization failed. See root cause above``, so the
    first exception line is the one that says what to fix.
    """
    text = tail(log_path, 400)
    for line in text.splitlines():
        body = _LOG_PREFIX.sub("", line.strip(), count=1)
        if _EXCEPTION_LINE.match(body):
            return f": {body[:600]}"
    for line in reversed(text.splitlines()):
        stripped = line.strip()
        if any(key in stripped for key in ("Error:", "error:", "ERROR", "Exception")) and len(stripped) < 600:
            return f": {stripped}"
    return ""


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@atexit.register
def _stop_all() -> None:
    """Last line of defence: whatever ends the interpreter, no server outlives it."""
    for server in list(_LIVE):
        server.stop(grace_s=10.0)


def leftover_processes(run_id: str) -> set[int]:
    """Live processes launched by this run (marked with PERFGATE_RUN_ID in their environment).

    The marker survives re-parenting, so an engine process orphaned by a crash is still found; processes
    whose environment vLLM overwrote (setproctitle) are found by the session of the server that spawned them.
    """
    marker = f"{RUN_ID_ENV}={run_id}".encode()
    me = os.getpid()
    found: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                ours = marker in fh.read().split(b"\0")
            if not ours and _SESSIONS:
                with open(f"/proc/{entry}/stat", "rb") as fh:
                    fields = fh.read().rsplit(b")", 1)[1].split()
                sid, started = int(fields[3]), int(fields[19])
                if sid in _SESSIONS:
                    # If the leader's pid now belongs to a newer process, only what started before it is ours.
                    leader = _start_ticks(sid)
                    ours = leader is None or leader == _SESSIONS[sid] or started < leader
        except (OSError, IndexError, ValueError):
            continue
        if ours and _pid_alive(int(entry)):
            found.add(int(entry))
    return found


def reap(pids: set[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
