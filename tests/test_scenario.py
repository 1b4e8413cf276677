"""Scenarios: every shipped file loads, and a bad field names the file, the field and what is allowed."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from perfgate._errors import ConfigError
from perfgate.load.scenario import (
    ClosedLoop,
    Fixed,
    OpenLoop,
    available_scenarios,
    load_scenario,
    scenario_from_flags,
)

REPO = Path(__file__).resolve().parents[1]
VALID = """
description = "test workload"
num_requests = 10
[prompt_tokens]
kind = "fixed"
value = 16
[output_tokens]
kind = "fixed"
value = 8
[load]
kind = "closed"
concurrency = 2
"""


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_scenarios_load_and_name_their_workload() -> None:
    names = available_scenarios(REPO / "scenarios")
    for required in ("chat", "fixed-512-256", "long-context", "cpu-closed", "cpu-poisson"):
        assert required in names
    for name in names:
        scenario = load_scenario(name, REPO / "scenarios")
        assert scenario.name == name
        assert scenario.description
        assert scenario.endpoint in scenario.workload()


def test_shipped_cpu_scenarios_fit_the_tiny_models_context() -> None:
    for name in available_scenarios(REPO / "scenarios"):
        if name.startswith("cpu-"):
            assert load_scenario(name, REPO / "scenarios").max_total_tokens <= 2048


def test_seed_chat_and_fixed_workloads_are_what_they_say() -> None:
    chat = load_scenario("chat", REPO / "scenarios")
    assert chat.endpoint == "/v1/chat/completions"
    assert chat.output_tokens.max == 512 and chat.sampling.temperature == 0.7
    assert isinstance(chat.load, OpenLoop) and chat.load.arrival == "poisson"
    fixed = load_scenario("fixed-512-256", REPO / "scenarios")
    assert fixed.prompt_tokens == Fixed(value=512) and fixed.output_tokens == Fixed(value=256)
    assert fixed.ignore_eos and isinstance(fixed.load, ClosedLoop) and fixed.load.concurrency == 32


def test_valid_file_and_name_from_stem(tmp_path: Path) -> None:
    scenario = load_scenario(str(write(tmp_path, VALID, "mine.toml")))
    assert scenario.name == "mine"
    assert scenario.load == ClosedLoop(concurrency=2)


@pytest.mark.parametrize("edit, field, allowed", [
    ("bogus = 1\n" + VALID, "bogus", "allowed here: "),
    (VALID + "surprise = 1\n", "load.closed.surprise", "allowed here: concurrency, kind"),
    (VALID.replace('kind = "closed"\nconcurrency = 2', 'kind = "open"\nrate = -3'), "load.open.rate",
     "greater than 0"),
    (VALID.replace("value = 8", "value = 0"), "output_tokens.fixed.value", "greater than 0"),
    (VALID.replace('kind = "closed"', 'kind = "sometimes"'), "load", "'closed', 'open'"),
    (VALID.replace("num_requests = 10", ""), "(top level)", "num_requests or duration_s"),
    (VALID.replace('[load]', '[load.extra]\nx=1\n[load]'), "load", ""),
])
def test_bad_field_names_file_field_and_rule(tmp_path: Path, edit: str, field: str, allowed: str) -> None:
    path = write(tmp_path, edit)
    with pytest.raises(ConfigError) as info:
        load_scenario(str(path))
    text = str(info.value)
    assert str(path) in text
    assert f"'{field}" in text
    assert allowed in text


def test_unknown_key_lists_the_allowed_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_scenario(str(write(tmp_path, "num_request = 3\n" + VALID)))
    assert "num_requests" in str(info.value) and "warmup" in str(info.value)


def test_poisson_with_burstiness_is_refused(tmp_path: Path) -> None:
    text = VALID.replace('kind = "closed"\nconcurrency = 2', 'kind = "open"\nrate = 2\nburstiness = 0.5')
    with pytest.raises(ConfigError, match="gamma"):
        load_scenario(str(write(tmp_path, text)))


def test_missing_scenario_lists_choices(tmp_path: Path) -> None:
    write(tmp_path, VALID, "here.toml")
    with pytest.raises(ConfigError, match="use one of: here"):
        load_scenario("nothere", tmp_path)


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="line 2"):
        load_scenario(str(write(tmp_path, 'description = "x"\nrate = = 3\n')))


def test_length_distributions_sample_in_range() -> None:
    rng = random.Random(1)
    uniform = load_scenario("chat", REPO / "scenarios").output_tokens
    values = {uniform.sample(rng) for _ in range(500)}
    assert min(values) >= 32 and max(values) <= 512 and len(values) > 50


def test_flags_map_like_vllm_bench_serve() -> None:
    closed = scenario_from_flags(input_len=128, output_len=64, num_prompts=10, request_rate=float("inf"),
                                 max_concurrency=4)
    assert closed.load == ClosedLoop(concurrency=4)
    bursty = scenario_from_flags(input_len=128, output_len=64, num_prompts=10, request_rate=5.0, burstiness=0.5)
    assert isinstance(bursty.load, OpenLoop) and bursty.load.arrival == "gamma"


def test_shipped_shared_prefix_scenario_declares_its_cache_share() -> None:
    sc = load_scenario("chat-system-prompt", REPO / "scenarios")
    assert sc.shared_prefix_tokens == 1024 < sc.prompt_tokens.min
    assert sc.expected_prefix_hit_pct() == pytest.approx(100 * 1024 / 1664)
    assert "first 1024 shared within a phase" in sc.workload()
    # Every other shipped scenario shares nothing: any prefix-cache hit there is a re-sent prompt.
    for name in available_scenarios(REPO / "scenarios"):
        if name != "chat-system-prompt":
            assert load_scenario(name, REPO / "scenarios").expected_prefix_hit_pct() == 0.0
