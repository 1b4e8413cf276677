"""The CPU path: real vLLM (CPU build) serving the tiny synthetic Qwen3, end to end.

`pytest perf_tests -m cpu` on any 2-core machine; the same tests a GPU runner runs, at toy scale.
"""

import pytest

pytestmark = [pytest.mark.cpu, pytest.mark.slow]


async def test_closed_loop_meets_cpu_slos_and_baseline(perfgate):
    phase = await perfgate.measure("cpu-closed", repeats=3)
    perfgate.assert_slos(phase)
    perfgate.assert_no_regression(phase)


async def test_poisson_arrivals_meet_cpu_slos(perfgate):
    phase = await perfgate.measure("cpu-poisson", repeats=1)
    perfgate.assert_slos(phase)


async def test_server_counts_match_the_client(perfgate):
    """vLLM's own /metrics counters agree with what the client saw: nobody is miscounting."""
    phase = await perfgate.measure("cpu-closed", repeats=1)
    m = phase.metrics
    assert m["server_requests_completed"] == m["completed"]
    assert m["server_generation_tokens"] == m["total_output_tokens"]


async def test_capacity_at_slo(perfgate):
    """The highest Poisson rate whose latency SLOs hold, as a bracket, gated against the capacity baseline.

    scenarios/cpu-capacity.toml sweeps 1.5, 3, 6 req/s then bisects; slos/cpu.toml [*/cpu-capacity] holds the
    bounds each point is judged on and the capacity floor."""
    capacity = await perfgate.capacity("cpu-capacity")
    perfgate.assert_capacity(capacity)
    sweep = capacity.sweeps[-1]
    # Both ends found by real windows: the first rate held, a later one broke the SLOs or saturated the server.
    assert sweep.lower is not None and sweep.upper is not None and sweep.lower < sweep.upper
    assert sweep.points[0].passed and any(p.verdict in ("fail", "saturated") for p in sweep.points)
    for point in sweep.points:  # every point is a measured phase on disk, with its records
        assert (perfgate.results_dir / point.phase_file).is_file()
        assert point.metrics["completed"] > 0
