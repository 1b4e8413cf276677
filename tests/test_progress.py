"""Progress lines (issue 14): a server's start stages, each phase's start and result, Locust's ramp stages.

The stage matcher is checked on real vLLM logs (tests/data/vllm-logs/: the CPU build 0.32.0 and vLLM 0.25.1
on an H200); the pytest writer's verbosity rules (-q, -qq, -s) through pytester with a stand-in server that
replays the real CPU log (no vLLM start); and the whole path once on real vLLM (CPU build): a child pytest
whose terminal output must show the start stages, then each phase's start and result lines, in order.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpcore  # noqa: F401  (see stub_suite)
import pytest

from conftest import pytester_suite
from perfgate.core.phase import PhaseResult
from perfgate.core.progress import LineFollower
from perfgate.load.locust_runner import parse_ramp, run_locust
from perfgate.load.ramp_progress import RampWatch, wait_polling
from perfgate.load.scenario import load_scenario
from perfgate.run.phase_lines import phase_result_line, phase_started_line
from perfgate.serving.startup_stages import (
    COMPILED,
    CUDA_GRAPHS,
    ENGINE_READY,
    KV_CACHE,
    WEIGHTS,
    StartupWatch,
    match_stage,
)

pytest_plugins = ["pytester"]

LOGS = Path(__file__).parent / "data" / "vllm-logs"
CPU_LOG = LOGS / "cpu-0.32.0-cpu-tiny.log"
EAGER_LOG = LOGS / "cpu-0.32.0-eager.log"
H200_LOG = LOGS / "h200-0.25.1-optimized.log"
LOCUST_LOG = LOGS / "locust-2.47.0-ramp-2-2-10-4-2-10.log"


def stages_in(path: Path) -> list[tuple[str, str]]:
    """Every (stage, detail) the matcher finds in a log, in log order."""
    found = [match_stage(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return [(f.stage, f.detail) for f in found if f is not None]


def replay(path: Path) -> list[str]:
    """The progress lines a StartupWatch says for a whole log (read at 1.0 s, healthy at 2.0 s)."""
    said: list[str] = []
    watch = StartupWatch("p", path, lambda line, **_: said.append(line), 0.0, clock=lambda: 1.0)
    watch.poll()
    watch.healthy(2.0)
    return said


# --- the stage matcher, on real logs -------------------------------------------------------------------

def test_cpu_build_log_gives_weights_compile_kv_and_engine_in_order() -> None:
    found = stages_in(CPU_LOG)
    assert [stage for stage, _ in found] == [WEIGHTS, COMPILED, KV_CACHE, ENGINE_READY]
    details = dict(found)
    assert details[KV_CACHE] == "1,048,576 tokens (CPU), 512.00x concurrency at 2,048 tokens"
    assert details[ENGINE_READY] == "engine init 12.4 s"
    assert details[COMPILED] == "compile warm-up done"


def test_h200_log_gives_every_gpu_stage_with_vllms_own_figures() -> None:
    found = stages_in(H200_LOG)
    assert [stage for stage, _ in found] == [WEIGHTS, COMPILED, KV_CACHE, CUDA_GRAPHS, ENGINE_READY]
    details = dict(found)
    assert details[WEIGHTS] == "7.64 GiB in 2.2 s"
    assert details[COMPILED] == "torch.compile 28.1 s"
    assert details[KV_CACHE] == "853,360 tokens (GPU)"
    assert details[CUDA_GRAPHS] == "in 4 s, 0.61 GiB"


@pytest.mark.parametrize("line", [
    "(Worker pid=21479) INFO 12-01 11:24:40 [base_loader.py:82] Initializing model took 0.157263 seconds",
    "(EngineCore pid=790) INFO 12-01 12:13:29 [gpu_worker.py:538] Available KV cache memory: 117.19 GiB",
    ("(EngineCore pid=790) INFO 12-01 12:13:29 [kv_cache_utils.py:2147] Maximum concurrency for 262,144 tokens "
     "per request: 3.26x"),
    '(APIServer pid=662) INFO:     127.0.0.1:41418 - "GET /health HTTP/1.1" 200 OK',
    ("(APIServer pid=662) INFO 12-01 12:14:10 [loggers.py:273] Engine 000: Avg prompt throughput: 247.7 tokens/s, "
     "GPU KV cache usage: 0.5%"),
])
def test_lines_that_mark_no_stage_match_nothing(line: str) -> None:
    assert match_stage(line) is None


def test_other_wordings_of_the_same_stages() -> None:
    # vLLM 0.32's GPU runner says "GiB memory"; the default loader with real weights; older torch.compile.
    assert match_stage("Model loading took 7.6 GiB memory and 3.000000 seconds").detail == "7.6 GiB in 3.0 s"
    assert match_stage("Loading weights took 12.34 seconds").stage == WEIGHTS
    assert match_stage("torch.compile takes 30.10 s in total").detail == "torch.compile 30.1 s"


def test_watch_reports_each_stage_once_with_seconds_since_launch() -> None:
    said = replay(H200_LOG)
    assert said[0].startswith("p server start    0.0 s  launch: log ")
    assert said[1:] == [
        "p server start    1.0 s  weights loaded: 7.64 GiB in 2.2 s",
        "p server start    1.0 s  compiled: torch.compile 28.1 s",
        "p server start    1.0 s  KV cache sized: 853,360 tokens (GPU)",
        "p server start    1.0 s  CUDA graphs captured: in 4 s, 0.61 GiB",
        "p server start    1.0 s  engine ready: engine init 50.6 s",
        "p server start    2.0 s  healthy: /health answers 200",
    ]


def test_eager_cpu_start_implies_the_weights_and_says_compile_was_not_seen() -> None:
    assert EAGER_LOG.is_file()
    said = replay(EAGER_LOG)
    stages = [re.search(r" s  ([^:]+)", line)[1] for line in said]
    assert stages == ["launch", WEIGHTS, KV_CACHE, ENGINE_READY, "healthy"]
    assert "no line of its own in this log; done before KV cache sized" in said[1]
    assert said[-1].endswith("not seen in the log: compiled")


def test_watch_follows_a_log_as_it_is_written(tmp_path: Path) -> None:
    """Lines are read as they are appended, a half-written line only once it ends, duplicates (one per
    tensor-parallel worker) once, each at the time it was read."""
    log = tmp_path / "server.log"
    log.write_text("")
    now = [0.0]
    said: list[str] = []
    watch = StartupWatch("p", log, lambda line, **_: said.append(line), 0.0, clock=lambda: now[0])
    lines = [line + "\n" for line in H200_LOG.read_text(encoding="utf-8").splitlines()]
    weights = next(i for i, line in enumerate(lines) if "Model loading took" in line)
    with log.open("a", encoding="utf-8") as fh:
        fh.writelines(lines[:weights])
        fh.write(lines[weights][:40])  # vLLM is in the middle of writing the line
        fh.flush()
        now[0] = 5.0
        watch.poll()
        assert len(said) == 1  # launch only
        fh.write(lines[weights][40:] + lines[weights].replace("pid=790", "pid=791"))
        fh.flush()
        now[0] = 6.5
        watch.poll()
    assert said[1:] == ["p server start    6.5 s  weights loaded: 7.64 GiB in 2.2 s"]


def test_line_follower_keeps_a_line_until_it_ends(tmp_path: Path) -> None:
    path = tmp_path / "log"
    follower = LineFollower(path)
    assert follower.new_lines() == []  # not created yet
    path.write_bytes(b"one\r\ntw")
    assert follower.new_lines() == ["one"]
    with path.open("ab") as fh:
        fh.write(b"o\nthree")
    assert follower.new_lines() == ["two"]
    assert follower.new_lines() == []


# --- Locust ramp stages -----------------------------------------------------------------------------

def test_ramp_watch_names_each_stage_from_locusts_log() -> None:
    said: list[str] = []
    RampWatch(LOCUST_LOG, parse_ramp("2:2:10,4:2:10"), lambda line, **_: said.append(line), clock=lambda: 0.0).poll()
    assert said == ["Locust ramp stage 1/2: 2 users (spawn rate 2/s) for 10 s, 0.0 s after Locust's launch",
                    "Locust ramp stage 2/2: 4 users (spawn rate 2/s) for 10 s, 0.0 s after Locust's launch",
                    "Locust ramp over, 0.0 s after Locust's launch"]


def test_ramp_stage_that_changes_nothing_is_skipped_by_number(tmp_path: Path) -> None:
    """Locust logs no update for a stage with the same users and rate: the next update is matched to the
    stage it belongs to, not to the next number."""
    text = LOCUST_LOG.read_text(encoding="utf-8")
    said: list[str] = []
    RampWatch(LOCUST_LOG, parse_ramp("2:2:5,2:2:5,4:2:10"), lambda line, **_: said.append(line)).poll()
    assert [line.split(":")[0].split(",")[0] for line in said] == ["Locust ramp stage 1/3", "Locust ramp stage 3/3",
                                                                   "Locust ramp over"]
    assert "Shape test updating to 4 users" in text


FAKE_LOCUST = """
import sys, time
from pathlib import Path

