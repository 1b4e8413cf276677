"""Identity vs change: a vLLM upgrade is compared and named; another GPU, model or workload is refused.

The figures are real: the committed H200 baseline (vLLM 0.25.1, six repeats in two server sessions) and
the committed CPU one. A "run" is rebuilt from a baseline's own repeats (an unchanged server), with the
fingerprint a newer vLLM would record; the 5 % loss scales its throughput.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest

from perfgate.core.phase import PhaseResult
from perfgate.load.scenario import Scenario, load_scenario
from perfgate.report.tables import table
from perfgate.run.target import model_identity
from perfgate.verdict.baseline import baseline_from_phases, load_baseline
from perfgate.verdict.gate import INCOMPARABLE, INCONCLUSIVE, PASS, REGRESSED, compare
from perfgate.verdict.gate_settings import load_gate_settings
from perfgate.verdict.identity import check_identity, flag_changes, normalized_flags

REPO = Path(__file__).resolve().parent.parent
H200 = REPO / "baselines" / "h200" / "optimized" / "fixed-512-256.json"
# The same baseline as first committed, before fingerprints carried the model and the scenario's content.
H200_BEFORE_IDENTITY = REPO / "tests" / "data" / "h200-fixed-512-256-before-identity.json"
CPU = REPO / "baselines" / "cpu" / "cpu-tiny" / "cpu-closed.json"


def rerun(path: Path, *, scale: dict[str, float] | None = None, **fingerprint) -> list[PhaseResult]:
    """The baseline's recorded repeats as a run in new server sessions, with ``fingerprint`` changes."""
    b = load_baseline(path)
    phases = []
    for r in range(b.repeats):
        metrics = {m: v[r] * (scale or {}).get(m, 1.0) for m, v in b.metrics.items()}
        if b.gpu_class != "cpu":  # this code measures energy per token on a GPU; the committed baselines predate it
            metrics.setdefault("energy_per_output_token_j", 0.1)
        phases.append(PhaseResult(b.profile, b.scenario, b.gpu_class, metrics=metrics, repeat=r,
                                  server_session=f"new-{b.session_of_repeat[r]}", started_at=float(r),
                                  fingerprint={**b.fingerprint, **fingerprint}))
    return phases


def test_a_vllm_upgrade_of_an_unchanged_server_is_compared_named_and_passes():
    base = load_baseline(H200)
    assert base.vllm_version == "0.25.1"
    verdict = compare(rerun(H200, vllm_version="0.26.0"), base, load_gate_settings("h200"))
    assert verdict.status == PASS, table(verdict)
    assert verdict.changes == ["vLLM 0.25.1 → 0.26.0"]
    first = verdict.first_line()
    assert first.startswith("vLLM 0.25.1 → 0.26.0: output_throughput +0.0% [") and "]" in first, first
    assert "vLLM 0.25.1 → 0.26.0" in verdict.headline() and "PASS" in verdict.headline()
    assert "vLLM 0.25.1 → 0.26.0" in table(verdict).splitlines()[0]


def test_a_vllm_upgrade_that_loses_5_percent_throughput_is_regressed_and_names_the_change():
    """Synthetic repeats (0.1 % noise, so a 5 % loss is resolved against the 4.5 % margin) under the committed H200 baseline's fingerprint (vLLM 0.25.1)."""
    fingerprint = load_baseline(H200).fingerprint
    rng = random.Random(12)

    def session(sid: str, n: int, loss: float = 0.0, **fp) -> list[PhaseResult]:
        return [PhaseResult("optimized", "fixed-512-256", "h200", repeat=r, server_session=sid, started_at=float(r),
                            fingerprint={**fingerprint, **fp}, metrics={
                                m: v * (1 - (loss if m.endswith("throughput") else 0.0)) * math.exp(rng.gauss(0, 0.001))
                                for m, v in {"output_throughput": 5361.0, "request_throughput": 20.9,
                                             "p99_e2el_ms": 1616.0, "median_tpot_ms": 5.2,
                                             "vram_used_gib_peak": 128.0, "energy_per_output_token_j": 0.1}.items()})
                for r in range(n)]

    base = baseline_from_phases(session("b0", 3) + session("b1", 3))
    settings = load_gate_settings("h200")
    same = compare(session("c", 4, vllm_version="0.26.0"), base, settings)
    assert same.status == PASS and same.changes == ["vLLM 0.25.1 → 0.26.0"], table(same)
    verdict = compare(session("c", 6, loss=0.05, vllm_version="0.26.0", driver="590.10"), base, settings)
    assert verdict.status == REGRESSED, table(verdict)
    assert [r.metric for r in verdict.regressions] == ["output_throughput"]
    first = verdict.first_line()
    assert re.fullmatch(r"vLLM 0\.25\.1 → 0\.26\.0; driver 580\.159\.04 → 590\.10: output_throughput "
                        r"-(4\.9|5\.0|5\.1)% \[-5\.\d%, -[45]\.\d%\]", first), first
    assert first in verdict.headline() and "REGRESSED" in verdict.headline()


