"""Physical floors of SLO bounds: the repository's sets pass, the seed's P99 on `chat` is refused with the sums."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from perfgate.cli import main
from perfgate.core.hardware import gpu_class
from perfgate.load.scenario import load_scenario
from perfgate.models import resolve_model
from perfgate.models.shape import read_model_shape
from perfgate.serving.profile import load_profile
from perfgate.verdict.physics import check_all, check_set, quantile
from perfgate.verdict.slo_files import load_slos

REPO = Path(__file__).resolve().parent.parent
# The seed's A10G set as slos/a10g.toml held it before it was paired with chat-short: P99 <= 1200 ms on chat.
SEED_ON_CHAT = """method_version = 2
extends = "common"
[slo."*/chat"]
gpu_util_pct_mean = { min = 55 }
request_throughput = { min = 6 }
p99_e2el_ms = { max = 1200 }
"""


@pytest.fixture(autouse=True)
def models_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PERFGATE_MODELS_DIR", str(tmp_path_factory.getbasetemp() / "models-physics"))


def seed_slos_dir(tmp_path: Path) -> Path:
    shutil.copy(REPO / "slos" / "common.toml", tmp_path / "common.toml")
    (tmp_path / "a10g.toml").write_text(SEED_ON_CHAT)
    return tmp_path


def test_repository_slo_sets_have_no_bound_below_its_floor(capsys):
    assert main(["slos", "check"]) == 0
    out = capsys.readouterr().out
    assert "no bound below its physical floor" in out
    assert re.search(r"ok a10g/optimized/chat-short: 3 bound", out)  # the seed's set, on its paired scenario


def test_seed_p99_on_chat_is_refused_with_the_arithmetic(tmp_path, capsys):
    code = main(["slos", "check", "--slos-dir", str(seed_slos_dir(tmp_path)), "--gpu-class", "a10g",
                 "--profile", "optimized", "--scenario", "chat"])
    out = capsys.readouterr().out
    assert code == 1
    refused = next(line for line in out.splitlines() if line.strip().startswith("REFUSED: p99_e2el_ms"))
    # 4.02 B params x 2 B = 8.04 GB per token step over 600 GB/s = 13.4 ms; chat's p99 output is 507 tokens
    assert "8.04 GB / 600 GB/s" in out and "13.4 ms a token" in out
    assert "506 decode steps (p99 output 507 tokens) x 13.4 ms" in refused
    assert "> the bound 1,200 ms" in refused
    assert "REFUSED: 1 bound(s) below the physical floor" in out
    assert "ok: request_throughput" in out  # a rate the card can reach is not refused


def test_floors_follow_the_sums(tmp_path):
    model = Path(resolve_model("synthetic:qwen3-4b-instruct-2507"))
    shape = read_model_shape(model)
    slos = load_slos("a10g", "optimized", "chat", seed_slos_dir(tmp_path))
    report = check_set(slos, load_profile("optimized", gpu_class="a10g", profiles_dir=REPO / "profiles"),
                       load_scenario("chat", REPO / "scenarios"), gpu_class("a10g"), shape)
    step = shape.params * 2 / 600e9  # tied embeddings: every parameter is streamed once a token
    assert step == pytest.approx(0.0134, rel=0.01)
    e2e = next(c for c in report.checks if c.metric == "p99_e2el_ms")
    floor_ms = float(re.search(r"floor ([\d,.]+) ms", e2e.arithmetic).group(1).replace(",", ""))
    assert floor_ms == pytest.approx((step + 506 * step) * 1e3, abs=0.1)  # prefill of 32 tokens is weight-bound
    assert not e2e.ok


def test_a_throughput_above_its_ceiling_and_vram_below_the_weights_are_refused(tmp_path):
    shutil.copy(REPO / "slos" / "common.toml", tmp_path / "common.toml")
    (tmp_path / "h200.toml").write_text('method_version = 2\nextends = "common"\n[slo."*/fixed-512-256"]\n'
                                        "request_throughput = { min = 80 }\nvram_used_gib_peak = { max = 7 }\n"
                                        "p99_ttft_ms = { max = 365 }\n")
    run = check_all(slos_dir=tmp_path, profiles=["optimized"], scenarios=["fixed-512-256"],
                    profiles_dir=REPO / "profiles", scenarios_dir=REPO / "scenarios")
    refused = {c.metric: c.arithmetic for r in run.reports for c in r.refused}
    # concurrency 32 x 4,800 GB/s / 8.04 GB = 19,100 tok/s / 256 tokens = 74.6 req/s < 80
    assert "ceiling 74.58 req/s" in refused["request_throughput"] and "concurrency 32" in refused["request_throughput"]
    assert "the weights alone" in refused["vram_used_gib_peak"]
    assert set(refused) == {"request_throughput", "vram_used_gib_peak"}


def test_length_quantiles_never_exceed_the_lengths():
    chat = load_scenario("chat", REPO / "scenarios")
    assert quantile(chat.output_tokens, 0.99) == 32 + int(0.99 * 480) == 507
    assert quantile(chat.output_tokens, 0.5) <= chat.output_tokens.mean


def test_doctor_refuses_a_profile_whose_slo_set_is_below_its_floor(tmp_path, capsys):
    code = main(["doctor", "optimized", "--gpu-class", "a10g", "--slos-dir", str(seed_slos_dir(tmp_path)),
                 "--profiles-dir", str(REPO / "profiles")])
    out = capsys.readouterr().out
    assert code == 1
    assert "REFUSED: p99_e2el_ms" in out and "KV per token" in out


def test_nothing_to_check_is_an_error_not_a_pass(tmp_path, capsys):
    assert main(["slos", "check", "--slos-dir", str(tmp_path / "missing")]) == 2
    (tmp_path / "only-cpu").mkdir()
    (tmp_path / "only-cpu" / "cpu.toml").write_text("method_version = 2\n")
    assert main(["slos", "check", "--slos-dir", str(tmp_path / "only-cpu")]) == 2
    assert "no SLO set of a GPU class" in capsys.readouterr().err
