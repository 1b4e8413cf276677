"""Issue 13, the parts that need no vLLM: SIGINT restored when inherited ignored, the watchdog (a server
dies with its owner, SIGKILL included; perfgate's own stop still works), leaked-server detection and
--reap-stale on real processes carrying perfgate's marker, and the GPU-holder refusal (NVML is a stand-in:
no GPU here; the processes it names are real, so the /proc side is real).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from perfgate._errors import ServerError
from perfgate.serving import gpu_holders, watchdog
from perfgate.serving import server as server_mod
from perfgate.serving.profile import load_profile
from perfgate.serving.server import VllmServer
from perfgate.serving.watchdog import OWNER_ENV, RUN_ID_ENV, pid_alive, start_ticks

REPO = Path(__file__).resolve().parent.parent
GIB = 2**30


def _wait_gone(pids: set[int], timeout_s: float) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while (left := {p for p in pids if pid_alive(p)}) and time.monotonic() < deadline:
        time.sleep(0.1)
    return left


def _sig_ignored(pid: int, sig: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (sig - 1)))
    raise AssertionError("no SigIgn line")


# --- 1. SIGINT always works ----------------------------------------------------------------------------

def test_a_background_job_of_a_script_inherits_sigint_ignored() -> None:
    """The premise the fix rests on (and the harness of the real-vLLM tests): `cmd &` in `bash -c`."""
    out = subprocess.run(["bash", "-c", "grep SigIgn /proc/self/status & wait"], capture_output=True, text=True,
                         check=True).stdout
    assert int(out.split()[1], 16) & 0x2, out


CHECK_SIGINT = "from perfgate.serving.sigint import restore_sigint; import signal; r = restore_sigint(); " \
               "print(r, signal.getsignal(signal.SIGINT) is signal.default_int_handler)"


@pytest.mark.parametrize(("keep", "want"), [("", "True True"), ("1", "False False")])
def test_sigint_is_restored_unless_the_user_keeps_it_ignored(keep: str, want: str) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO), PERFGATE_KEEP_SIGINT_IGNORED=keep)
    out = subprocess.run(["bash", "-c", f"{sys.executable} -c '{CHECK_SIGINT}' & wait"], env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == want


# --- 2. the watchdog --------------------------------------------------------------------------------------

# An owner (stands for perfgate) that launches a "server" of three processes under the watchdog, the way
# VllmServer does (new session), prints the watchdog's pid, and sleeps.
OWNER = textwrap.dedent("""
    import os, subprocess, sys, time
    from perfgate.serving import watchdog
    server = ["bash", "-c", "sleep 300 & sleep 300 & wait"]
    proc = subprocess.Popen(watchdog.command(os.getpid(), server), start_new_session=True)
    print(proc.pid, flush=True)
    if sys.argv[1:] == ["stop"]:
        time.sleep(1)
        os.killpg(proc.pid, 15)  # perfgate's stop path: SIGTERM the group, wait
        print(proc.wait(), flush=True)
    time.sleep(300)
""")


@pytest.fixture
def owner_env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO))


def _start_owner(env: dict[str, str], *args: str) -> tuple[subprocess.Popen[str], int, set[int]]:
    owner = subprocess.Popen([sys.executable, "-c", OWNER, *args], env=env, stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    leader = int(owner.stdout.readline())
    deadline = time.monotonic() + 10
    while len(group := watchdog.group_members(leader)) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)  # watchdog, bash, two sleeps
    assert len(group) == 4, group
    return owner, leader, group


def test_owner_sigkilled_takes_the_whole_server_group_down(owner_env: dict[str, str]) -> None:
    owner, _, group = _start_owner(owner_env)
    owner.kill()
    owner.wait()
    left = _wait_gone(group, 30)
    assert not left, f"outlived their SIGKILLed owner: {left}"


def test_perfgates_own_stop_signal_ends_the_group_and_reports_the_child_status(owner_env: dict[str, str]) -> None:
    owner, _, group = _start_owner(owner_env, "stop")
    try:
        assert owner.stdout is not None
        code = int(owner.stdout.readline())
        assert code == 128 + signal.SIGTERM  # bash died of SIGTERM; the watchdog exits as 128+15
        assert not _wait_gone(group, 10)
    finally:
        owner.kill()


def test_when_the_servers_leader_exits_its_orphans_are_swept(tmp_path: Path) -> None:
    """vLLM's API server gone (crash), its engine core left behind: the watchdog ends the rest of the group."""
    pid_file = tmp_path / "orphan.pid"
    server = ["bash", "-c", f"sleep 300 & echo $! > {pid_file}; exit 3"]
    proc = subprocess.Popen(watchdog.command(os.getpid(), server), start_new_session=True)
    assert proc.wait(timeout=30) == 3  # the leader's status comes through
    orphan = int(pid_file.read_text())
    assert not _wait_gone({orphan}, 5)


def test_a_reused_owner_pid_is_not_taken_for_the_owner() -> None:
    """Owner pid alive but started at another time (pid reuse): the watchdog treats the owner as gone."""
    argv = [sys.executable, "-I", str(watchdog.SCRIPT), "--owner", str(os.getpid()), "--owner-start", "1",
            "--", "sleep", "30"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, start_new_session=True, check=False)
    assert done.returncode == 1 and "already gone" in done.stdout


# --- 3. leaked servers: detection and --reap-stale, on real processes -----------------------------------

# A "server" session: its leader carries the marker (as vLLM's API server does); its child has an empty
# environment, as vLLM's engine core looks after setproctitle overwrote it.
SERVER = "import subprocess, time; subprocess.Popen(['sleep', '300'], env={}); time.sleep(300)"


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


