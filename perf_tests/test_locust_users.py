"""User-style load: Locust users ramping up against the server, judged from raw per-request records."""

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.cpu
async def test_cpu_locust_ramp_serves_every_user(perfgate):
    phase = await perfgate.measure_locust("cpu-closed", ramp="2:2:10,4:2:10")
    perfgate.assert_slos(phase)
    assert phase.metrics["completed"] > 0


@pytest.mark.gpu
async def test_chat_users_ramp_within_slos(perfgate):
    """16 then 32 chat users, 20 s each: latency SLOs hold as users pile on."""
    phase = await perfgate.measure_locust("chat-users", ramp="16:8:20,32:16:20")
    perfgate.assert_slos(phase)
