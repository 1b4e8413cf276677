"""Serving: launch profiles, their lint and doctor, builds, and the vLLM server process (start, watch, stop,
watchdog, GPU holders). Imports only core, models and telemetry.
"""
