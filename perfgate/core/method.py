"""perfgate's measurement-method version: what a baseline's or SLO set's figures mean.

Figures measured by different methods are not comparable, whatever the hardware. A baseline or SLO set
records the version it was measured with; one from an older method is refused with the way to re-record it.

- 1: repeats re-sent the same prompts (served from vLLM's prefix cache after the first repeat), SLOs judged
  the last repeat, one server session per baseline.
- 2: every repeat, warm-up batch and phase sends prompts no earlier request on that server sent (a per-run
  nonce and a stream per repeat; shared prefixes only where a scenario declares them, checked against the
  server's prefix-cache counters); SLO bounds hold in every repeat; baselines hold repeats from at least two
  server sessions, so the gate's noise model includes session-to-session drift.
"""

from __future__ import annotations

METHOD_VERSION = 2

RERECORD_BASELINE = ("re-record it with this perfgate: run the suite with --perfgate-update-baselines (two "
                     "server sessions are recorded), or `perfgate baselines refresh --from RUN_DIR`")
RERECORD_SLOS = ("re-derive its bounds from a run of this perfgate (fresh prompts, every repeat judged), then "
                 "set method_version = {version} in the file")
