"""Who holds the GPU, and which of them are perfgate servers leaked by a run that is gone.

Before a GPU start, ``check_gpu_free`` asks NVML for each GPU the profile will use: free memory, and the
compute processes with the memory each holds. If free memory is below what vLLM will ask for
(gpu-memory-utilization x total), the start fails before vLLM runs, naming every holder: PID, name,
memory, age, and whether it is a *leaked* perfgate server (it carries perfgate's owner marker and that
owner is gone), with the command that stops it.

A perfgate server is recognised by ``PERFGATE_OWNER=pid:start-ticks`` in its environment (every server
process gets it), or, for processes vLLM renamed with setproctitle (which overwrites the environment /proc
shows: the engine core and workers, i.e. the very processes that hold GPU memory), by their session: each
server runs in its own session, whose leader is the watchdog (its argv names the owner) or, with the
watchdog disabled, the API server (whose environment keeps the marker).

``find_leaked`` / ``reap_leaked`` stop such servers, and only those: a process is touched only if its
session carries perfgate's marker and the marked owner is no longer alive.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType

from perfgate._errors import ServerError
from perfgate.serving.doctor import DEFAULT_UTILIZATION
from perfgate.serving.profile import Profile
from perfgate.serving.watchdog import (
    OWNER_ENV,
    RUN_ID_ENV,
    SCRIPT,
    owner_alive,
    parse_owner,
    pid_alive,
    start_ticks,
    stat_fields,
    terminate,
)
from perfgate.telemetry.nvml import GIB, _load_nvml, _try, _visible_indices

REAP_COMMAND = "perfgate serve --reap-stale"


@dataclass(frozen=True)
class Owner:
    """The perfgate process a server belongs to, as its marker records it."""

    pid: int
    ticks: int | None
    run_id: str = ""

    @property
    def gone(self) -> bool:
        return not owner_alive(self.pid, self.ticks)


@dataclass
class LeakedServer:
    session: int  # the server's session id = its process group = the pid of its first process
    pids: set[int] = field(default_factory=set)
    owner: Owner | None = None


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            raw = fh.read()
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode(errors="replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def _own_marker(pid: int) -> Owner | None:
    """The owner this one process records: its PERFGATE_OWNER variable, or its watchdog argv."""
    env = _environ(pid)
    if OWNER_ENV in env and (parsed := parse_owner(env[OWNER_ENV])):
        return Owner(parsed[0], parsed[1], env.get(RUN_ID_ENV, ""))
    argv = _cmdline(pid)
    if str(SCRIPT) in argv and "--owner" in argv:
        try:
            pid_owner = int(argv[argv.index("--owner") + 1])
            ticks = int(argv[argv.index("--owner-start") + 1]) if "--owner-start" in argv else 0
        except (IndexError, ValueError):
            return None
        return Owner(pid_owner, ticks or None)
    return None


def owner_of(pid: int) -> Owner | None:
    """Which perfgate process owns ``pid``'s server: from the process, else its session's leader."""
    if (own := _own_marker(pid)) is not None:
        return own
    fields = stat_fields(pid)
    if not fields or len(fields) < 4:
        return None
    session = int(fields[3])
    return _own_marker(session) if session != pid and session > 1 else None


def find_leaked() -> list[LeakedServer]:
    """Every perfgate server (by session) whose marked owner is gone, with all its live processes."""
    sessions: dict[int, set[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := stat_fields(int(entry))) and len(fields) > 3 and fields[0] != b"Z":
            sessions.setdefault(int(fields[3]), set()).add(int(entry))
    leaked = []
    for session, pids in sessions.items():
        if session <= 1 or os.getsid(0) == session:
            continue
        owner = _own_marker(session) if session in pids else None
        if owner is None:  # the leader is gone: any member's own marker still says whose it was
            owner = next((o for p in sorted(pids) if (o := _own_marker(p)) is not None), None)
        if owner is not None and owner.gone:
            leaked.append(LeakedServer(session, pids, owner))
    return leaked


def reap_leaked(leaked: list[LeakedServer], grace_s: float = 10.0) -> set[int]:
    """SIGTERM each leaked server's session, SIGKILL what is left after ``grace_s``; returns the pids."""
    pids = set().union(*(s.pids for s in leaked)) if leaked else set()
    terminate(lambda: {p for p in pids if pid_alive(p)}, grace_s)
    return pids


def reap_stale(say: Callable[[str], None]) -> list[LeakedServer]:
    """Find and stop leaked perfgate servers, saying what is stopped (``perfgate serve --reap-stale``)."""
    leaked = find_leaked()
    for server in leaked:
        owner = server.owner
        run = f" (run {owner.run_id})" if owner and owner.run_id else ""
        say(f"perfgate: stopping leaked server, session {server.session}{run}: its owner pid "
            f"{owner.pid if owner else '?'} is gone; pids {sorted(server.pids)}")
    reap_leaked(leaked)
    if not leaked:
        say("perfgate: no leaked perfgate server found")
    return leaked