@pytest.fixture
def fake_servers() -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Three real sessions: leaked (owner gone), owned by this live test process, and unmarked."""
    me = f"{os.getpid()}:{start_ticks(os.getpid())}"
    envs = {"leaked": {OWNER_ENV: f"{_dead_pid()}:12345", RUN_ID_ENV: "run-leaked"},
            "live": {OWNER_ENV: me, RUN_ID_ENV: "run-live"}, "unmarked": {}}
    procs = {name: subprocess.Popen([sys.executable, "-c", SERVER], env={**os.environ, **extra},
                                    start_new_session=True) for name, extra in envs.items()}
    deadline = time.monotonic() + 10
    while any(len(watchdog.group_members(p.pid)) < 2 for p in procs.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    yield procs
    for proc in procs.values():
        for pid in watchdog.group_members(proc.pid):
            os.kill(pid, signal.SIGKILL)
        proc.wait()


def test_find_leaked_names_only_the_server_whose_owner_is_gone(fake_servers) -> None:
    leaked = {s.session: s for s in gpu_holders.find_leaked()}
    mine = fake_servers["leaked"].pid
    assert mine in leaked
    assert leaked[mine].pids == watchdog.group_members(mine) and len(leaked[mine].pids) == 2
    assert leaked[mine].owner is not None and leaked[mine].owner.run_id == "run-leaked"
    assert fake_servers["live"].pid not in leaked and fake_servers["unmarked"].pid not in leaked
    # The engine-core stand-in has no marker of its own; its session leader says whose it is.
    child = next(iter(leaked[mine].pids - {mine}))
    assert gpu_holders._own_marker(child) is None and gpu_holders.owner_of(child).gone


def test_reap_stale_stops_leaked_servers_and_only_those(fake_servers) -> None:
    groups = {name: watchdog.group_members(p.pid) for name, p in fake_servers.items()}
    said: list[str] = []
    gpu_holders.reap_stale(said.append)
    assert not _wait_gone(groups["leaked"], 15)
    assert all(pid_alive(p) for p in groups["live"] | groups["unmarked"])
    assert any(str(fake_servers["leaked"].pid) in line and "run-leaked" in line for line in said), said


def test_serve_reap_stale_without_a_profile_only_reaps(fake_servers) -> None:
    out = subprocess.run([sys.executable, "-m", "perfgate", "serve", "--reap-stale"], capture_output=True,
                         text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert f"session {fake_servers['leaked'].pid}" in out.stderr
    assert not pid_alive(fake_servers["leaked"].pid) or fake_servers["leaked"].poll() is not None
    assert fake_servers["live"].poll() is None and fake_servers["unmarked"].poll() is None


# --- 3. the GPU-holder refusal (NVML stand-in, real holder processes) -------------------------------------

class StandInNvml(types.ModuleType):
    """The slice of pynvml check_gpu_free calls: one 140 GiB card, free memory and holders as given."""

    def __init__(self, free_gib: float, holders: list[tuple[int, int]]) -> None:
        super().__init__("stand_in_pynvml")
        self.free, self.holders = free_gib * GIB, holders

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: return 1
    def nvmlDeviceGetHandleByIndex(self, i: int) -> int: return i
    def nvmlDeviceGetMemoryInfo(self, h: int) -> types.SimpleNamespace:
        return types.SimpleNamespace(total=140 * GIB, free=self.free, used=140 * GIB - self.free)
    def nvmlDeviceGetComputeRunningProcesses(self, h: int) -> list[types.SimpleNamespace]:
        return [types.SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in self.holders]


def test_a_held_gpu_is_refused_before_vllm_runs_naming_each_holder(fake_servers, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    leaked = fake_servers["leaked"].pid
    engine = next(iter(watchdog.group_members(leaked) - {leaked}))  # holds the memory, env overwritten
    other = fake_servers["unmarked"].pid
    nvml = StandInNvml(12.3, [(engine, 120 * GIB), (other, 7 * GIB)])
    monkeypatch.setattr(server_mod, "check_gpu_free", lambda p: gpu_holders.check_gpu_free(p, nvml=nvml))
    server = VllmServer(load_profile("optimized"), "/no-model", log_path=tmp_path / "s.log")
    started = time.monotonic()
    with pytest.raises(ServerError) as err:
        server.start()
    took = time.monotonic() - started
    text = str(err.value)
    assert server.proc is None and not (tmp_path / "s.log").exists()  # vLLM never launched
    assert "GPU 0: 12.3 GiB free of 140.0 GiB; profile optimized needs 126.0 GiB" in text, text
    assert f"pid {engine} (sleep 300): 120.0 GiB, running" in text
    assert "LEAKED perfgate server of run run-leaked" in text and "perfgate serve --reap-stale" in text
    assert f"pid {other} (" in text and "7.0 GiB" in text
    assert text.count("LEAKED") == 1  # the unmarked holder is not called a leak
    print(f"refusal took {took:.2f} s")


def test_enough_free_memory_or_a_cpu_profile_is_not_refused() -> None:
    gpu_holders.check_gpu_free(load_profile("optimized"), nvml=StandInNvml(139.0, [(os.getpid(), GIB)]))
    gpu_holders.check_gpu_free(load_profile("cpu-tiny"), nvml=StandInNvml(0.0, []))


def test_vllms_free_memory_refusal_points_at_other_holders_not_at_lint() -> None:
    line = ("ValueError: Free memory on device (12.26/139.8 GiB) on startup is less than desired GPU memory "
            "utilization (0.9, 125.82 GiB). Decrease GPU memory utilization or reduce GPU memory used by other "
            "processes.")
    fix = gpu_holders.start_failure_fix(line)
    assert "another process holds GPU memory" in fix and "--reap-stale" in fix and "lint" not in fix
    assert "lint" in gpu_holders.start_failure_fix("ValueError: unknown flag")
