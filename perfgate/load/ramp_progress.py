"""A line per Locust ramp stage, read from Locust's log as it runs.

Locust's load shape logs ``Shape test updating to 4 users at 2.00 spawn rate`` when a stage changes the
users or the spawn rate (Locust 2.47; a stage that changes neither logs nothing), and ``Shape test
stopping`` when the ramp is over. Each update is matched to the next ramp stage with those users and rate.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from perfgate.core.progress import LineFollower, Progress

_UPDATE = re.compile(r"Shape test updating to (\d+) users at ([\d.]+) spawn rate")
_STOPPING = re.compile(r"Shape test stopping")


class RampStage(Protocol):
    users: int
    spawn_rate: float
    duration_s: float


class RampWatch:
    def __init__(self, log_path: Path, stages: Sequence[RampStage], progress: Progress, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._follow = LineFollower(log_path)
        self._stages = list(stages)
        self._progress = progress
        self._clock = clock
        self._t0 = clock()
        self._next = 0

    def poll(self) -> None:
        for line in self._follow.new_lines():
            at_s = self._clock() - self._t0
            if found := _UPDATE.search(line):
                users, rate = int(found[1]), float(found[2])
                index = next((i for i in range(self._next, len(self._stages))
                              if self._stages[i].users == users and abs(self._stages[i].spawn_rate - rate) < 0.01),
                             min(self._next, len(self._stages) - 1))
                self._next = index + 1
                stage = self._stages[index]
                self._progress(f"Locust ramp stage {index + 1}/{len(self._stages)}: {users} users (spawn rate "
                               f"{rate:g}/s) for {stage.duration_s:g} s, {at_s:.1f} s after Locust's launch")
            elif _STOPPING.search(line):
                self._progress(f"Locust ramp over, {at_s:.1f} s after Locust's launch")


def wait_polling(proc: subprocess.Popen[bytes], timeout_s: float, poll: Callable[[], None]) -> int:
    """``proc.wait(timeout_s)`` (raises TimeoutExpired the same way) that calls ``poll`` about twice a second
    while it waits, and once more after the process ended (its last lines)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            code = proc.wait(timeout=max(0.01, min(0.5, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            poll()
            if time.monotonic() >= deadline:
                raise
            continue
        poll()
        return code
