"""How many tests a JUnit XML file says ran, passed, failed and skipped (pytest's ``--junitxml``).

A workflow whose tests all skipped, or that ran fewer than it should (a marker typo, a missing profile,
a collection that silently shrank), exits 0 from pytest. The job states how many must pass and checks
the JUnit file against that number.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from perfgate._errors import ConfigError


@dataclass(frozen=True)
class JunitCounts:
    tests: int
    failures: int
    errors: int
    skipped: int

    @property
    def passed(self) -> int:
        return self.tests - self.failures - self.errors - self.skipped

    def line(self) -> str:
        return (f"{self.tests} test(s): {self.passed} passed, {self.failures} failed, {self.errors} error(s), "
                f"{self.skipped} skipped")


def read_junit(path: Path) -> JunitCounts:
    """Counts from each ``<testcase>`` (not the suite's header, which a crashed run may lack)."""
    fix = "point at the file pytest wrote with --junitxml PATH (did pytest run at all?)"
    try:
        root = ET.parse(path).getroot()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such JUnit file", fix=fix) from None
    except (OSError, ET.ParseError) as exc:
        raise ConfigError(f"{path}: not a readable JUnit XML file ({exc})", fix=fix) from None
    if root.tag not in ("testsuites", "testsuite"):
        raise ConfigError(f"{path}: the root element is <{root.tag}>, not <testsuites> or <testsuite>", fix=fix)
    tests = failures = errors = skipped = 0
    for case in root.iter("testcase"):
        tests += 1
        tags = {child.tag for child in case}
        if "error" in tags:
            errors += 1  # a teardown error after a pass is reported as both; count it once, as an error
        elif "failure" in tags:
            failures += 1
        elif "skipped" in tags:
            skipped += 1
    return JunitCounts(tests, failures, errors, skipped)


def shortfall(counts: JunitCounts, min_passed: int) -> str | None:
    """Why the run did less than expected, or None."""
    if counts.passed >= min_passed:
        return None
    return (f"only {counts.passed} test(s) passed; this job expects at least {min_passed} "
            f"({counts.line()})")
