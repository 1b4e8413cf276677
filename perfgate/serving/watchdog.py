"""A server that dies with its owner: ``python -I perfgate/serving/watchdog.py --owner PID --owner-start T -- CMD...``

perfgate launches vLLM through this small process instead of directly. The watchdog leads the server's
process group (perfgate starts it in a new session), runs CMD as its child and:

- gives the child a parent-death signal (``PR_SET_PDEATHSIG`` = SIGTERM), so the server's leader is told
  to stop even if the watchdog itself is SIGKILLed;
- polls its owner (perfgate's pid *and* that pid's start time, so a reused pid is not taken for the
  owner); when the owner is gone, however it died (SIGKILL included), it SIGTERMs the whole group, then
  SIGKILLs what is left after a grace period, and exits;
- on SIGTERM/SIGINT (perfgate's own stop signals the whole group) it does not die first: it waits for its
  child, ends whatever of the group is left, and exits with the child's status (128+N for signal N), so
  perfgate's stop path and its "vLLM exited with code" message work as before. It never keeps the
  group alive on its own: when its child is gone, it sweeps the group and exits.

It is run as a file with ``-I`` (isolated: no script directory or PYTHONPATH on sys.path), so it imports
only the standard library and can never be broken by what the server's environment puts on the path.
The /proc helpers here are the leaf helpers the rest of perfgate uses too.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

# Set in the environment of every process perfgate launches: which run started it.
RUN_ID_ENV = "PERFGATE_RUN_ID"
# Set in the server's environment: which process owns it, "pid:start-ticks" (start ticks from /proc).
OWNER_ENV = "PERFGATE_OWNER"
# Test-only: "1" launches vLLM without the watchdog, to create a leaked server on purpose
# (scripts/gpu-lifecycle.sh and the reap-stale tests). Never set it in a real run.
NO_WATCHDOG_ENV = "PERFGATE_TEST_NO_WATCHDOG"
SCRIPT = Path(__file__).resolve()
POLL_S = 0.5
_PR_SET_PDEATHSIG = 1


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot, /proc/<pid>/stat field 22), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return int(fh.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def stat_fields(pid: int) -> list[bytes] | None:
    """/proc/<pid>/stat after the command name: [state, ppid, pgrp, session, ...], or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    fields = stat_fields(pid)
    return fields is not None and bool(fields) and fields[0] != b"Z"


def owner_alive(pid: int, ticks: int | None) -> bool:
    """The owner is alive: its pid runs and (when known) started at the same tick, i.e. was not reused."""
    if not pid_alive(pid):
        return False
    return ticks is None or start_ticks(pid) == ticks


def parse_owner(value: str) -> tuple[int, int | None] | None:
    """``"pid:ticks"`` (or ``"pid"``) as written in PERFGATE_OWNER; None if malformed."""
    pid, _, ticks = value.partition(":")
    try:
        return int(pid), (int(ticks) if ticks else None)
    except ValueError:
        return None


def group_members(pgid: int) -> set[int]:
    """Live processes whose process group is ``pgid`` (orphans keep their group when re-parented)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat_fields(int(entry))
            if fields and len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
                found.add(int(entry))
    return found


def terminate(members: Callable[[], set[int]], grace_s: float) -> bool:
    """SIGTERM the processes ``members()`` names, SIGKILL what is left after ``grace_s``; True if none is left."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        left = members()
        for pid in left:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + wait_s
        while left and time.monotonic() < deadline:
            time.sleep(0.1)
            left = {p for p in left if pid_alive(p)}
        if not left:
            return True
    return False


def end_group(pgid: int, grace_s: float, spare: int | None = None) -> None:
    """SIGTERM every process of the group but ``spare``, SIGKILL what is left after ``grace_s``."""
    terminate(lambda: group_members(pgid) - {spare}, grace_s)


def command(owner: int, cmd: list[str], python: str = sys.executable) -> list[str]:
    """The argv that runs ``cmd`` under a watchdog for ``owner``."""
    return [python, "-I", str(SCRIPT), "--owner", str(owner), "--owner-start", str(start_ticks(owner) or 0),
            "--", *cmd]


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the watchdog dies (covers a SIGKILLed watchdog)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="perfgate-watchdog", description=__doc__.splitlines()[0])
    parser.add_argument("--owner", type=int, required=True)
    parser.add_argument("--owner-start", type=int, default=0, help="the owner's start ticks (0: unknown)")
    parser.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command after --")
    owner_ticks = args.owner_start or None
    stopping = False

    def on_stop(signum: int, frame: object) -> None:
        nonlocal stopping  # the whole group got this signal too; the child stops on its own
        stopping = True

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_stop)
    if not owner_alive(args.owner, owner_ticks):
        print(f"perfgate watchdog: owner pid {args.owner} is already gone; not starting the server", flush=True)
        return 1
    child = subprocess.Popen(cmd, preexec_fn=_die_with_parent)  # noqa: PLW1509 -- single-threaded here
    # Sweep a group only when it is the server's own (the watchdog leads it), never a caller's shell group.
    pgid = os.getpgid(0) if os.getpgid(0) == os.getpid() else child.pid
    while (code := child.poll()) is None:
        if not stopping and not owner_alive(args.owner, owner_ticks):
            print(f"perfgate watchdog: owner pid {args.owner} is gone; stopping the server's process group "
                  f"{pgid}", flush=True)
            end_group(pgid, args.grace, spare=os.getpid())
            code = child.wait()
            break
        time.sleep(POLL_S)
    # The leader is gone; engine cores and workers of the same group must not outlive it.
    end_group(pgid, 2.0 if stopping else args.grace, spare=os.getpid())
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
