"""perfgate's figures against ``vllm bench serve``'s and vLLM's own counters, on one real CPU server.

A ``perfgate bench`` run placed between two ``vllm bench serve`` runs of the same closed-loop workload
must land within their spread, widened by 5 % (throughput), 15 % (median TTFT), 10 % (median TPOT):
identical CPU runs differ by ~12 % in throughput, so a bare "within 3 %" would be flaky here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
WORKLOAD = ["--random-input-len", "128", "--random-output-len", "64", "--num-prompts", "128",
            "--max-concurrency", "8", "--ignore-eos", "--seed", "0"]
WIDEN = {"request_throughput": 0.05, "median_ttft_ms": 0.15, "median_tpot_ms": 0.10}

pytestmark = [pytest.mark.cpu, pytest.mark.slow]


@pytest.fixture(scope="module")
def cpu_server(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("vllm")
    from perfgate.models import resolve_model
    from perfgate.profile import load_profile
    from perfgate.server import VllmServer

    profile = load_profile("cpu-tiny", profiles_dir=REPO / "profiles")
    model_dir = resolve_model(profile.model)
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    with VllmServer(profile, model_dir, log_path=log) as server:
        yield server, profile.served_model_name, model_dir


def run_vllm_bench(base_url: str, model: str, tokenizer: str, out: Path) -> dict:
    cmd = [sys.executable, str(REPO / "benchmarks" / "vllm_bench_serve.py"), "--base-url", base_url,
           "--model", model, "--tokenizer", tokenizer, "--dataset-name", "random", *WORKLOAD,
           "--disable-tqdm", "--save-result", "--result-filename", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=out.parent, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text())


def run_perfgate_bench(base_url: str, model: str, tokenizer: str, out: Path) -> dict:
    cmd = [sys.executable, "-m", "perfgate", "bench", "--base-url", base_url, "--model", model,
           "--tokenizer", tokenizer, *WORKLOAD, "--result-file", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Median TTFT (ms):" in proc.stdout  # the table is printed
    return json.loads(out.read_text())


def _compare(first: dict, ours: dict, second: dict) -> tuple[bool, list[str]]:
    lines, ok = [], True
    for key, widen in WIDEN.items():
        lo, hi = sorted((first[key], second[key]))
        lo, hi = lo * (1 - widen), hi * (1 + widen)
        inside = lo <= ours[key] <= hi
        ok &= inside
        lines.append(f"{key}: vllm {first[key]:.2f} / {second[key]:.2f}, perfgate {ours[key]:.2f} "
                     f"(allowed {lo:.2f}..{hi:.2f}){'' if inside else '  <-- outside'}")
    return ok, lines


def test_perfgate_bench_lands_between_two_vllm_bench_runs(cpu_server, tmp_path: Path) -> None:
    server, model, tokenizer = cpu_server
    # Warm the server: the CPU build compiles shapes on its first requests (discarded run).
    run_vllm_bench(server.base_url, model, tokenizer, tmp_path / "warm.json")
    report: list[str] = []
    # Up to 6 attempts of vllm / perfgate / vllm: the CPU machines are 2 shared cores, and a neighbour's
    # burst (or the CPU build switching between its fast and slow regimes) moves one run by far more than
    # any client difference; a real disagreement fails every attempt.
    any_conclusive = False
    for attempt in range(6):
        first = run_vllm_bench(server.base_url, model, tokenizer, tmp_path / f"vllm-{attempt}a.json")
        ours = run_perfgate_bench(server.base_url, model, tokenizer, tmp_path / f"perfgate-{attempt}.json")
        second = run_vllm_bench(server.base_url, model, tokenizer, tmp_path / f"vllm-{attempt}b.json")
        # Counts are exact whatever the noise.
        assert ours["completed"] == first["completed"] == 128 and ours["failed"] == 0
        assert ours["total_input_tokens"] == first["total_input_tokens"]
        assert ours["total_output_tokens"] == first["total_output_tokens"]
        assert ours["valid"] and ours["token_count_mismatches"] == 0
        ok, lines = _compare(first, ours, second)
        # When vLLM's own two runs disagree by more than a quarter, the server switched regimes between
        # them (the CPU build's fast ~30 req/s and slow ~15 req/s states): that attempt says nothing about
        # the client. Only attempts whose reference held count against perfgate.
        a, b = first["request_throughput"], second["request_throughput"]
        conclusive = abs(a - b) <= 0.25 * max(a, b)
        report += [f"attempt {attempt + 1}{'' if conclusive else ' (inconclusive: vllm runs differ >25 %)'}:",
                   *lines]
        any_conclusive = any_conclusive or conclusive
        if ok:
            break
    print("\n".join(report))
    if not ok and not any_conclusive:
        pytest.skip("every attempt inconclusive: vllm bench serve's own runs disagreed by >25 % "
                    "(CPU regime switching)\n" + "\n".join(report))
    assert ok, "\n".join(report)


def _counters(metrics_url: str) -> dict[str, float]:
    from prometheus_client.parser import text_string_to_metric_families

    totals: dict[str, float] = {}
    text = httpx.get(metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in ("vllm:request_success_total", "vllm:generation_tokens_total",
                               "vllm:prompt_tokens_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


async def test_counts_match_vllm_metrics_counters(cpu_server) -> None:
    from perfgate.load import run_load
    from perfgate.scenario import load_scenario

    server, model, tokenizer = cpu_server
    scenario = load_scenario("cpu-poisson", REPO / "scenarios")
    scenario = scenario.model_copy(update={"num_requests": 16})
    before: dict[str, float] = {}

    async def started() -> None:
        before.update(_counters(server.metrics_url))

    result = await run_load(server.base_url, scenario, model=model, tokenizer=tokenizer, window_started=started)
    after = _counters(server.metrics_url)
    m = result.metrics
    assert m["completed"] == 16 and m["token_count_mismatches"] == 0
    assert after["vllm:request_success_total"] - before["vllm:request_success_total"] == m["completed"]
    assert after["vllm:generation_tokens_total"] - before["vllm:generation_tokens_total"] == m["total_output_tokens"]
    assert after["vllm:prompt_tokens_total"] - before["vllm:prompt_tokens_total"] == m["total_input_tokens"]


@pytest.mark.parametrize("transport", ["fast", "httpx"])
async def test_chat_prompts_are_exact_on_real_vllm(cpu_server, transport: str) -> None:
    """Chat-template token counting agrees with the server's usage.prompt_tokens (both HTTP paths)."""
    from perfgate.load import run_load
    from perfgate.scenario import load_scenario

    server, model, tokenizer = cpu_server
    scenario = load_scenario("cpu-chat", REPO / "scenarios").model_copy(update={"num_requests": 8})
    result = await run_load(server.base_url, scenario, model=model, tokenizer=tokenizer, transport=transport)
    m = result.metrics
    assert m["completed"] == 8 and m["failed"] == 0
    assert m["token_count_mismatches"] == 0, result.invalid_reasons
    # ignore_eos: every request generated exactly what it asked, and one token per token event.
    assert all(len(r.token_times) == r.output_tokens == r.output_tokens_expected for r in result.records)
