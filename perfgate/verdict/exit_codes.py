"""Process exit codes for a verdict: one mapping, used by every command that returns one.

    0  pass: the gate PASSes (a smoke gate also lets INCONCLUSIVE through; a profile A/B: no metric worse)
    1  regressed / worse
    2  bad input: a wrong flag or file, a baseline that cannot judge this run (INCOMPARABLE), no phase to
       judge, a server that could not start (argparse uses 2 for usage errors too)
    3  inconclusive: undecided after the repeats, or the run was INVALID (its figures describe the client)

``perfgate compare``, ``perfgate ab`` and ``perfgate ab run`` exit with these; ``scripts/bisect-step.sh``
maps them onto ``git bisect run`` (0 good, 1 bad, 3 skip, anything else aborts).
"""

from __future__ import annotations

from collections.abc import Iterable

from perfgate.verdict.ab import AbVerdict
from perfgate.verdict.gate import INCOMPARABLE, REGRESSED, GateVerdict

EXIT_PASS = 0
EXIT_WORSE = 1
EXIT_USAGE = 2
EXIT_INCONCLUSIVE = 3

# For `--help` epilogs and the README: the same words everywhere.
EPILOG = ("exit codes: 0 pass (not worse), 1 regressed (worse), 3 inconclusive (undecided after the repeats, "
          "or an invalid run), 2 bad input (a wrong flag or file, an incomparable baseline, nothing to judge)")


def gate_exit_code(verdict: GateVerdict) -> int:
    """REGRESSED is 1; a verdict the gate lets pass is 0; INCOMPARABLE (the baseline is of another GPU model,
    model or scenario content: the wrong input) is 2; anything else (INCONCLUSIVE, INVALID, NEW where a
    baseline is required) is 3."""
    if verdict.status == REGRESSED:
        return EXIT_WORSE
    if verdict.passed:
        return EXIT_PASS
    if verdict.status == INCOMPARABLE:
        return EXIT_USAGE
    return EXIT_INCONCLUSIVE


def ab_exit_code(verdict: AbVerdict) -> int:
    """A profile A/B (two-sided, no margin) is 1 when B is significantly worse on any metric; 3 when a metric
    could not be judged at all (one repeat on a side: no noise estimate); else 0. It asks "which is better",
    so 0 means "not shown worse", not "shown equal" (that is the gate's test: ``perfgate ab run``)."""
    if verdict.worse:
        return EXIT_WORSE
    if any(r.change is not None and r.change.method == "no-noise" for r in verdict.rows):
        return EXIT_INCONCLUSIVE
    return EXIT_PASS


def worst_exit_code(codes: Iterable[int]) -> int:
    """Several verdicts in one command: bad input over regressed over inconclusive over pass."""
    rank = {EXIT_USAGE: 0, EXIT_WORSE: 1, EXIT_INCONCLUSIVE: 2, EXIT_PASS: 3}
    return min(codes, key=lambda c: rank.get(c, -1), default=EXIT_PASS)
