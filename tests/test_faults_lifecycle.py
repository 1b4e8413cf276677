"""Fault matrix (issue 13), against real vLLM (CPU build): no server outlives its run.

Every run here is started the way a script starts it: a background job of a non-interactive shell
(`bash -c 'cmd & wait'`), so it inherits SIGINT *ignored*. Then perfgate (``perfgate serve cpu-tiny`` or
``pytest perf_tests -m cpu``) is sent SIGINT, or SIGKILLed, at a chosen moment, or the whole GitHub Actions
cancel sequence hits the workflow step's shell. Afterwards no process the run started may be alive (found by
the marker variable, or by the working directory for processes vLLM renamed).
Run under the shared lock: `flock /tmp/vllm-cpu.lock .venv/bin/pytest tests/test_faults_lifecycle.py`.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.cpu, pytest.mark.slow]
LEAK_WINDOW_S = 30  # the bound: a server dies within 30 s of its owner


class ScriptJob:
    """``cmd`` as a background job of ``bash -c`` (SIGINT ignored), in its own work directory and mark."""

    def __init__(self, work: Path, cmd: list[str], fault_tools, *, step_script: str | None = None) -> None:
        self.work, self.tools = work, fault_tools
        self.mark = uuid.uuid4().hex
        self.out = work / "out.txt"
        env = {k: v for k, v in os.environ.items() if k not in ("PERFGATE_RUN_ID", "PYTEST_ADDOPTS",
                                                                "PYTEST_CURRENT_TEST")}
        env.update(PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **{fault_tools.MARK_ENV: self.mark})
        if step_script is not None:
            # The workflow step itself: GitHub runs `bash -e <file>` and signals that shell's pid.
            (work / "step.sh").write_text(step_script)
            self.shell = subprocess.Popen(["bash", "--noprofile", "--norc", "-eo", "pipefail", "step.sh"],
                                          cwd=work, env=env, stdout=self.out.open("wb"), stderr=subprocess.STDOUT,
                                          start_new_session=True)
            self.pid = self.shell.pid
            return
        script = f"{shlex.join(cmd)} > {shlex.quote(str(self.out))} 2>&1 & echo $! > pid; wait"
        self.shell = subprocess.Popen(["bash", "-c", script], cwd=work, env=env, start_new_session=True)
        deadline = time.monotonic() + 10
        while not (work / "pid").exists() or not (work / "pid").read_text().strip():
            assert time.monotonic() < deadline, "the job never started"
            time.sleep(0.05)
        self.pid = int((work / "pid").read_text())

    def processes(self) -> dict[int, str]:
        return self.tools.marked_processes(self.mark, self.work)

    def vllm_processes(self) -> dict[int, str]:
        return {p: c for p, c in self.processes().items() if p not in (self.pid, self.shell.pid)}

    def wait_for(self, what: str, ready: Callable[[], bool], timeout_s: float = 300) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():
            assert self.shell.poll() is None, f"the job ended before {what}:\n{self.output()}"
            assert time.monotonic() < deadline, f"no {what} in {timeout_s:.0f} s:\n{self.output()}"
            time.sleep(0.2)

    def output(self) -> str:
        return self.out.read_text(errors="replace")[-4000:] if self.out.exists() else ""

    def left_after(self, seconds: float) -> dict[int, str]:
        """Marked processes still alive ``seconds`` after now (polls: returns as soon as none is left)."""
        start = time.monotonic()
        while (left := self.processes()) and time.monotonic() < start + seconds:
            time.sleep(0.5)
        print(f"{'still alive' if left else 'all gone'} after {time.monotonic() - start:.1f} s")  # the report's figure
        return left

    def cleanup(self) -> None:
        for proc in (self.shell,):
            if proc.poll() is None:
                proc.kill()
        self.tools.kill_marked(self.mark, self.work)


@pytest.fixture
def script_job(tmp_path: Path, fault_tools) -> Iterator[Callable[..., ScriptJob]]:
    made: list[ScriptJob] = []

    def make(cmd: list[str], **kw) -> ScriptJob:
        work = tmp_path / f"job{len(made)}"
        work.mkdir()
        made.append(ScriptJob(work, cmd, fault_tools, **kw))
        return made[-1]

    yield make
    for job in made:
        job.cleanup()


SERVE = [sys.executable, "-m", "perfgate", "serve", "cpu-tiny", "--log", "serve.log", "--ready-file", "ready"]


def _server_started(job: ScriptJob) -> Callable[[], bool]:
    return lambda: bool(job.vllm_processes())


# --- perfgate serve ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("when", ["mid-start", "healthy"])
def test_serve_sigkilled_leaves_no_vllm_process(script_job, when: str) -> None:
    """`perfgate serve cpu-tiny &` then `kill -9`: nothing of the server is alive 30 s later."""
    job = script_job(SERVE)
    if when == "mid-start":
        job.wait_for("a vLLM process", _server_started(job))
        time.sleep(5)
    else:
        job.wait_for("a healthy server", lambda: (job.work / "ready").exists(), timeout_s=400)
    assert job.vllm_processes(), "nothing to leak: the test would prove nothing"
    os.kill(job.pid, signal.SIGKILL)
    left = job.left_after(LEAK_WINDOW_S)
    assert not left, f"alive {LEAK_WINDOW_S} s after perfgate was SIGKILLed ({when}): {left}"


def test_serve_stops_on_kill_int_although_the_job_inherited_it_ignored(script_job) -> None:
    job = script_job(SERVE)
    job.wait_for("a healthy server", lambda: (job.work / "ready").exists(), timeout_s=400)
    os.kill(job.pid, signal.SIGINT)
    job.wait_for("perfgate to exit", lambda: job.shell.poll() is not None, timeout_s=60)
    assert job.shell.returncode == 0, job.output()
    assert not job.left_after(5), job.output()


# --- pytest perf_tests -m cpu ----------------------------------------------------------------------------

def _suite(job_dir_hint: str = "results") -> list[str]:
    return [sys.executable, "-m", "pytest", str(REPO / "perf_tests"), "-m", "cpu", "-p", "no:cacheprovider",
            "-p", "no:randomly", f"--perfgate-results-dir={job_dir_hint}", "-x"]


def _under_load(job: ScriptJob) -> Callable[[], bool]:
    def serving() -> bool:
        return any("POST /v1/" in log.read_text(errors="replace")
                   for log in (job.work / "results" / "servers").glob("*.log"))
    return serving


@pytest.mark.parametrize(("sig", "when"), [(signal.SIGINT, "start"), (signal.SIGKILL, "start"),
                                           (signal.SIGKILL, "load")], ids=["SIGINT", "SIGKILL", "SIGKILL-mid-load"])
def test_suite_in_a_background_job_stopped_5s_into_the_server_start(script_job, sig: int, when: str) -> None:
    """`pytest perf_tests -m cpu &` from a script: SIGINT or SIGKILL 5 s into the server's start (or while
    load runs): it stops and no vLLM process is left (30 s after a SIGKILL)."""
    job = script_job(_suite())
    job.wait_for("a vLLM process", _server_started(job), timeout_s=300)
    if when == "load":
        job.wait_for("requests at the server", _under_load(job), timeout_s=400)
    else:
        time.sleep(5)
    assert job.vllm_processes(), "nothing to leak: the test would prove nothing"
    os.kill(job.pid, sig)
    if sig == signal.SIGINT:
        job.wait_for("pytest to exit", lambda: job.shell.poll() is not None, timeout_s=90)
        assert "KeyboardInterrupt" in job.output() or "Interrupted" in job.output(), job.output()
    left = job.left_after(LEAK_WINDOW_S if sig == signal.SIGKILL else 5)
    assert not left, f"{signal.Signals(sig).name}: alive afterwards: {left}\n{job.output()}"


# --- the workflows' cancel path: SIGINT, SIGTERM 7.5 s later, SIGKILL 2.5 s after that --------------------

def test_workflow_step_cancelled_the_way_github_cancels_leaves_nothing(script_job) -> None:
    """The pr-gate CPU step's construct (`exec bash scripts/stoppable.sh -- pytest ...`), cancelled with the
    runner's sequence sent to the step shell's pid. The runner's final tree kill is left out on purpose:
    it would also kill vLLM (a descendant) and hide a leak; here only the step's shell gets SIGKILL."""
    step = f"exec bash {REPO}/scripts/stoppable.sh -- {shlex.join(_suite())}\n"
    job = script_job([], step_script=step)
    job.wait_for("a vLLM process", _server_started(job), timeout_s=300)
    time.sleep(5)
    job.shell.send_signal(signal.SIGINT)
    time.sleep(7.5)
    if job.shell.poll() is None:
        job.shell.send_signal(signal.SIGTERM)
        time.sleep(2.5)
    if job.shell.poll() is None:
        job.shell.kill()  # the step's shell is the wrapper (exec); what it started must not need it
    left = job.left_after(LEAK_WINDOW_S)
    assert not left, f"alive {LEAK_WINDOW_S} s after the cancel: {left}\n{job.output()}"
