"""Fault matrix (issue 7), faults during a session, on real vLLM (CPU build): the server killed (8) or hung
(9) mid-load, SIGINT/SIGTERM to pytest during start-up and during load (13), the API key (18), binding
(19), scenario files missing or invalid through the fixture (2), and the session-end leak check.

One child session (``faulted_session``) starts two profiles once and carries rows 2, 8, 9, 13 (SIGTERM
during load), 18 and 19; its tests provoke the faults from inside (SIGSTOP, SIGKILL of the engine core)
and the parent sends the SIGTERM. Each parent test below checks one row against that run's outcome: its
JUnit file, its results directory and the process table. Real vLLM starts in this module: three (plus two
start-ups interrupted after the engine core spawned). docs/faults.md maps every row to its tests.
"""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path

import pytest

slow_cpu = [pytest.mark.cpu, pytest.mark.slow]

API_KEY = "sk-perfgate-fault-" + uuid.uuid4().hex
KEY_ENV = "FAULT_API_KEY"

# What the child's tests share: how to find the engine core, and how to act mid-load (after the server
# finished n more requests, read from vLLM's own counter) rather than after a guessed delay.
CHILD_COMMON = '''
import asyncio, json, os, signal
from pathlib import Path

import httpx
import pytest

FAULT_DIR = Path(os.environ["FAULT_DIR"])


def engine_core(server):
    for pid in sorted(server.pids()):
        try:
            if b"EngineCore" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return pid
        except OSError:
            pass
    raise AssertionError(f"no VLLM::EngineCore among the server's processes {sorted(server.pids())}")


async def finished_requests(client, base_url):
    text = (await client.get(base_url + "/metrics")).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


def after_requests(server, n, action):
    """A task that runs ``action`` once ``server`` has finished ``n`` more requests (so: mid-load)."""
    async def watch():
        async with httpx.AsyncClient(timeout=10) as client:
            start = await finished_requests(client, server.base_url)
            while await finished_requests(client, server.base_url) < start + n:
                await asyncio.sleep(0.1)
        action()
        return True
    return asyncio.create_task(watch())


def fired(task):
    done = task.done() and not task.cancelled() and task.exception() is None
    task.cancel()
    return done


def save_listening(server, name):
    tables = [Path(p).read_text() for p in ("/proc/net/tcp", "/proc/net/tcp6") if Path(p).exists()]
    cmd = Path(f"/proc/{server.proc.pid}/cmdline").read_bytes().decode().split("\\0")
    (FAULT_DIR / name).write_text(json.dumps({"port": server.port, "tables": tables, "cmdline": cmd}))


async def long_load_then_signal(server, perfgate):
    """Drive a long load; tell the parent (file "loading") once it is under way, so it sends its signal."""
    watcher = after_requests(server, 2, lambda: (FAULT_DIR / "loading").write_text("1"))
    try:
        await perfgate.measure("fault-long")
    finally:
        watcher.cancel()
'''

