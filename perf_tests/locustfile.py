"""This repository's Locust file: perfgate's packaged one (``perfgate/load/locustfile.py``, which documents
the options), re-exported so ``locust -f perf_tests/locustfile.py`` works from the checkout. A project that
installs perfgate needs no copy: ``measure_locust`` falls back to the packaged file."""

from perfgate.load.locustfile import *  # LlmUser; PerfgateRamp when --perfgate-ramp is given
