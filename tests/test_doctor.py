"""KV doctor: the arithmetic from config.json, refusals, and its estimate against what vLLM reported."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from perfgate._errors import DoctorError, PerfgateError
from perfgate.cli import main
from perfgate.models import resolve_model
from perfgate.serving.doctor import GiB, ModelShape, check, diagnose
from perfgate.serving.profile import load_profile

REPO = Path(__file__).resolve().parent.parent
PROFILES = REPO / "profiles"
# What vLLM itself reported for Qwen3-4B with the seed's optimized flags at 0.9 (DEVELOPERS.md and
# ../shared/gpu/README.md): facts to check the estimate against, not figures this suite measured.
H100_KV_TOKENS = 466_256
H200_KV_TOKENS = 853_360
H200_MEMORY_GIB = 143_771 / 1024
VLLM_WEIGHTS_GIB = 7.64


@pytest.fixture(scope="module")
def qwen3_4b(tmp_path_factory) -> Path:
    return Path(resolve_model("synthetic:qwen3-4b-instruct-2507", cache_dir=tmp_path_factory.mktemp("models")))


@pytest.fixture(autouse=True)
def models_dir(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("PERFGATE_MODELS_DIR", str(tmp_path_factory.getbasetemp() / "models-cli"))


def optimized(gpu_class: str | None = None):
    return load_profile("optimized", gpu_class=gpu_class, profiles_dir=PROFILES)


def write_profile(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "p.toml"
    path.write_text(textwrap.dedent(body).lstrip())
    return path


def test_kv_bytes_per_token_come_from_the_config(qwen3_4b):
    config = json.loads((qwen3_4b / "config.json").read_text())
    report = diagnose(optimized(), qwen3_4b, gpu_memory_gib=80)
    expected = 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * config["head_dim"] * 2
    assert report.kv_bytes_per_token == expected == 144 * 1024  # DEVELOPERS.md: 144 KiB/token


def test_param_count_and_weights_match_the_real_model(qwen3_4b):
    shape = ModelShape.from_dir(qwen3_4b)
    assert shape.params == pytest.approx(4.02e9, rel=0.005)  # Qwen3-4B: 4.02 B parameters
    report = diagnose(optimized(), qwen3_4b, gpu_memory_gib=80)
    assert report.weight_bytes / GiB == pytest.approx(VLLM_WEIGHTS_GIB, rel=0.03)


def test_refuses_the_seed_flags_on_24_gib_showing_the_arithmetic(qwen3_4b):
    with pytest.raises(DoctorError) as info:
        check(optimized(), qwen3_4b, gpu_memory_gib=24)
    text = str(info.value)
    assert "REFUSED" in text and "262,144" in text
    for step in ("KV per token", "weights", "activation reserve", "blocks", "max concurrency"):
        assert step in text
    assert "max-model-len to at most" in text


def test_accepts_80_gib_and_the_a10g_override(qwen3_4b):
    report = check(optimized(), qwen3_4b, gpu_memory_gib=80)
    assert report.ok and report.max_concurrency > 1
    a10g = check(optimized("a10g"), qwen3_4b, gpu_class="a10g")
    assert a10g.max_model_len == 32768 and a10g.full_requests >= 1


def test_estimate_lands_within_3_percent_of_what_vllm_reported(qwen3_4b):
    h100 = diagnose(optimized(), qwen3_4b, gpu_class="h100")
    h200 = diagnose(optimized(), qwen3_4b, gpu_memory_gib=H200_MEMORY_GIB)
    assert h100.kv_tokens == pytest.approx(H100_KV_TOKENS, rel=0.03)
    assert h200.kv_tokens == pytest.approx(H200_KV_TOKENS, rel=0.03)
    assert h100.kv_tokens % h100.block_size == 0  # whole blocks only


def test_fp8_kv_cache_halves_bytes_per_token_and_doubles_capacity(qwen3_4b, tmp_path):
    path = write_profile(tmp_path, """
        extends = "optimized"
        [vllm]
        kv-cache-dtype = "fp8"
    """)
    fp8 = diagnose(load_profile(str(path), profiles_dir=PROFILES), qwen3_4b, gpu_memory_gib=24)
    bf16 = diagnose(optimized(), qwen3_4b, gpu_memory_gib=24)
    assert fp8.kv_bytes_per_token * 2 == bf16.kv_bytes_per_token
    assert fp8.kv_tokens == pytest.approx(2 * bf16.kv_tokens, rel=0.01)


def test_explicit_kv_cache_memory_bytes_is_used_as_is(qwen3_4b, tmp_path):
    path = write_profile(tmp_path, """
        extends = "optimized"
        [vllm]
        kv-cache-memory-bytes = "36G"
    """)
    report = diagnose(load_profile(str(path), profiles_dir=PROFILES), qwen3_4b, gpu_memory_gib=80)
    assert report.kv_tokens == 36 * GiB // report.kv_bytes_per_token  # 36 GiB = exactly one 262,144 request
    assert report.full_requests == 1


def test_real_weights_are_sized_from_safetensors_files(qwen3_4b, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text((qwen3_4b / "config.json").read_text())
    with open(model / "model.safetensors", "wb") as fh:
        fh.truncate(3 * GiB)  # sparse: sized, not written
    path = write_profile(tmp_path, f"""
        extends = "optimized"
        model = "{model}"
        load-format = "auto"
    """)
    report = diagnose(load_profile(str(path), profiles_dir=PROFILES), model, gpu_memory_gib=80)
    assert 3 * GiB < report.weight_bytes < 3.2 * GiB
    assert any("safetensors" in line for line in report.lines)


def test_cpu_profile_uses_vllm_cpu_kvcache_space(tmp_path):
    report = check(load_profile("cpu-tiny", profiles_dir=PROFILES))
    space = int(load_profile("cpu-tiny", profiles_dir=PROFILES).env["VLLM_CPU_KVCACHE_SPACE"])
    assert report.kv_cache_bytes == space * GiB and report.weight_bytes == 0
    unset = write_profile(tmp_path, """
        model = "synthetic:tiny"
        platform = "cpu"
        [vllm]
        max-model-len = 2048
    """)
    with pytest.raises(DoctorError, match="VLLM_CPU_KVCACHE_SPACE"):
        check(load_profile(str(unset)))
    fractional = unset.read_text() + '[env]\nVLLM_CPU_KVCACHE_SPACE = "0.5"\n'
    unset.write_text(fractional)
    with pytest.raises(DoctorError, match="got '0.5'"):
        check(load_profile(str(unset)))


def test_cpu_profile_too_long_for_its_kv_space_is_refused(tmp_path):
    path = write_profile(tmp_path, """
        extends = "cpu-tiny"
        [vllm]
        max-model-len = 4096
        kv-cache-memory-bytes = "2M"
    """)
    with pytest.raises(DoctorError, match="REFUSED"):
        check(load_profile(str(path), profiles_dir=PROFILES))


def test_no_gpu_and_no_memory_given_says_how_to_give_it(qwen3_4b):
    pynvml = pytest.importorskip("pynvml")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass  # the case under test: no driver here
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has NVML; the no-GPU message cannot be produced")
    with pytest.raises(PerfgateError, match="--gpu-memory 24GiB"):
        diagnose(optimized(), qwen3_4b)


def test_cli_exit_codes(capsys):
    profiles = ["--profiles-dir", str(PROFILES)]
    assert main(["doctor", "optimized", "--gpu-memory", "24GiB", *profiles]) == 1
    assert "REFUSED" in capsys.readouterr().out
    assert main(["doctor", "optimized", "--gpu-memory", "80GiB", *profiles]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["doctor", "optimized", "--gpu-class", "a10g", *profiles]) == 0
    assert main(["doctor", "optimized", "--gpu-memory", "lots", *profiles]) == 2
    assert main(["doctor", "no-such-profile", "--gpu-memory", "80GiB", *profiles]) == 2
    assert main(["doctor", "cpu-tiny", *profiles]) == 0