FAULTED_TESTS = CHILD_COMMON + '''
from perfgate._errors import ServerError
from perfgate.serving.server import AttachedServer

KEY = os.environ["FAULT_API_KEY"]


@pytest.mark.profiles("fault-a")
async def test_key_and_loopback(vllm_server, perfgate):
    server = vllm_server.server
    save_listening(server, "bind-a.json")
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        assert (await client.get("/v1/models")).status_code == 401  # vLLM got the key...
        ok = await client.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200
    AttachedServer(server.base_url, api_key=KEY).check()  # a real vLLM passes the --vllm-url check
    with pytest.raises(ServerError, match="wants an API key"):
        AttachedServer(server.base_url).check()
    phase = await perfgate.measure("fault-quick")  # ...and so did every client: warm-up, load, /metrics
    assert phase.metrics["completed"] == 6 and phase.metrics["failed"] == 0, phase.metrics


def test_failure_quoting_the_key():
    assert os.environ["FAULT_API_KEY"] == "what the test expected"  # fails; pytest would print the key


@pytest.mark.profiles("fault-a")
async def test_hung_server(vllm_server, perfgate):
    group = vllm_server.server.proc.pid
    watcher = after_requests(vllm_server.server, 2, lambda: os.killpg(group, signal.SIGSTOP))
    try:
        await perfgate.measure("fault-stall", allow_invalid=True)
    finally:
        os.killpg(group, signal.SIGCONT)  # the next test uses this server again
        if fired(watcher):
            (FAULT_DIR / "stopped").write_text("1")


@pytest.mark.profiles("fault-a")
async def test_engine_killed(vllm_server, perfgate):
    core = engine_core(vllm_server.server)
    watcher = after_requests(vllm_server.server, 3, lambda: os.kill(core, signal.SIGKILL))
    try:
        await perfgate.measure("fault-kill")
    finally:
        watcher.cancel()


@pytest.mark.profiles("fault-a")
async def test_after_the_kill(perfgate):
    await perfgate.measure("fault-quick")


@pytest.mark.profiles("fault-b")
async def test_next_profile(perfgate):
    phase = await perfgate.measure("fault-quick")
    assert phase.metrics["completed"] == 6


@pytest.mark.profiles("fault-b")
async def test_missing_scenario(perfgate):
    await perfgate.measure("no-such-scenario")


@pytest.mark.profiles("fault-b")
async def test_broken_scenario(perfgate):
    await perfgate.measure("fault-broken")


@pytest.mark.profiles("fault-b")
async def test_interrupted(vllm_server, perfgate):
    await long_load_then_signal(vllm_server.server, perfgate)
'''


def _scenario(fault_tools, *, requests: int, concurrency: int, timeout_s: float = 120, output: int = 16) -> str:
    return (fault_tools.QUICK_SCENARIO.replace("num_requests = 6", f"num_requests = {requests}")
            .replace("concurrency = 2", f"concurrency = {concurrency}")
            .replace("request_timeout_s = 120", f"request_timeout_s = {timeout_s}")
            .replace("value = 16", f"value = {output}"))


def _scenarios(fault_tools) -> dict[str, str]:
    return {
        "fault-quick": fault_tools.QUICK_SCENARIO,
        # Stalls are cut by a 3 s request timeout: bounded, counted as errors_timeout. Long enough requests
        # (128 tokens out, 20 requests) that the stop after the 2nd completion lands mid-load on a fast machine too.
        "fault-stall": _scenario(fault_tools, requests=20, concurrency=2, timeout_s=3, output=128),
        "fault-kill": _scenario(fault_tools, requests=40, concurrency=4, output=32),
        # Far longer than the time to the signal (a few requests): it is interrupted, never completes.
        "fault-long": _scenario(fault_tools, requests=400, concurrency=2, output=32),
        "fault-broken": 'description = "broken on purpose"\nnum_requests = 3\n[load\nkind = "closed"\n',
    }


def _secrets_in(paths: list[Path], secret: str) -> list[str]:
    hits = []
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        hits += [str(p) for p in files if secret.encode() in p.read_bytes()]
    return hits


def _phase(results_dir: Path, stem: str) -> dict:
    return json.loads((results_dir / "phases" / f"{stem}.json").read_text())


def _records(results_dir: Path, stem: str) -> list[dict]:
    return json.loads((results_dir / "records" / f"{stem}.json").read_text())


@pytest.fixture(scope="module")
def faulted_session(module_child_pytest, fault_tools):
    """The child session: profiles fault-a and fault-b, the API key from an env var, SIGTERM mid-load."""
    child = module_child_pytest(
        FAULTED_TESTS,
        profiles={"fault-a": fault_tools.tiny_profile(), "fault-b": fault_tools.tiny_profile()},
        scenarios=_scenarios(fault_tools), env={KEY_ENV: API_KEY})
    child.start(f"--perfgate-api-key-env={KEY_ENV}")
    child.wait_for("the interrupted test's load", lambda: (child.fault_dir / "loading").exists(), timeout_s=1200)
    child.signal(signal.SIGTERM)
    result = child.wait(timeout_s=180)
    return child, result


# --- row 8: engine core SIGKILLed mid-load -----------------------------------------------------------

