"""`perfgate junit-check FILE --min-passed N`: a job whose tests skipped or shrank fails, on real pytest JUnit."""

from __future__ import annotations

from pathlib import Path

import pytest

from perfgate.cli import main
from perfgate.junit_counts import read_junit

pytest_plugins = ["pytester"]

TESTS = '''
import pytest

def test_a(): pass
def test_b(): pass
def test_c(): pass
def test_fails(): assert False
@pytest.mark.skip(reason="no GPU")
def test_skipped(): pass

@pytest.fixture
def broken_teardown():
    yield
    raise RuntimeError("teardown")

def test_passes_then_errors_in_teardown(broken_teardown): pass
'''


@pytest.fixture
def junit(pytester: pytest.Pytester) -> Path:
    pytester.makepyfile(test_mix=TESTS)
    path = pytester.path / "junit.xml"
    pytester.runpytest_subprocess("-p", "no:perfgate", f"--junitxml={path}")
    return path


def test_counts_each_outcome_from_pytests_own_junit(junit: Path) -> None:
    counts = read_junit(junit)
    assert (counts.tests, counts.passed, counts.failures, counts.errors, counts.skipped) == (6, 3, 1, 1, 1)


def test_enough_passed_exits_0(junit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["junit-check", str(junit), "--min-passed", "3"]) == 0
    assert "ok:" in capsys.readouterr().out


def test_fewer_passed_than_expected_exits_1_with_the_counts(junit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["junit-check", str(junit), "--min-passed", "4"]) == 1
    out = capsys.readouterr().out
    assert "only 3 test(s) passed; this job expects at least 4" in out and "1 skipped" in out


def test_all_skipped_fails(pytester: pytest.Pytester, capsys: pytest.CaptureFixture[str]) -> None:
    pytester.makepyfile(test_gpu='import pytest\n@pytest.mark.skip(reason="no GPU")\ndef test_x(): pass\n')
    path = pytester.path / "skipped.xml"
    pytester.runpytest_subprocess("-p", "no:perfgate", f"--junitxml={path}")
    assert main(["junit-check", str(path), "--min-passed", "1"]) == 1
    assert "only 0 test(s) passed" in capsys.readouterr().out


@pytest.mark.parametrize("content", [None, "not xml <", "<html></html>"], ids=["missing", "garbled", "not-junit"])
def test_a_missing_or_bad_file_is_a_usage_error(tmp_path: Path, content: str | None,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "junit.xml"
    if content is not None:
        path.write_text(content)
    assert main(["junit-check", str(path), "--min-passed", "1"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "fix:" in err


def test_min_passed_must_be_positive(junit: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["junit-check", str(junit), "--min-passed", "0"]) == 2
    assert "--min-passed 0" in capsys.readouterr().err
