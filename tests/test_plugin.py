"""The pytest plugin: options, per-profile parametrization, GPU skips, early results-dir check."""

from pathlib import Path

import pytest

from conftest import pytester_suite

pytest_plugins = ["pytester"]
REPO = Path(__file__).resolve().parent.parent

SUITE = '''
import pytest

@pytest.mark.cpu
def test_cpu(perfgate_profile):
    print("PROFILE", perfgate_profile)

@pytest.mark.gpu
def test_gpu(perfgate_profile):
    print("PROFILE", perfgate_profile)

@pytest.mark.gpu
def test_gpu_server(vllm_server):
    pass
'''


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    return pytester_suite(pytester, monkeypatch, SUITE)


def test_options_are_one_group_with_one_prefix(suite):
    result = suite.runpytest("--help")
    result.stdout.fnmatch_lines(["perfgate: vLLM performance gate:", "*--perfgate-profile*--profile*",
                                 "*--perfgate-vllm-url*--vllm-url*", "*--perfgate-update-baselines*"])


def test_profiles_follow_the_markers(suite):
    result = suite.runpytest("--collect-only", "-q")
    result.stdout.fnmatch_lines(["*test_cpu[[]cpu-tiny[]]", "*test_gpu[[]defaults[]]", "*test_gpu[[]optimized[]]"])


def test_profile_option_picks_profiles_of_the_matching_platform(suite):
    result = suite.runpytest("--collect-only", "-q", "--profile", "optimized")
    result.stdout.fnmatch_lines(["*test_gpu[[]optimized[]]"])
    assert "test_gpu[defaults]" not in result.stdout.str()
    assert "test_cpu[(none)]" in result.stdout.str()  # skipped at setup with the reason


def test_gpu_tests_skip_with_the_reason_without_a_gpu(suite):
    result = suite.runpytest("-rs", "-k", "test_gpu_server", f"--perfgate-results-dir={suite.path / 'r'}")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*SKIPPED*CUDA build*"])


def test_unwritable_results_dir_fails_before_any_server(suite):
    blocker = suite.path / "a-file"
    blocker.write_text("not a directory")
    result = suite.runpytest("-k", "test_gpu_server", f"--perfgate-results-dir={blocker / 'results'}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*results*"])


def test_api_key_env_must_be_set(suite, monkeypatch):
    monkeypatch.delenv("PERFGATE_TEST_KEY", raising=False)
    result = suite.runpytest("--perfgate-api-key-env", "PERFGATE_TEST_KEY", "--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*PERFGATE_TEST_KEY*not set*"])


def test_terminal_summary_prints_each_phases_metric_table(suite):
    suite.makepyfile(test_phase='''
from perfgate.core.phase import PhaseResult

def test_records_a_phase(pytestconfig):
    pytestconfig.perfgate.phases.append(PhaseResult("cpu-tiny", "cpu-closed", "cpu", metrics={
        "completed": 160, "request_throughput": 21.5, "mean_ttft_ms": 30.0, "p99_ttft_ms": 90.0}))
''')
    result = suite.runpytest("test_phase.py", f"--perfgate-results-dir={suite.path / 'r'}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*= perfgate =*", "*cpu/cpu-tiny/cpu-closed (repeat 0)*",
                                 "Request throughput (req/s):*21.50", "P99 TTFT (ms):*90.00",
                                 f"results: {suite.path / 'r'}"])
    assert (suite.path / "r" / "run.json").is_file() and (suite.path / "r" / "summary.md").is_file()


def test_terminal_summary_labels_a_provisional_slo_verdict(suite):
    suite.makepyfile(test_provisional='''
from perfgate.core.phase import PhaseResult
from perfgate.verdict.slo import PASS, SloRow, SloVerdict

def test_records_a_verdict(pytestconfig):
    phase = PhaseResult("cpu-tiny", "cpu-closed", "cpu", metrics={"completed": 160, "p99_e2el_ms": 900.0})
    pytestconfig.perfgate.phases.append(phase)
    row = SloRow("p99_e2el_ms", "<= 1,200 ms", 900.0, 0.25, PASS, per_repeat=[900.0])
    pytestconfig.perfgate.verdicts[phase.key] = {
        "slo": SloVerdict(phase.key, [row], ["slos/cpu.toml"], provisional=True)}
''')
    result = suite.runpytest("test_provisional.py", f"--perfgate-results-dir={suite.path / 'r'}")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["*= perfgate =*",
                                 "SLOs cpu/cpu-tiny/cpu-closed: PASS (PROVISIONAL bounds, not yet reviewed)"])
    assert "provisional bounds" in (suite.path / "r" / "summary.md").read_text()
