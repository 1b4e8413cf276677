"""The GPU suite: each test is one SLO check against every profile (`--profile`, default defaults+optimized).

Run on a self-hosted GPU runner: `pytest perf_tests -m gpu`. SLOs come from slos/<gpu-class>.toml,
baselines from baselines/<gpu-class>/<profile>/<scenario>.json. Repeats come from [tool.perfgate.gate] in
pyproject.toml (4, more while the gate is inconclusive).
"""

import pytest

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


async def test_chat_meets_its_slos(perfgate):
    """The seed write-up's chat workload (Poisson arrivals) within the GPU class's SLO set."""
    phase = await perfgate.measure("chat")
    perfgate.assert_slos(phase)
    perfgate.assert_no_regression(phase)


async def test_fixed_512_256_throughput_holds(perfgate):
    """512-in/256-out at concurrency 32: batch throughput and latency against the baseline."""
    phase = await perfgate.measure("fixed-512-256")
    perfgate.assert_slos(phase)
    perfgate.assert_no_regression(phase)


async def test_capacity_at_slo(perfgate):
    """The highest Poisson chat rate whose latency SLOs hold on this GPU class, as a bracket [highest passing,
    lowest failing), gated against the profile's capacity baseline (scenarios/chat-capacity.toml sweeps 4, 8,
    16, ... req/s and bisects; slos/<gpu>.toml [*/chat-capacity] holds the bounds, the same for every profile)."""
    capacity = await perfgate.capacity("chat-capacity")
    perfgate.assert_capacity(capacity)
