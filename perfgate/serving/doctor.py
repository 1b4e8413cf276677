"""KV doctor: will one request of max-model-len fit in the KV cache? Arithmetic only, before any launch.

vLLM sizes its KV cache as (GPU memory x --gpu-memory-utilization) - weights - peak activations, cut into
blocks of --block-size tokens; a profile whose cache cannot hold one max-model-len request fails only after
minutes of loading. The doctor does that sum from the model's config.json and the profile's flags.

The activation reserve is an estimate of vLLM's profiling run (one forward pass of max-num-batched-tokens,
one sampler pass over max-num-seqs rows of logits) plus a small fixed part (CUDA graphs, cuBLAS workspace;
the CUDA context is not counted, vLLM measures from after it exists). Checked against what vLLM itself
reported for Qwen3-4B with the seed flags (bf16, 4096 batched tokens, 256 seqs): H100 80GB at 0.9 -> 466,256
KV tokens (estimate -1.3 %), H200 143,771 MiB at 0.9 -> 853,360 (estimate +0.6 %). Those two reports imply
0.0-1.5 GiB of non-weight memory, so the estimate is good to about 1.5 GiB either way, and a verdict within
that margin says so.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from perfgate._errors import ConfigError, DoctorError, PerfgateError
from perfgate.core.hardware import classify, known_class_keys
from perfgate.core.hardware import gpu_class as lookup_gpu_class
from perfgate.models import resolve_model
from perfgate.models.shape import ModelShape, read_model_shape
from perfgate.serving.profile import Profile

GiB = 1024**3
DEFAULT_UTILIZATION = 0.9  # vLLM's --gpu-memory-utilization default
DEFAULT_BLOCK_SIZE = 16
FIXED_RESERVE_BYTES = int(0.25 * GiB)  # CUDA graph pool + cuBLAS/allocator slack (see module docstring)
MARGIN_BYTES = int(1.5 * GiB)  # how far the reserve estimate may be off (see module docstring)

_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "half": 2, "float32": 4, "float": 4}
# vLLM's --kv-cache-dtype: 8-bit formats store one byte per element. 4-bit and mixed formats add per-block
# scales whose size the doctor does not model, so they are refused rather than guessed.
_KV_DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "fp8_inc": 1,
                   "fp8_per_token_head": 1, "int8_per_token_head": 1}


@dataclass
class DoctorReport:
    profile: str
    platform: str
    model_dir: str
    max_model_len: int
    kv_dtype: str
    kv_bytes_per_token: int
    kv_cache_bytes: int
    block_size: int
    num_blocks: int
    kv_tokens: int
    max_concurrency: float  # kv_tokens / max_model_len, as vLLM prints it
    full_requests: int  # whole max-model-len requests that fit, block-rounded
    weight_bytes: int = 0
    memory_bytes: int = 0
    gpu_class: str | None = None  # given, or found by NVML; None on the CPU or for memory given by hand
    lines: list[str] = field(default_factory=list)  # the arithmetic, one step a line
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.full_requests >= 1

    def render(self) -> str:
        verdict = (f"OK: {self.kv_tokens:,} KV tokens, {self.max_concurrency:.2f}x concurrency at "
                   f"max-model-len {self.max_model_len:,}" if self.ok else
                   f"REFUSED: the KV cache holds {self.kv_tokens:,} tokens, less than one request of "
                   f"max-model-len {self.max_model_len:,}")
        return "\n".join([f"doctor {self.profile} ({self.platform}, model {self.model_dir}):",
                          *(f"  {line}" for line in self.lines), f"  {verdict}",
                          *(f"  note: {n}" for n in self.notes)])


def _gib(n: float) -> str:
    return f"{n / GiB:,.2f} GiB"


def int_flag(profile: Profile, key: str, default: int | None) -> int | None:
    value = profile.flags.get(key, profile.flags.get(key.replace("-", "_")))
    if value is None or str(value).lower() in ("auto", "-1", "none"):
        return default
    text = str(value).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([kKmMgGtT]?)", text)  # vLLM's human_readable_int: 1k = 1000, 1K = 1024
    if not m:
        raise ConfigError(f"--{key} {value!r} is not a number", source=profile.flag_sources.get(key),
                          fix="run `perfgate lint` on the profile")
    mult = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
            "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}[m.group(2)]
    return int(float(m.group(1)) * mult)


def resolve_dtypes(profile: Profile, shape: ModelShape) -> tuple[str, int, str, int]:
    """(weight dtype, its bytes, KV dtype, its bytes) the profile serves the model with."""
    dtype = str(profile.flags.get("dtype", "auto")).lower()
    if dtype == "auto":
        dtype = shape.dtype.replace("torch.", "")
        if dtype == "float32":  # vLLM downcasts float32 checkpoints to 16 bits by default
            dtype = "bfloat16"
    if dtype not in _DTYPE_BYTES:
        raise ConfigError(f"unknown --dtype {dtype!r}", source=profile.flag_sources.get("dtype"),
                          fix=f"use one of: auto, {', '.join(_DTYPE_BYTES)}")
    kv_dtype = str(profile.flags.get("kv-cache-dtype", "auto")).lower()
    kv_dtype = dtype if kv_dtype == "auto" else kv_dtype
    if kv_dtype not in _DTYPE_BYTES and kv_dtype not in _KV_DTYPE_BYTES:
        raise PerfgateError(f"the doctor does not know the size of --kv-cache-dtype {kv_dtype}",
                            source=profile.flag_sources.get("kv-cache-dtype"),
                            fix=f"it knows auto, {', '.join(_KV_DTYPE_BYTES)}; check vLLM's start-up log instead")
    return dtype, _DTYPE_BYTES[dtype], kv_dtype, _DTYPE_BYTES.get(kv_dtype) or _KV_DTYPE_BYTES[kv_dtype]


def weight_bytes(shape: ModelShape, profile: Profile, model_dir: Path, dtype_bytes: int) -> tuple[int, str]:
    """Bytes the weights take on the GPU: checkpoint files when real weights load, else params x dtype."""
    # vLLM also keeps the rotary cos/sin cache (max positions x head dim, float32) next to the weights;
    # with it the estimate for Qwen3-4B is 7.62 GiB against the 7.64 GiB vLLM reported on an H100.
    rope = shape.max_positions * shape.head_dim * 4
    files = sorted(Path(model_dir).glob("*.safetensors")) if profile.load_format != "dummy" else []
    if files:
        total = sum(f.stat().st_size for f in files)
        return total + rope, f"{len(files)} safetensors file(s) {_gib(total)} + rope cache {_gib(rope)}"
    return (shape.params * dtype_bytes + rope,
            f"{shape.params / 1e9:.2f} B params x {dtype_bytes} B + rope cache {_gib(rope)}")


def gpu_memory(gpu_memory_gib: float | None, gpu_class: str | None) -> tuple[int, str, str | None]:
    """(bytes, where the figure came from, GPU class): given by hand, from the class table, else NVML."""
    if gpu_memory_gib is not None:
        return int(gpu_memory_gib * GiB), "given", gpu_class
    if gpu_class:
        cls = lookup_gpu_class(gpu_class)
        if cls is None:
            raise ConfigError(f"unknown GPU class '{gpu_class}'", fix=f"use one of: {', '.join(known_class_keys())}")
        return int(cls.memory_gib * GiB), f"GPU class {gpu_class}", gpu_class
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(int(os.environ.get("PERFGATE_GPU_INDEX", "0")))
            name = pynvml.nvmlDeviceGetName(handle)
            name = name.decode() if isinstance(name, bytes) else name
            total = int(pynvml.nvmlDeviceGetMemoryInfo(handle).total)
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # noqa: BLE001 -- no driver, no GPU, no pynvml: all mean "tell me the memory"
        raise PerfgateError(f"no GPU memory figure: NVML is unavailable ({type(exc).__name__}: {exc})",
                            fix="give it by hand: --gpu-memory 24GiB, or --gpu-class a10g") from None
    return total, f"NVML: {name}", classify(name)


def activation_reserve(shape: ModelShape, profile: Profile, memory_bytes: int, dtype_bytes: int) -> tuple[int, str]:
    """Peak non-weight, non-KV memory of vLLM's profiling run (see the module docstring)."""
    # vLLM's defaults for the API server depend on the card: >= 70 GiB (H100/H200) 8192 tokens / 1024 seqs.
    big = memory_bytes >= 70 * GiB
    tokens = int_flag(profile, "max-num-batched-tokens", 8192 if big else 2048) or 2048
    seqs = int_flag(profile, "max-num-seqs", 1024 if big else 256) or 256
    forward = tokens * (3 * shape.intermediate + 4 * shape.hidden) * dtype_bytes  # MLP gate/up/act + residuals
    sampler = seqs * shape.vocab * 4 * 2  # float32 logits and probabilities
    total = forward + sampler + FIXED_RESERVE_BYTES
    return total, (f"forward {tokens} tokens {_gib(forward)} + sampler {seqs} seqs x vocab {shape.vocab} "
                   f"{_gib(sampler)} + fixed {_gib(FIXED_RESERVE_BYTES)}")


