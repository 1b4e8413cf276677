"""perfgate's pytest plugin: options (one group, one prefix), markers, the session object, failure
reports with the server log, the run report, and the end-of-session check that no vLLM process is left.

The fixtures (``perfgate``, ``vllm_server``, ``perfgate_profile``) live in ``perfgate.pytest_fixtures``, which
``pytest_plugins`` below registers with this plugin: installing perfgate is all a project needs.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from pathlib import Path

import pytest

from perfgate._errors import PerfgateError
from perfgate.gpu_guard import GPU_MARKER, allowed_skip_reason, gpu_request, no_gpu_message
from perfgate.pytest_progress import TerminalProgress
from perfgate.run.session import PerfgateSession
from perfgate.serving.builds import unavailable_reason
from perfgate.serving.gpu_holders import reap_stale
from perfgate.serving.profile import load_profile
from perfgate.serving.sigint import restore_sigint

# Registered once, by name, whichever way this plugin was loaded (entry point, -p, a conftest).
pytest_plugins = ["perfgate.pytest_fixtures"]

DEFAULT_GPU_PROFILES = ("defaults", "optimized")
DEFAULT_CPU_PROFILES = ("cpu-tiny",)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    from perfgate import hookspec

    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("perfgate", "perfgate: vLLM performance gate")
    group.addoption("--perfgate-profile", "--profile", action="append", dest="perfgate_profiles", metavar="NAME",
                    help="launch profile(s) to test (repeatable); default: defaults+optimized for -m gpu, "
                         "cpu-tiny for -m cpu")
    group.addoption("--perfgate-vllm-url", "--vllm-url", dest="perfgate_vllm_url", metavar="URL",
                    help="attach to a running vLLM server instead of starting one")
    group.addoption("--perfgate-results-dir", dest="perfgate_results_dir", metavar="DIR",
                    help="where results go (default: results/<run-id>)")
    group.addoption("--perfgate-update-baselines", action="store_true", dest="perfgate_update_baselines",
                    help="write baselines/ from this run (refused if the run failed, was invalid, or regressed against "
                         "the baseline it replaces: see --perfgate-accept-regression)")
    group.addoption("--perfgate-accept-regression", dest="perfgate_accept_regression", metavar="WHY", default="",
                    help="with --perfgate-update-baselines: write a baseline even when this run is REGRESSED or "
                         "INCONCLUSIVE against the one it replaces; WHY is stored in the baseline")
    group.addoption("--perfgate-repeats", type=int, dest="perfgate_repeats", metavar="N",
                    help="repeats per measured phase (noise for the gate; default: the test's own)")
    group.addoption("--perfgate-api-key-env", dest="perfgate_api_key_env", metavar="VAR",
                    help="environment variable holding an API key for vLLM and every client")
    group.addoption("--perfgate-gpu-memory", dest="perfgate_gpu_memory", metavar="SIZE",
                    help="GPU memory for the KV doctor when NVML cannot tell (e.g. 24GiB)")
    group.addoption("--perfgate-allow-incomparable", action="store_true", dest="perfgate_allow_incomparable",
                    help="compare even when the baseline comes from another GPU model, model or scenario content")
    group.addoption("--perfgate-require-baselines", action="store_true", dest="perfgate_require_baselines",
                    help="fail a phase that has no baseline (NEW) instead of passing it, with the command that "
                         "records one")
    group.addoption("--perfgate-allow-no-gpu", action="store_true", dest="perfgate_allow_no_gpu",
                    help="skip (not fail) GPU tests asked for with -m gpu or a CUDA --profile when no GPU is usable")
    group.addoption("--perfgate-reap-stale", action="store_true", dest="perfgate_reap_stale",
                    help="at start, stop perfgate servers leaked by runs that are gone (only those)")


def pytest_configure(config: pytest.Config) -> None:
    for line in ("gpu: needs a CUDA GPU and vLLM's CUDA build (skipped with the reason otherwise)",
                 "cpu: runs real vLLM's CPU build on the tiny synthetic model",
                 "slow: takes more than a few seconds (starts servers, drives load)",
                 "profiles(*names): launch profiles a test runs against (default by gpu/cpu marker)"):
        config.addinivalue_line("markers", line)
    if config.option.collectonly or getattr(config, "workerinput", None) is not None:
        pass
    api_key = None
    if var := config.getoption("perfgate_api_key_env"):
        api_key = os.environ.get(var)
        if not api_key:
            raise pytest.UsageError(f"--perfgate-api-key-env {var}: the environment variable {var} is not set "
                                    f"(fix: export {var}=<key>, or drop the option)")
    session = PerfgateSession(
        results_dir=Path("."),  # set below
        profiles=config.getoption("perfgate_profiles"),
        vllm_url=config.getoption("perfgate_vllm_url"),
        update_baselines=config.getoption("perfgate_update_baselines"),
        repeats=config.getoption("perfgate_repeats"),
        api_key=api_key,
        gpu_memory=config.getoption("perfgate_gpu_memory"),
        allow_incomparable=config.getoption("perfgate_allow_incomparable"),
        require_baselines=config.getoption("perfgate_require_baselines"),
        accept_regression=config.getoption("perfgate_accept_regression"),
    )
    results = config.getoption("perfgate_results_dir") or os.environ.get("PERFGATE_RESULTS_DIR")
    session.results_dir = Path(results) if results else Path(config.rootpath) / "results" / session.run_id
    config.perfgate = session  # type: ignore[attr-defined]
    session.progress = TerminalProgress(config)  # start stages, phases, ramps as they happen (-q: results only)
    # A background job of a script inherits SIGINT ignored; `kill -INT` must still stop the run
    # (PERFGATE_KEEP_SIGINT_IGNORED=1 keeps it ignored).
    restore_sigint()
    if config.getoption("perfgate_reap_stale") and getattr(config, "workerinput", None) is None:
        reap_stale(lambda line: print(line, file=sys.stderr))
    # SIGTERM (CI cancelling a job) must run the same teardown as Ctrl-C: servers reaped, results written.
    if hasattr(signal, "SIGTERM") and signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, _sigterm_as_keyboard_interrupt)


def _sigterm_as_keyboard_interrupt(signum: int, frame: object) -> None:
    # Hand SIGTERM to whatever handles SIGINT now. Inside an async test that is asyncio.Runner's handler,
    # which cancels the test's task so its `finally` blocks run (partial records written) before the
    # KeyboardInterrupt; a bare raise here would leave the task suspended and its results unwritten.
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not _sigterm_as_keyboard_interrupt:
        handler(signal.SIGINT, frame)
        return
    raise KeyboardInterrupt(f"signal {signum}")


def results_dir_ready(config: pytest.Config) -> Path:
    """Create and probe the results directory once, before minutes of GPU time are spent."""
    session: PerfgateSession = config.perfgate  # type: ignore[attr-defined]
    if not getattr(session, "_dir_checked", False):
        from perfgate.report import check_results_dir

        check_results_dir(session.results_dir)
        session._dir_checked = True  # type: ignore[attr-defined]
    return session.results_dir


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    # Fail early: an unwritable results directory is found before any server starts.
    # So is a --vllm-url that is down or is not vLLM: at session start, not at the first test's setup.
    if any("vllm_server" in getattr(item, "fixturenames", ()) for item in items):
        try:
            results_dir_ready(config)
            if url := config.getoption("perfgate_vllm_url"):
                from perfgate.serving.server import AttachedServer

                AttachedServer(url, api_key=config.perfgate.api_key).check()  # type: ignore[attr-defined]
        except PerfgateError as exc:
            raise pytest.UsageError(config.perfgate.redact(str(exc))) from None  # type: ignore[attr-defined]


def pytest_collection_finish(session: pytest.Session) -> None:
    """GPU tests asked for (-m gpu, a CUDA --profile) where no GPU is usable fail the session with the
    cause, before anything starts; --perfgate-allow-no-gpu skips them instead (rule: perfgate/gpu_guard.py)."""
    config = session.config
    if config.option.collectonly or config.getoption("perfgate_vllm_url"):
        return
    gpu_items = [item for item in session.items if item.get_closest_marker(GPU_MARKER) is not None]
    if not gpu_items:
        return
    asked = gpu_request(config.getoption("markexpr") or "", config.getoption("perfgate_profiles"), _is_cuda_profile)
    if asked is None or (reason := unavailable_reason("cuda")) is None:
        return
    if config.getoption("perfgate_allow_no_gpu"):
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=allowed_skip_reason(reason)))
        return
    raise pytest.UsageError(no_gpu_message(asked, len(gpu_items), reason))


def _is_cuda_profile(name: str) -> bool:
    try:
        return load_profile(name).platform == "cuda"
    except PerfgateError:
        return False  # a bad profile name is reported by the server fixture, with its fix


def profiles_for(metafunc_or_item, config: pytest.Config) -> list[str]:
    """Which profiles a test runs against: --profile, else its `profiles` marker, else by gpu/cpu marker."""
    from perfgate.serving.profile import load_profile

    marker = metafunc_or_item.definition.get_closest_marker("profiles") if hasattr(
        metafunc_or_item, "definition") else metafunc_or_item.get_closest_marker("profiles")
    node = metafunc_or_item.definition if hasattr(metafunc_or_item, "definition") else metafunc_or_item
    is_gpu = node.get_closest_marker("gpu") is not None
    chosen = config.getoption("perfgate_profiles")
    if chosen:
        if marker is not None:
            # A test pinned to profiles (e.g. an injected-slowdown profile) keeps them.
            return list(marker.args)
        wanted = "cuda" if is_gpu else "cpu"
        picked = []
        for name in chosen:
            try:
                platform = load_profile(name).platform
            except PerfgateError:
                picked.append(name)  # the fixture reports the bad profile with its fix
                continue
            if platform == wanted:
                picked.append(name)
        return picked
    if marker is not None:
        return list(marker.args)
    return list(DEFAULT_GPU_PROFILES if is_gpu else DEFAULT_CPU_PROFILES)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "perfgate_profile" not in metafunc.fixturenames:
        return
    config = metafunc.config
    if config.getoption("perfgate_vllm_url"):
        names = (config.getoption("perfgate_profiles") or ["attached"])[:1]
    else:
        names = profiles_for(metafunc, config)
    if not names:
        names = ["(none)"]  # the fixture skips: --profile chose none for this platform
    metafunc.parametrize("perfgate_profile", names, indirect=True, scope="session")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        target = item.funcargs.get("vllm_server") if hasattr(item, "funcargs") else None
        server = getattr(target, "server", None)
        log_path = getattr(server, "log_path", None)
        if log_path is not None:
            from perfgate.serving.server import tail

            session: PerfgateSession = item.config.perfgate  # type: ignore[attr-defined]
            # Access-log lines ("GET /metrics 200") crowd out the lines that say what went wrong.
            lines = [ln for ln in tail(Path(log_path), 400).splitlines() if not _ACCESS_LINE.search(ln)]
            report.sections.append((f"vLLM server log: {log_path} (last 60 lines, access log left out)",
                                    session.redact("\n".join(lines[-60:]))))
    if hasattr(item.config, "perfgate"):
        report.longrepr = _redacted(report.longrepr, item.config.perfgate)


_ACCESS_LINE = re.compile(r'"(GET|POST) /[^ ]* HTTP/1\.[01]" \d{3}')


def _redacted(longrepr, session: PerfgateSession):
    if session.api_key and longrepr is not None and session.api_key in str(longrepr):
        return session.redact(str(longrepr))
    return longrepr


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """After every fixture is torn down: write the report, then prove no vLLM process is left."""
    config = session.config
    pg: PerfgateSession | None = getattr(config, "perfgate", None)
    if pg is None or getattr(config, "workerinput", None) is not None:
        return
    if pg.phases or pg.servers:
        try:
            pg.write_manifest()
            from perfgate.report import write_run_report

            pg.report_paths = write_run_report(pg)  # type: ignore[attr-defined]
        except Exception as exc:  # the report must never hide the tests' own verdict
            pg.report_error = f"{type(exc).__name__}: {exc}"  # type: ignore[attr-defined]
    from perfgate.serving.server import leftover_processes, reap

    leftovers = leftover_processes(pg.run_id)
    if leftovers:
        reap(leftovers)
        pg.leaked = leftovers  # type: ignore[attr-defined]
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    pg: PerfgateSession | None = getattr(config, "perfgate", None)
    if pg is None or not (pg.phases or pg.servers or getattr(pg, "leaked", None)):
        return
    tr = terminalreporter
    tr.section("perfgate")
    for srv in pg.servers:
        state = f"healthy after {srv.healthy_after_s:.1f} s" if srv.healthy_after_s is not None else (srv.error or "not started")
        tr.write_line(f"server {srv.profile}: {state}")
    from perfgate.load.metrics import format_table

    last = {p.key: p for p in pg.phases}  # one table per phase key: its last repeat
    for key, phase in last.items():
        tr.write_line(format_table(phase.metrics, title=f"{key} (repeat {phase.repeat})"))
    for phase in pg.phases:
        flag = "" if phase.valid else "  INVALID: " + "; ".join(phase.invalid_reasons)
        m = phase.metrics
        hits = m.get("prefix_cache_hit_pct")
        tr.write_line(f"{phase.key} r{phase.repeat}: {m.get('request_throughput', float('nan')):.2f} req/s, "
                      f"p99 e2el {m.get('p99_e2el_ms', float('nan')):.0f} ms, "
                      f"median ttft {m.get('median_ttft_ms', float('nan')):.0f} ms, "
                      f"prefix-cache hits {'-' if hits is None else f'{hits:.1f}%'}{flag}")
    for key, entry in pg.verdicts.items():
        if entry.get("slo") is not None:  # says PROVISIONAL when the bounds are not reviewed yet
            tr.write_line(entry["slo"].headline(), yellow=entry["slo"].provisional)
        if entry.get("gate") is not None:  # opens with what changed since the baseline (vLLM a → b, flags)
            gate = entry["gate"]
            tr.write_line(gate.headline(), red=not gate.passed, yellow=gate.passed and gate.status == "new")
        if entry.get("capacity") is not None:  # capacity at the SLO: its bracket and gate (perfgate/run/capacity.py)
            capacity = entry["capacity"]
            tr.write_line(capacity.headline(), red=not capacity.passed,
                          yellow=capacity.passed and capacity.status != "pass")
        if entry.get("baseline_diff"):
            tr.write_line(f"baseline written for {key}:")
            for line in str(entry["baseline_diff"]).splitlines():
                tr.write_line("  " + line)
    new = [key for key, entry in pg.verdicts.items() if getattr(entry.get("gate"), "status", None) == "new"]
    if new:
        tr.write_line(f"NEW (no baseline, nothing compared): {', '.join(new)}. Record one with "
                      "--perfgate-update-baselines" + ("" if pg.require_baselines else
                                                        "; --perfgate-require-baselines makes this fail"),
                      yellow=not pg.require_baselines, red=pg.require_baselines)
    if getattr(pg, "report_error", None):
        tr.write_line(f"report could not be written: {pg.report_error}", red=True)
    tr.write_line(f"results: {pg.results_dir}")
    if getattr(pg, "leaked", None):
        tr.write_line(f"FAILED: vLLM processes were left running at session end and were killed: "
                      f"{sorted(pg.leaked)}", red=True)