log, heard = sys.argv[1], Path(sys.argv[2])
for line in open(log, encoding="utf-8"):  # a real Locust log, written as Locust would
    print(line, end="", flush=True)
    if "Shape test updating to 2 users" in line:  # go on only once perfgate has said so (or give up)
        deadline = time.monotonic() + 30
        while not heard.exists():
            if time.monotonic() > deadline:
                sys.exit(7)  # run_locust then raises: Locust "exited with code 7 before any request"
            time.sleep(0.05)
"""


def test_run_locust_says_each_ramp_stage_while_locust_runs(tmp_path: Path) -> None:
    """run_locust follows the child's log while it waits: a stand-in for Locust (``launcher``) replays a real
    Locust log and holds after the first stage until perfgate has reported it, so lines read only after the
    child exited would come too late (the stand-in then gives up after 30 s with an error exit)."""
    fake, heard = tmp_path / "fake_locust.py", tmp_path / "heard"
    fake.write_text(FAKE_LOCUST)
    said: list[str] = []

    def progress(line: str, **_: object) -> None:
        said.append(line)
        heard.touch()

    run_locust("http://127.0.0.1:9", "cpu-closed", model="tiny", tokenizer="unused", results_dir=tmp_path / "locust",
               ramp="2:2:10,4:2:10", launcher=(sys.executable, str(fake), str(LOCUST_LOG), str(heard)),
               progress=progress)
    assert [line.split(":")[0].split(",")[0] for line in said] == ["Locust ramp stage 1/2", "Locust ramp stage 2/2",
                                                                   "Locust ramp over"]


def test_wait_polling_polls_while_waiting_and_keeps_the_timeout(tmp_path: Path) -> None:
    polls: list[int] = []
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.2)"])
    assert wait_polling(proc, 60, lambda: polls.append(1)) == 0
    assert len(polls) >= 2  # while it slept, and once after it ended
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            wait_polling(proc, 0.3, lambda: None)
    finally:
        proc.kill()
        proc.wait()


# --- phase lines -------------------------------------------------------------------------------------

def test_phase_lines_name_the_workload_then_the_result() -> None:
    scenario = load_scenario("cpu-closed")
    started = phase_started_line("cpu-tiny", "cpu-closed", 2, scenario)
    assert started.startswith(f"cpu-tiny/cpu-closed repeat 2: started, {scenario.num_requests} requests, ")
    assert started.count("requests") == 1  # the count is said once
    locust = phase_started_line("cpu-tiny", "cpu-closed-locust", 0, scenario, ramp="2:2:10,4:2:10")
    assert "started, Locust ramp 2:2:10,4:2:10, /v1/completions" in locust
    phase = PhaseResult("cpu-tiny", "cpu-closed", "cpu", repeat=1, metrics={
        "request_throughput": 5.081, "p99_e2el_ms": 819.6, "median_ttft_ms": 99.2, "completed": 160,
        "duration": 31.49})
    assert phase_result_line(phase) == ("cpu-tiny/cpu-closed repeat 1: 5.08 req/s, p99 e2el 820 ms, median ttft "
                                        "99 ms, 160 requests in 31.5 s, valid")
    phase.valid, phase.invalid_reasons = False, ["the client fell behind", "token counts differ"]
    phase.metrics = {}
    assert phase_result_line(phase).endswith("- req/s, p99 e2el - ms, median ttft - ms, - requests in - s, "
                                             "INVALID: the client fell behind; token counts differ")


# --- the pytest writer: verbosity, capture -------------------------------------------------------------

FAKE_VLLM = '''#!{python}
"""Stands in for vLLM: replays a real vLLM CPU start log line by line, then answers /health."""
import http.server, sys, time

port = int(sys.argv[sys.argv.index("--port") + 1])
for line in open({log!r}, encoding="utf-8"):
    print(line, end="", flush=True)
    time.sleep(0.02)


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
'''

STUB_SUITE = '''
import os

from perfgate.core.phase import PhaseResult
from perfgate.run.phase_lines import phase_result_line
from perfgate.serving.profile import load_profile
from perfgate.serving.server import VllmServer


def test_start_then_a_phase(pytestconfig, tmp_path):
    pg = pytestconfig.perfgate
    server = VllmServer(load_profile("cpu-tiny"), "unused", log_path=tmp_path / "server.log",
                        python=os.environ["FAKE_VLLM"], progress=pg.progress)
    with server:
        print("the test's own print")
    pg.progress("cpu-tiny/cpu-closed repeat 0: started, 6 requests")
    phase = PhaseResult("cpu-tiny", "cpu-closed", "cpu", metrics={"request_throughput": 3.0})
    pg.progress(phase_result_line(phase), result=True)


def test_after():
    pass
'''


@pytest.fixture
def stub_suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.Pytester:
    """The suite above, run in-process (fast). httpcore is imported at the top of this module because httpx
    imports it lazily and caches its exception classes: imported first inside one in-process run, it would be
    dropped by pytester's module snapshot and re-imported by the next, whose ConnectError httpx then misses."""
    fake = tmp_path / "fake-python"
    fake.write_text(FAKE_VLLM.format(python=sys.executable, log=str(CPU_LOG)))
    fake.chmod(0o755)
    monkeypatch.setenv("FAKE_VLLM", str(fake))
    monkeypatch.setenv("PERFGATE_TEST_NO_WATCHDOG", "1")
    return pytester_suite(pytester, monkeypatch, STUB_SUITE)