@dataclass
class Holder:
    pid: int
    memory_gib: float | None
    name: str
    age_s: float | None
    owner: Owner | None

    def describe(self) -> str:
        mem = "memory not reported" if self.memory_gib is None else f"{self.memory_gib:.1f} GiB"
        age = "age unknown (not visible from here)" if self.age_s is None else f"running {_duration(self.age_s)}"
        text = f"pid {self.pid} ({self.name}): {mem}, {age}"
        if self.owner is not None and self.owner.gone:
            run = f" of run {self.owner.run_id}" if self.owner.run_id else ""
            text += (f"; a LEAKED perfgate server{run}: its owner pid {self.owner.pid} is gone "
                     f"(stop it: `{REAP_COMMAND}`, or pytest --perfgate-reap-stale)")
        elif self.owner is not None:
            text += f"; a perfgate server of the live process {self.owner.pid}"
        return text


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _age_s(pid: int) -> float | None:
    ticks = start_ticks(pid)
    if ticks is None:
        return None
    try:
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError):
        return None
    return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))


def holder(pid: int, used_bytes: int | None) -> Holder:
    argv = _cmdline(pid)
    name = " ".join(argv)[:120] if argv else "not visible from here (another container or user?)"
    memory = used_bytes / GIB if isinstance(used_bytes, int) and used_bytes >= 0 else None
    return Holder(pid, memory, name, _age_s(pid), owner_of(pid) if argv else None)


def _devices_for(profile: Profile) -> int:
    flags = profile.flags
    return int(flags.get("tensor-parallel-size", 1)) * int(flags.get("pipeline-parallel-size", 1))


def check_gpu_free(profile: Profile, nvml: ModuleType | None = None) -> None:
    """Refuse a GPU start whose memory is held by others, naming them; silent when NVML cannot tell."""
    if profile.platform != "cuda":
        return
    lib, _ = _load_nvml(nvml)
    if lib is None:
        return  # no NVML: vLLM's own check (and the start-failure hint) is all there is
    util = float(profile.flags.get("gpu-memory-utilization", DEFAULT_UTILIZATION))
    problems: list[str] = []
    leaked_seen = False
    try:
        indices = _visible_indices(lib, lib.nvmlDeviceGetCount())[:_devices_for(profile)]
        for index in indices:
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            mem = lib.nvmlDeviceGetMemoryInfo(handle)
            needed = util * mem.total
            if mem.free >= needed:
                continue
            procs = _try(lib.nvmlDeviceGetComputeRunningProcesses, handle) or []
            holders = [holder(int(p.pid), getattr(p, "usedGpuMemory", None)) for p in procs]
            leaked_seen |= any(h.owner is not None and h.owner.gone for h in holders)
            lines = [(f"GPU {index}: {mem.free / GIB:.1f} GiB free of {mem.total / GIB:.1f} GiB; profile "
                      f"{profile.name} needs {needed / GIB:.1f} GiB (gpu-memory-utilization {util:g} x total).")]
            nobody = "  NVML lists no compute process (one in another container, or a graphics process?)"
            lines += [f"  held by {h.describe()}" for h in holders] or [nobody]
            problems.append("\n".join(lines))
    finally:
        _try(lib.nvmlShutdown)
    if problems:
        fix = (f"stop the processes holding the GPU; a leaked perfgate server is stopped by `{REAP_COMMAND}` "
               "(or pytest --perfgate-reap-stale)" if leaked_seen else
               "stop the processes holding the GPU (`nvidia-smi` lists them), pick a free GPU with "
               "CUDA_VISIBLE_DEVICES, or lower gpu-memory-utilization in the profile")
        raise ServerError("not enough free GPU memory to start vLLM; another process holds it\n"
                          + "\n".join(problems), source=f"profile {profile.name}", fix=fix)


# vLLM's refusal when the card is already partly taken: "Free memory on device (12.26/139.8 GiB) on startup
# is less than desired GPU memory utilization (0.9, 125.82 GiB)".
_FREE_MEMORY_REFUSAL = "less than desired GPU memory utilization"


def start_failure_fix(log_text: str) -> str:
    """The fix line for a failed start, from what vLLM's log says."""
    if _FREE_MEMORY_REFUSAL in log_text or "is less than desired" in log_text:
        return ("another process holds GPU memory: `nvidia-smi` lists it; a leaked perfgate server is stopped "
                f"by `{REAP_COMMAND}` (or pytest --perfgate-reap-stale), anything else by its owner")
    return "read vLLM's own error above; `perfgate lint` / `perfgate doctor` the profile"
