"""Where profiles/, scenarios/, slos/ and baselines/ are found: the user's project, never site-packages.

perfgate installed from a wheel lives in site-packages; the data a test reads is the project's, found from
the current directory, pytest's rootdir, or the enclosing project root. A missing folder is an error that
says where perfgate looked and how to provide it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from perfgate import _toml
from perfgate._errors import ConfigError
from perfgate._toml import data_dir, data_dir_candidates, pop_project_root, push_project_root, source_checkout
from perfgate.load.scenario import load_scenario
from perfgate.serving.profile import load_profile
from perfgate.verdict.baseline import baseline_path

REPO = Path(__file__).resolve().parent.parent
PROFILE = 'model = "synthetic:tiny"\nplatform = "cpu"\n'


@pytest.fixture
def installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run the lookup as an installed perfgate does: no checkout of its own to fall back on, no env vars."""
    monkeypatch.setattr(_toml, "source_checkout", lambda *a: None)
    monkeypatch.setattr(_toml, "_pytest_roots", [])
    for folder in ("profiles", "scenarios", "slos", "baselines"):
        monkeypatch.delenv(f"PERFGATE_{folder.upper()}_DIR", raising=False)


def project(tmp_path: Path) -> Path:
    root = tmp_path / "team-repo"
    (root / "profiles").mkdir(parents=True)
    (root / "profiles" / "mine.toml").write_text(PROFILE)
    (root / "tests" / "perf").mkdir(parents=True)
    (root / "pyproject.toml").write_text('[project]\nname = "team-service"\n')
    return root


def test_an_installed_perfgate_never_looks_in_site_packages(tmp_path: Path) -> None:
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    (site / "perfgate").mkdir(parents=True)
    (site / "pyproject.toml").write_text('[project]\nname = "perfgate"\n')  # even a stray one
    assert source_checkout(site / "perfgate" / "_toml.py") is None
    assert source_checkout(REPO / "perfgate" / "_toml.py") == REPO  # this checkout is one


def test_found_from_a_subdirectory_of_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  installed: None) -> None:
    root = project(tmp_path)
    monkeypatch.chdir(root / "tests" / "perf")
    assert data_dir("profiles") == root / "profiles"
    assert load_profile("mine").model == "synthetic:tiny"


def test_never_above_the_project_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, installed: None) -> None:
    root = project(tmp_path)
    (tmp_path / "scenarios").mkdir()  # outside the project: not the project's
    monkeypatch.chdir(root / "tests")
    assert tmp_path / "scenarios" not in data_dir_candidates("scenarios")
    with pytest.raises(ConfigError) as err:
        load_scenario("chat")
    message = str(err.value)
    assert "no scenarios/ directory found" in message and str(root / "scenarios") in message
    assert "create scenarios/ in your project root" in message and "$PERFGATE_SCENARIOS_DIR" in message


def test_pytest_rootdir_is_searched_when_pytest_runs_from_elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     installed: None) -> None:
    root = project(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    push_project_root(root)
    try:
        assert data_dir("profiles") == root / "profiles"
        # a folder that does not exist yet is created in the project root, not where pytest was started
        assert baseline_path("cpu", "mine", "chat") == root / "baselines" / "cpu" / "mine" / "chat.json"
    finally:
        pop_project_root()


def test_the_environment_variable_wins_and_a_bad_one_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               installed: None) -> None:
    root = project(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.setenv("PERFGATE_PROFILES_DIR", str(tmp_path / "typo"))
    with pytest.raises(ConfigError) as err:
        load_profile("mine")
    assert f"$PERFGATE_PROFILES_DIR is set to {tmp_path / 'typo'}, which is not a directory" in str(err.value)
    monkeypatch.setenv("PERFGATE_PROFILES_DIR", str(root / "profiles"))
    assert load_profile("mine").platform == "cpu"


def test_an_explicit_directory_that_is_missing_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_profile("mine", profiles_dir=tmp_path / "nope")
    assert f"{tmp_path / 'nope'}: profile directory not found" in str(err.value)


def test_this_checkout_still_finds_its_own_data_from_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bare checkout (PYTHONPATH) or an editable install keeps finding the repository's data, as the
    suite's child pytest runs in temporary directories rely on."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_toml, "_pytest_roots", [])
    monkeypatch.delenv("PERFGATE_PROFILES_DIR", raising=False)
    assert data_dir("profiles") == REPO / "profiles"
