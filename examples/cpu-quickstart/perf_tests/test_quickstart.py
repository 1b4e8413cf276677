"""The example's perf test: a test reads like the SLO it checks.

`perfgate` is a fixture of perfgate's pytest plugin (installed with the package): it starts the profile's
vLLM server once per session, measures a scenario against it, and checks SLOs and the stored baseline.
"""

import pytest

# cpu: runs on vLLM's CPU build. profiles: which profiles/*.toml this test runs against.
pytestmark = [pytest.mark.cpu, pytest.mark.profiles("quickstart-cpu")]


async def test_chat_meets_its_slos_and_baseline(perfgate):
    phase = await perfgate.measure("quickstart-chat")  # repeats: [tool.perfgate.gate.class.cpu] in pyproject.toml
    perfgate.assert_slos(phase)            # slos/cpu.toml, in every repeat
    perfgate.assert_no_regression(phase)   # baselines/cpu/quickstart-cpu/quickstart-chat.json (NEW until recorded)