def diagnose(profile: Profile, model_dir: Path | str, gpu_memory_gib: float | None = None,
             gpu_class: str | None = None) -> DoctorReport:
    """The KV arithmetic for ``profile`` serving the model in ``model_dir``; never raises for a misfit."""
    shape = read_model_shape(Path(model_dir))
    _, dtype_bytes, kv_dtype, kv_bytes = resolve_dtypes(profile, shape)
    per_token = 2 * shape.layers * shape.kv_heads * shape.head_dim * kv_bytes
    max_len = int_flag(profile, "max-model-len", shape.max_positions) or shape.max_positions
    block = int_flag(profile, "block-size", DEFAULT_BLOCK_SIZE) or DEFAULT_BLOCK_SIZE
    lines = [(f"KV per token: 2 (K,V) x {shape.layers} layers x {shape.kv_heads} KV heads x {shape.head_dim} "
              f"head dim x {kv_bytes} B ({kv_dtype}) = {per_token:,} B ({per_token / 1024:g} KiB)")]
    notes: list[str] = []
    weights = memory = 0
    found_class: str | None = None
    explicit = int_flag(profile, "kv-cache-memory-bytes", None)
    if profile.platform == "cpu":
        space = profile.env.get("VLLM_CPU_KVCACHE_SPACE")
        if explicit is not None:
            kv_cache = explicit
            lines.append(f"KV cache: --kv-cache-memory-bytes = {_gib(kv_cache)}")
        elif space is None or not space.strip().isdigit():
            raise DoctorError(
                "the CPU build needs VLLM_CPU_KVCACHE_SPACE (whole GiB) in the profile's [env]"
                + (f"; got {space!r}" if space is not None else ""),
                source=profile.files[0] if profile.files else profile.name,
                fix='add [env] VLLM_CPU_KVCACHE_SPACE = "1" (without it vLLM reserves 92 % of the memory '
                    "node or refuses to start)")
        else:
            kv_cache = int(space) * GiB
            lines.append(f"KV cache: VLLM_CPU_KVCACHE_SPACE = {space} GiB (the CPU build does not subtract weights)")
        if (avail := _mem_available()) and kv_cache > avail:
            notes.append(f"this machine has {_gib(avail)} available now; vLLM refuses a larger KV space")
    else:
        memory, memory_source, found_class = gpu_memory(gpu_memory_gib, gpu_class or profile.gpu_class)
        if profile.gpu_class is None and profile.gpu_overrides:
            hint = f" (this GPU is {found_class})" if found_class in profile.gpu_overrides else ""
            notes.append(f"the profile has overrides for {', '.join(profile.gpu_overrides)}{hint}: on those "
                         "cards check with --gpu-class <class>")
        weights, weight_source = weight_bytes(shape, profile, Path(model_dir), dtype_bytes)
        lines.append(f"weights: {weight_source} = {_gib(weights)}")
        if explicit is not None:
            kv_cache = explicit
            lines.append(f"KV cache: --kv-cache-memory-bytes = {_gib(kv_cache)}")
        else:
            util = float(profile.flags.get("gpu-memory-utilization", DEFAULT_UTILIZATION))
            reserve, reserve_source = activation_reserve(shape, profile, memory, dtype_bytes)
            budget = int(memory * util)
            kv_cache = max(0, budget - weights - reserve)
            lines += [f"GPU memory ({memory_source}): {_gib(memory)} x {util} utilization = {_gib(budget)}",
                      f"activation reserve (estimate): {reserve_source} = {_gib(reserve)}",
                      f"KV cache: {_gib(budget)} - {_gib(weights)} - {_gib(reserve)} = {_gib(kv_cache)}"]
            if budget - weights - reserve <= 0:
                notes.append("the weights and activations alone exceed the memory budget")
    blocks = kv_cache // (block * per_token)
    tokens = blocks * block
    blocks_per_request = math.ceil(max_len / block)
    full = blocks // blocks_per_request
    lines += [(f"blocks: {_gib(kv_cache)} / ({block} tokens x {per_token:,} B) = {blocks:,} blocks "
               f"= {tokens:,} tokens"),
              (f"one request of max-model-len {max_len:,} needs {blocks_per_request:,} blocks "
               f"({blocks_per_request * block * per_token / GiB:,.2f} GiB)"),
              f"max concurrency at max-model-len: {tokens:,} / {max_len:,} = {tokens / max_len:.2f}x"]
    if profile.platform != "cpu" and explicit is None and 0 < abs(tokens - max_len) * per_token <= MARGIN_BYTES:
        notes.append(f"within the reserve estimate's margin ({_gib(MARGIN_BYTES)}): vLLM may decide otherwise")
    return DoctorReport(profile=profile.name + (f" [gpu.{profile.gpu_class}]" if profile.gpu_class else ""),
                        platform=profile.platform, model_dir=str(model_dir), max_model_len=max_len,
                        kv_dtype=kv_dtype, kv_bytes_per_token=per_token, kv_cache_bytes=kv_cache,
                        block_size=block, num_blocks=blocks, kv_tokens=tokens, max_concurrency=tokens / max_len,
                        full_requests=full, weight_bytes=weights, memory_bytes=memory, gpu_class=found_class,
                        lines=lines, notes=notes)