@pytest.mark.cpu
@pytest.mark.slow
def test_engine_killed_mid_load_fails_saves_and_moves_on(faulted_session) -> None:
    _, result = faulted_session
    killed = result.case("test_engine_killed[fault-a]")
    assert killed.outcome == "failed", killed
    assert "the vLLM server for profile fault-a" in killed.message, killed
    assert "(during the phase)" in killed.message
    # Depending on how far vLLM's shutdown got: exited, closed its socket, or still answering 5xx.
    assert any(why in killed.message for why in ("is not running", "does not answer /health",
                                                 "answers /health with HTTP 5")), killed
    assert f"partial results saved in {result.results_dir}" in killed.message
    # Partial results: the requests finished before the kill and the ones it broke, and the phase.
    records = _records(result.results_dir, "fault-a__fault-kill__r0")
    assert sum(1 for r in records if r["error"] is None) >= 3
    assert any(r["error"] for r in records), "no request saw the kill"
    phase = _phase(result.results_dir, "fault-a__fault-kill__r0")
    assert phase["metrics"]["failed"] >= 1
    # The rest of that profile fails fast, and the next profile starts afresh and serves.
    after = result.case("test_after_the_kill[fault-a]")
    assert after.outcome == "failed" and "(before the phase)" in after.message, after
    assert result.case("test_next_profile[fault-b]").outcome == "passed"


# --- row 10, on real vLLM: the dying server's HTTP 500s are counted by class, and the error-rate SLO fails

@pytest.mark.cpu
@pytest.mark.slow
def test_dying_servers_5xx_are_counted_per_class_and_fail_the_error_rate_slo(faulted_session) -> None:
    from collections import Counter

    from perfgate.core.phase import PhaseResult
    from perfgate.verdict.slo import FAIL
    from perfgate.verdict.slo_files import load_slos

    _, result = faulted_session
    phase = PhaseResult.from_dict(_phase(result.results_dir, "fault-a__fault-kill__r0"))
    records = _records(result.results_dir, "fault-a__fault-kill__r0")
    by_class = Counter(r["error"] for r in records if r["error"])
    m = phase.metrics
    for cls in ("connect", "timeout", "http_4xx", "http_5xx", "stream"):
        assert m[f"errors_{cls}"] == by_class[cls], (cls, m, by_class)
    assert m["errors_http_5xx"] >= 1, by_class  # vLLM answers 500 once its engine core is dead
    assert m["error_rate"] == pytest.approx(m["failed"] / (m["failed"] + m["completed"]))
    verdict = load_slos("cpu", "fault-a", "fault-kill").evaluate(phase)  # the shipped cpu set ("*/*")
    error_row = next(r for r in verdict.rows if r.metric == "error_rate")
    assert error_row.status == FAIL and not verdict.passed


# --- row 9: server hung (SIGSTOP) mid-load ---------------------------------------------------------------

@pytest.mark.cpu
@pytest.mark.slow
def test_hung_server_is_bounded_by_request_timeouts(faulted_session) -> None:
    child, result = faulted_session
    assert (child.fault_dir / "stopped").exists(), "the server was not stopped mid-load"
    hung = result.case("test_hung_server[fault-a]")
    # measure came back (requests cut by their timeout) and the test fails, naming the hung server.
    assert hung.outcome == "failed", hung
    assert "the vLLM server for profile fault-a does not answer /health" in hung.message, hung
    assert "(during the phase)" in hung.message
    metrics = _phase(result.results_dir, "fault-a__fault-stall__r0")["metrics"]
    assert metrics["completed"] >= 2 and metrics["errors_timeout"] >= 1, metrics
    timeouts = [r for r in _records(result.results_dir, "fault-a__fault-stall__r0") if r["error"] == "timeout"]
    assert timeouts and all("3" in r["error_detail"] or "Timeout" in r["error_detail"] for r in timeouts)


# --- row 18: the API key ----------------------------------------------------------------------------------

