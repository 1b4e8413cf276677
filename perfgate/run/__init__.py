"""Orchestration: the target a run measures, the session, measuring one phase, the phase runner and launching.
The only layer that combines serving, load, telemetry and verdicts; the CLI and the pytest plugin sit above it.
"""
