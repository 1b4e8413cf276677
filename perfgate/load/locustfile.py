"""Locust LLM users for perfgate scenarios.

    locust -f perf_tests/locustfile.py --host http://127.0.0.1:8000 --perfgate-scenario chat
    locust -f perf_tests/locustfile.py --host URL --headless --perfgate-scenario fixed-512-256 \
        --perfgate-model tiny --perfgate-tokenizer synthetic:tiny -u 8 -r 2 -t 60s
    PERFGATE_LOCUST_RECORDS=results/locust.jsonl locust ... --perfgate-ramp 2:1:30,8:2:60 --processes 2

Locust's UI and CSV show ``ttft``, ``itl`` and ``e2e`` (ms); the raw per-request records (what perfgate's
SLOs read: ``perfgate.load.locust_runner.load_records``) go to ``$PERFGATE_LOCUST_RECORDS``. The server's
API key, if any, is read from ``$PERFGATE_API_KEY``. From pytest, run this file through
``perfgate.load.locust_runner.run_locust`` (a child process), never by importing it.
"""

from perfgate.load.locust_user import LlmUser, RampShape, ramp_requested

__all__ = ["LlmUser"]

if ramp_requested():
    class PerfgateRamp(RampShape):
        """--perfgate-ramp USERS:SPAWN_RATE:SECONDS,... (Locust uses a shape only when the file defines one)."""

    __all__.append("PerfgateRamp")  # so perf_tests/locustfile.py's star import re-exports it