def _mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def model_dir_for(profile: Profile) -> Path:
    """The local directory holding the profile's config.json (writes a synthetic model if needed)."""
    resolved = resolve_model(profile.model)
    path = Path(resolved)
    if path.is_dir():
        return path
    try:  # a hub id: the config may already be in the Hugging Face cache (no network here)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(resolved, "config.json")
        if isinstance(cached, str):
            return Path(cached).parent
    except ImportError:
        pass
    raise ConfigError(f"the doctor needs {resolved}'s config.json, which is not on this machine",
                      source=profile.files[0] if profile.files else profile.name,
                      fix="download the model (or just its config.json) and point `model` at the directory, "
                          "or use a synthetic:<name> model")


def check(profile: Profile, model_dir: Path | str | None = None, gpu_memory_gib: float | None = None,
          gpu_class: str | None = None) -> DoctorReport:
    """``diagnose``, raising ``DoctorError`` with the arithmetic when one full-length request cannot fit."""
    # A hub id (not a directory) falls back to the Hugging Face cache through model_dir_for.
    local = model_dir if model_dir is not None and Path(model_dir).is_dir() else model_dir_for(profile)
    report = diagnose(profile, local, gpu_memory_gib, gpu_class)
    if not report.ok:
        raise DoctorError(report.render(), source=profile.files[0] if profile.files else profile.name,
                          fix=f"lower max-model-len to at most {report.kv_tokens:,} (e.g. in a [gpu.<class>] table), "
                              "use --kv-cache-dtype fp8, or run on a GPU with more memory")
    return report