@pytest.mark.cpu
@pytest.mark.slow
def test_api_key_reaches_vllm_and_every_client_and_nothing_else(faulted_session) -> None:
    child, result = faulted_session
    keyed = result.case("test_key_and_loopback[fault-a]")
    assert keyed.outcome == "passed", keyed  # 401 without the key, 200 with it, the load all completed
    quoted = result.case("test_failure_quoting_the_key")
    assert quoted.outcome == "failed" and "***" in quoted.message, quoted  # redacted, still readable
    # Nowhere: server logs, phases, records, timelines, reports, session.json, JUnit, terminal output.
    assert (result.results_dir / "servers" / "fault-a.log").exists()
    assert _secrets_in([result.results_dir, result.junit, child.log], API_KEY) == []


# --- row 19: loopback by default ----------------------------------------------------------------------

@pytest.mark.cpu
@pytest.mark.slow
def test_server_listens_on_loopback_only(faulted_session, fault_tools) -> None:
    child, _ = faulted_session
    seen = json.loads((child.fault_dir / "bind-a.json").read_text())
    cmd = seen["cmdline"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert fault_tools.listening_sockets(seen["port"], seen["tables"]) == ["127.0.0.1"]


# --- row 2, through the fixture: scenario missing or invalid TOML -------------------------------------

@pytest.mark.cpu
@pytest.mark.slow
def test_scenario_file_errors_through_the_fixture(faulted_session) -> None:
    child, result = faulted_session
    missing = result.case("test_missing_scenario[fault-b]")
    assert missing.outcome == "failed" and "no scenario named 'no-such-scenario'" in missing.message, missing
    assert "fix: use one of:" in missing.message and "fault-quick" in missing.message
    broken = result.case("test_broken_scenario[fault-b]")
    assert broken.outcome == "failed", broken
    assert f"{child.scenarios_dir / 'fault-broken.toml'}: invalid TOML" in broken.message
    assert "line 3" in broken.message


# --- row 13: SIGTERM during load (this session), SIGINT during load and both during start-up (below) ----

def _assert_interrupted_cleanly(result, profile: str) -> None:
    assert result.returncode == 2, result.output[-4000:]  # pytest's "interrupted"
    assert "KeyboardInterrupt" in result.output
    assert result.leftovers == {}, f"processes outlived the interrupted session: {result.leftovers}"
    assert "left running at session end" not in result.output
    session = json.loads((result.results_dir / "session.json").read_text())
    assert profile in [s["profile"] for s in session["servers"]]


@pytest.mark.cpu
@pytest.mark.slow
def test_sigterm_during_load_reaps_and_writes_results(faulted_session) -> None:
    _, result = faulted_session
    _assert_interrupted_cleanly(result, "fault-b")
    records = _records(result.results_dir, "fault-b__fault-long__r0")
    assert sum(1 for r in records if r["error"] is None) >= 2  # what finished before the signal is kept
    assert len(records) < 400
    assert _phase(result.results_dir, "fault-b__fault-long__r0")["valid"] is False


SIGINT_DURING_LOAD = CHILD_COMMON + '''
@pytest.mark.profiles("fault-open")
async def test_interrupted(vllm_server, perfgate):
    save_listening(vllm_server.server, "bind-open.json")
    await long_load_then_signal(vllm_server.server, perfgate)
'''


@pytest.mark.cpu
@pytest.mark.slow
def test_sigint_during_load_reaps_and_writes_results(child_pytest, fault_tools) -> None:
    """Ctrl-C mid-load. The profile also sets host = "0.0.0.0": row 19's "unless a profile says otherwise"."""
    child = child_pytest(SIGINT_DURING_LOAD, profiles={"fault-open": fault_tools.tiny_profile(host="0.0.0.0")},
                         scenarios=_scenarios(fault_tools))
    child.start()
    child.wait_for("the load", lambda: (child.fault_dir / "loading").exists(), timeout_s=900)
    child.signal(signal.SIGINT)
    result = child.wait(timeout_s=180)
    _assert_interrupted_cleanly(result, "fault-open")
    records = _records(result.results_dir, "fault-open__fault-long__r0")
    assert sum(1 for r in records if r["error"] is None) >= 2
    assert (result.results_dir / "phases" / "fault-open__fault-long__r0.json").exists()
    seen = json.loads((child.fault_dir / "bind-open.json").read_text())
    assert fault_tools.listening_sockets(seen["port"], seen["tables"]) == ["0.0.0.0"]


STARTUP_ONLY = '''
import pytest

@pytest.mark.profiles("fault-start")
def test_never_gets_its_server(vllm_server):
    pass
'''


@pytest.mark.cpu
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_startup_reaps_the_server(child_pytest, fault_tools, sig: signal.Signals) -> None:
    """The signal arrives once vLLM has spawned its engine core (the process an interrupt would orphan)."""
    child = child_pytest(STARTUP_ONLY, profiles={"fault-start": fault_tools.tiny_profile()})
    child.start()
    child.wait_for("vLLM's engine core", lambda: any(
        "EngineCore" in cmd for cmd in child.processes().values()), timeout_s=600)
    child.signal(sig)
    result = child.wait(timeout_s=120)
    _assert_interrupted_cleanly(result, "fault-start")
    assert (result.results_dir / "servers" / "fault-start.log").exists()


# --- the session-end check: a leaked process fails the session, named by pid -----------------------------

LEAKY = '''
import os, subprocess, sys
from pathlib import Path

def test_leaks_a_process(request):
    env = {**os.environ, "PERFGATE_RUN_ID": request.config.perfgate.run_id}
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], env=env,
                            start_new_session=True)
    Path(os.environ["FAULT_DIR"], "leaked.pid").write_text(str(proc.pid))
'''


def test_session_end_check_fails_the_run_and_names_the_pids(child_pytest, fault_tools) -> None:
    child = child_pytest(LEAKY)
    result = child.run(timeout_s=120)
    pid = int((child.fault_dir / "leaked.pid").read_text())
    assert result.case("test_leaks_a_process").outcome == "passed"
    assert result.returncode == 1, result.output[-3000:]  # the test passed; the session did not
    assert "vLLM processes were left running at session end and were killed" in result.output
    assert str(pid) in result.output
    assert result.leftovers == {}  # the plugin killed it, not this test's safety net


def test_leftover_check_finds_orphans_that_renamed_themselves(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM's engine core and workers rename themselves (setproctitle), which wipes the environment /proc
    shows and with it the PERFGATE_RUN_ID marker. Orphaned, such a process is still found: by the session
    its server started. Here a launcher stands in for vLLM: it leaves a renamed child behind and exits.
    The watchdog would sweep that orphan itself (issue 13), so it is off here: this is the check behind it."""
    monkeypatch.setenv("PERFGATE_TEST_NO_WATCHDOG", "1")
    import os
    import stat
    import sys
    import time

    from perfgate.serving.profile import load_profile
    from perfgate.serving.server import RUN_ID_ENV, VllmServer, leftover_processes

    pid_file = tmp_path / "orphan.pid"
    launcher = tmp_path / "fake-vllm"
    code = "import setproctitle, time; setproctitle.setproctitle('VLLM::EngineCore'); time.sleep(600)"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" -c "{code}" &\necho $! > "{pid_file}"\nexit 0\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IEXEC)
    run_id = "orphan-test-" + uuid.uuid4().hex
    server = VllmServer(load_profile("cpu-tiny"), "/m", log_path=tmp_path / "s.log", python=str(launcher),
                        extra_env={RUN_ID_ENV: run_id})
    server.start()
    orphan = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text().strip() and server.proc.poll() is not None:
                orphan = int(pid_file.read_text())
                if Path(f"/proc/{orphan}/cmdline").read_bytes().startswith(b"VLLM::EngineCore"):
                    break
            time.sleep(0.1)
        assert orphan is not None, "the fake launcher did not leave its renamed child behind"
        environ = Path(f"/proc/{orphan}/environ").read_bytes()
        assert f"{RUN_ID_ENV}={run_id}".encode() not in environ  # the marker really is gone
        assert orphan in leftover_processes(run_id)
    finally:
        if orphan is not None:
            os.kill(orphan, signal.SIGKILL)
        server.stop(grace_s=5)