START_STAGES = [r"cpu-tiny server start +0\.0 s  launch: pid \d+", "weights loaded: the compile warm-up begins",
                "compiled: compile warm-up done", "KV cache sized: 1,048,576 tokens", "engine ready: engine init",
                r"healthy: /health answers 200$"]
RESULT = "cpu-tiny/cpu-closed repeat 0: 3.00 req/s"


def positions(output: str, patterns: list[str]) -> list[int]:
    """Where each pattern first matches a line of ``output`` (-1: nowhere)."""
    lines = output.splitlines()
    return [next((i for i, line in enumerate(lines) if re.search(p, line)), -1) for p in patterns]


def test_default_verbosity_shows_every_line_as_it_happens(stub_suite: pytest.Pytester) -> None:
    result = stub_suite.runpytest(f"--perfgate-results-dir={stub_suite.path / 'r'}")
    result.assert_outcomes(passed=2)
    out = result.stdout.str()
    where = positions(out, [*START_STAGES, "repeat 0: started, 6 requests", RESULT])
    assert -1 not in where and where == sorted(where), out
    assert "the test's own print" not in out  # capture still holds the test's own output
    # Each on a line of its own, never glued to pytest's "test_suite.py " or a dot.
    assert all(re.search(rf"^{p}", out, re.MULTILINE) for p in (START_STAGES[0], "cpu-tiny server start", RESULT)), out