def test_with_the_recorded_h200_noise_a_5_percent_loss_in_one_run_is_not_a_pass():
    """The committed H200 baseline's session-to-session spread: six repeats bound a 5 % loss to about
    [-6.3 %, -3.7 %], which straddles the 4.5 % margin: INCONCLUSIVE (the runner adds repeats), never PASS."""
    loss = {"output_throughput": 0.95, "total_token_throughput": 0.95, "request_throughput": 0.95}
    verdict = compare(rerun(H200, scale=loss, vllm_version="0.26.0"), load_baseline(H200),
                      load_gate_settings("h200"))
    assert verdict.status in (REGRESSED, INCONCLUSIVE) and not verdict.passed, table(verdict)
    assert verdict.first_line().startswith("vLLM 0.25.1 → 0.26.0: output_throughput -5.0% [")


def test_a_flag_change_is_named_after_normalization():
    base = load_baseline(H200)
    line = base.fingerprint["command_line"]
    # Another cache path, --x_y spelling and --x=v form: the same launch.
    same = (line.replace("/root/.cache", "/home/ci/.cache").replace("--max-num-seqs 256", "--max_num_seqs=256"))
    assert flag_changes(line, same) == ""
    assert compare(rerun(H200, command_line=same), base, load_gate_settings("h200")).changes == []
    faster = line.replace("--max-num-seqs 256", "--max-num-seqs 128") + " --enforce-eager"
    verdict = compare(rerun(H200, command_line=faster), base, load_gate_settings("h200"))
    assert verdict.changes == ["flags +--enforce-eager, --max-num-seqs 256 → 128"]


def test_a_run_on_another_gpu_model_is_refused():
    verdict = compare(rerun(H200, gpu_model="NVIDIA H100 80GB HBM3"), load_baseline(H200),
                      load_gate_settings("h200"))
    assert verdict.status == INCOMPARABLE and not verdict.passed
    assert "GPU model differs: baseline 'NVIDIA H200', this run 'NVIDIA H100 80GB HBM3'" in verdict.headline()
    # A run whose NVML could not name the card is refused too: the card cannot be shown to be the same.
    verdict = compare(rerun(H200, gpu_model=None), load_baseline(H200), load_gate_settings("h200"))
    assert verdict.status == INCOMPARABLE and "GPU model unknown for this run" in verdict.headline()


def test_a_changed_scenario_under_the_same_name_is_refused():
    spec = load_scenario("cpu-closed")
    changed = Scenario.model_validate({**spec.model_dump(), "num_requests": (spec.num_requests or 10) + 1})
    assert changed.content_digest() != spec.content_digest()
    # Name, description and the client's self-check do not change what is sent.
    renamed = Scenario.model_validate({**spec.model_dump(), "name": "other", "description": "reworded"})
    assert renamed.content_digest() == spec.content_digest()

    base_phases = rerun(CPU, scenario_digest=spec.content_digest())
    base = baseline_from_phases(base_phases)
    settings = load_gate_settings("cpu")
    same = compare(rerun(CPU, scenario_digest=spec.content_digest(), vllm_version="0.33.0"), base, settings)
    assert same.status == PASS and same.changes == ["vLLM 0.32.0 → 0.33.0"], table(same)
    other = compare(rerun(CPU, scenario_digest=changed.content_digest()), base, settings)
    assert other.status == INCOMPARABLE and "scenario content differs" in other.headline()


