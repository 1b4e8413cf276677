"""The fixtures perfgate's pytest plugin provides, in any project that installs perfgate.

``perfgate.pytest_plugin`` registers this module (its ``pytest_plugins``), so the fixtures come with the
``pytest11`` entry point: a team's repository needs no conftest.py for them.

- ``perfgate_profile``: the launch profile a test instance runs against (parametrized by the plugin).
- ``vllm_server``: one healthy vLLM server per profile per session (or the ``--vllm-url`` server).
- ``perfgate``: a ``PhaseRunner`` on the test's server::

    async def test_chat_meets_its_slos(perfgate):
        phase = await perfgate.measure("chat")
        perfgate.assert_slos(phase)
        perfgate.assert_no_regression(phase)

Profiles, scenarios, SLOs and baselines are read from the project pytest runs in (``perfgate._toml.data_dir``):
this module hands pytest's rootdir to that lookup for the length of the session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from perfgate._errors import PerfgateError
from perfgate._toml import pop_project_root, push_project_root
from perfgate.run.session import ServerRecord
from perfgate.run.target import Target

if TYPE_CHECKING:
    from perfgate.run.runner import PhaseRunner

# The launcher and the runner (load engine, telemetry, reports) are imported when a test first asks for a
# server: this module loads in every pytest run of an environment where perfgate is installed.


def pytest_configure(config: pytest.Config) -> None:
    push_project_root(config.rootpath)


def pytest_unconfigure(config: pytest.Config) -> None:
    pop_project_root()


@pytest.fixture(scope="session")
def perfgate_profile(request: pytest.FixtureRequest) -> str:
    """The launch profile name this test instance runs against (parametrized by the plugin)."""
    return request.param


@pytest.fixture(scope="session")
def vllm_server(perfgate_profile: str, request: pytest.FixtureRequest) -> Target:
    """A healthy vLLM server for ``perfgate_profile`` (or the --vllm-url server), as a load ``Target``."""
    from perfgate.run.launch import attach_target, launch_target

    config = request.config
    pg = config.perfgate
    if perfgate_profile == "(none)":
        pytest.skip("--profile named no profile for this test's platform (gpu tests take cuda profiles, "
                    "cpu tests cpu profiles)")
    try:
        if pg.vllm_url:
            target = attach_target(pg, perfgate_profile)
        else:
            target = launch_target(pg, perfgate_profile, request.addfinalizer)
    except PerfgateError as exc:
        if getattr(exc, "skip", False):
            pytest.skip(str(exc))
        pg.servers.append(ServerRecord(perfgate_profile, None, getattr(exc, "log_path", None), "", str(exc)))
        pytest.fail(pg.redact(str(exc)), pytrace=False)
    config.hook.pytest_perfgate_server_started(config=config, profile=perfgate_profile, server=target.server,
                                               healthy_after_s=target.healthy_after_s)
    return target


def _fail_test(message: str) -> None:
    """A failed check fails the test with its verdict table alone (no traceback into perfgate)."""
    pytest.fail(message, pytrace=False)


@pytest.fixture
def perfgate(vllm_server: Target, request: pytest.FixtureRequest) -> PhaseRunner:
    """Measure scenarios against the test's server, then assert SLOs and the baseline gate."""
    from perfgate.run.runner import PhaseRunner

    return PhaseRunner(vllm_server, request.config.perfgate,
                       hook=request.config.hook, config=request.config, test_id=request.node.nodeid,
                       fail=_fail_test, properties=request.node.user_properties)