def test_quiet_shows_only_phase_results(stub_suite: pytest.Pytester) -> None:
    out = stub_suite.runpytest("-q", f"--perfgate-results-dir={stub_suite.path / 'r'}").stdout.str()
    assert RESULT in out
    assert "server start" not in out and "started, 6 requests" not in out, out
    out = stub_suite.runpytest("-qq", f"--perfgate-results-dir={stub_suite.path / 'r2'}").stdout.str()
    assert RESULT not in out and "server start" not in out, out


def test_with_s_every_line_appears_once_among_the_tests_output(stub_suite: pytest.Pytester) -> None:
    out = stub_suite.runpytest("-s", f"--perfgate-results-dir={stub_suite.path / 'r'}").stdout.str()
    where = positions(out, [*START_STAGES, "the test's own print", RESULT])
    assert -1 not in where and where == sorted(where), out
    assert out.count("compiled: compile warm-up done") == 1


# --- the whole path on real vLLM (CPU build) ---------------------------------------------------------

REAL_SUITE = '''
import pytest

pytestmark = pytest.mark.profiles("progress-eager")


async def test_engine_phase(perfgate):
    await perfgate.measure("progress-quick", repeats=1, allow_invalid=True)
'''


@pytest.mark.cpu
@pytest.mark.slow
def test_real_run_prints_start_stages_then_the_phase_in_order(child_pytest, fault_tools) -> None:
    """One eager cpu-tiny start (no compile: the fastest real start) and one 6-request phase: the child's
    terminal output must say each start stage, then the phase's start and result, in order. (A Locust phase
    here would add ~15 s, 10 of them Locust's own start; its ramp lines are checked above on a real log.)"""
    child = child_pytest(REAL_SUITE, profiles={"progress-eager": fault_tools.tiny_profile()},
                         scenarios={"progress-quick": fault_tools.QUICK_SCENARIO})
    result = child.run(timeout_s=400)
    assert result.returncode == 0, result.output[-6000:]
    assert not result.leftovers
    out = result.output
    engine = r"progress-eager/progress-quick repeat 0"
    order = [r"progress-eager server start +0\.0 s  launch: pid \d+, log ",
             r"server start +\d+\.\d s  weights loaded: no line of its own in this log; done before KV cache sized",
             r"server start +\d+\.\d s  KV cache sized: [\d,]+ tokens \(CPU\)",
             r"server start +\d+\.\d s  engine ready: engine init \d",
             r"server start +\d+\.\d s  healthy: /health answers 200; not seen in the log: compiled$",
             rf"{engine}: started, 6 requests, /v1/completions, prompt 64 tok",
             rf"{engine}: [\d.]+ req/s, p99 e2el \d+ ms, median ttft \d+ ms, 6 requests in [\d.]+ s, (valid|INVALID)",
             r"test_engine_phase\[progress-eager\] PASSED"]
    where = positions(out, order)
    assert -1 not in where, f"missing: {[p for p, w in zip(order, where) if w < 0]}\n{out[-6000:]}"
    assert where == sorted(where), out[-6000:]