def test_other_model_architecture_dtype_or_method_is_refused():
    fp = {"gpu_model": "NVIDIA H200", "model_architecture": "Qwen3ForCausalLM (layers 36)", "model_dtype": "bfloat16"}
    assert not check_identity(fp, dict(fp), old_method=2, new_method=2).problems
    for change in ({"model_architecture": "Qwen3ForCausalLM (layers 40)"}, {"model_dtype": "float16"}):
        problems = check_identity(fp, {**fp, **change}, old_method=2, new_method=2).problems
        assert len(problems) == 1 and "differs" in problems[0]
    assert "measurement method differs" in check_identity(fp, fp, old_method=2, new_method=3).problems[0]


def test_an_old_baseline_without_the_new_fields_is_compared_and_says_what_was_not_checked():
    """A baseline recorded before model_architecture and scenario_digest existed (the first H200 one)."""
    base = load_baseline(H200_BEFORE_IDENTITY)
    assert "scenario_digest" not in base.fingerprint and "model_architecture" not in base.fingerprint
    run = rerun(H200_BEFORE_IDENTITY, vllm_version="0.26.0", scenario_digest=load_scenario("fixed-512-256").content_digest(),
                model_architecture="Qwen3ForCausalLM (layers 36, hidden 2560, heads 32, kv heads 8)",
                model_dtype="bfloat16")
    verdict = compare(run, base, load_gate_settings("h200"))
    assert verdict.status == PASS, table(verdict)
    assert verdict.unchecked == ["model architecture (not recorded by the baseline)",
                                 "scenario content (not recorded by the baseline)"]
    assert "identity not checked" in table(verdict)
    # The old file's dtype is read from its command line (--dtype bfloat16): a float16 run is refused.
    assert compare(rerun(H200_BEFORE_IDENTITY, model_dtype="float16"), base).status == INCOMPARABLE


def test_normalized_flags_drop_the_program_model_and_where_it_listens():
    flags = normalized_flags("python -m vllm.entrypoints.openai.api_server --model /m --host 0.0.0.0 "
                             "--port 8000 --served-model-name x --max_model_len=4096 --enforce-eager "
                             "--compilation-config.mode 3 --seed -1")
    assert flags == {"--max-model-len": "4096", "--enforce-eager": "", "--compilation-config.mode": "3",
                     "--seed": "-1"}
    assert normalized_flags("(attached to http://h:8000)") == {"": "(attached to http://h:8000)"}
    assert flag_changes("vllm serve /m --max-num-seqs 8", "(attached to http://h:8000)") == \
        "not comparable: launched → (attached to http://h:8000)"


def test_model_identity_reads_config_json_and_the_dtype_flag(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "architectures": ["Qwen3ForCausalLM"], "num_hidden_layers": 36, "hidden_size": 2560,
        "num_attention_heads": 32, "num_key_value_heads": 8, "torch_dtype": "bfloat16"}))
    got = model_identity(str(tmp_path), "vllm serve /m --dtype auto")
    assert got == {"model_architecture": "Qwen3ForCausalLM (layers 36, hidden 2560, heads 32, kv heads 8)",
                   "model_dtype": "bfloat16"}
    assert model_identity(str(tmp_path), "vllm serve /m --dtype float16")["model_dtype"] == "float16"
    assert model_identity(None, "(attached to http://h)") == {"model_architecture": None, "model_dtype": None}


@pytest.mark.parametrize("path", [H200, CPU])
def test_committed_baselines_still_load_and_compare_with_themselves(path):
    verdict = compare(rerun(path), load_baseline(path), load_gate_settings(load_baseline(path).gpu_class))
    assert verdict.status == PASS and verdict.changes == [], table(verdict)
    assert verdict.first_line().startswith("no change in vLLM, torch, CUDA, driver, flags: ")
