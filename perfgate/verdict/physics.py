"""Physical floors: an SLO bound no card of its GPU class can meet is refused before any run, with the sums.

Decoding one token reads every weight once, so memory bandwidth puts a floor under each decode step, and
every token fed through the model costs 2 FLOPs per matmul parameter, so the dense bf16 FLOP rate puts a
floor under prefill. For one GPU class x profile x scenario (W = weight bytes streamed per decode step,
N = matmul parameters, BW = bandwidth, F = dense bf16 FLOP/s, both x tensor-parallel size):

- decode step (TPOT, mean ITL) >= W / BW
- prefill of P prompt tokens (TTFT) >= max(W / BW, 2 N P / F); a scenario's shared prefix is not counted
  (the prefix cache may serve it)
- E2E of P in, n out >= prefill(P) + (n - 1) x W / BW (the first token comes from the prefill)
- a percentile of a latency >= the floor at that percentile of the scenario's lengths (the floor grows with
  the length, so the order is kept); the prompt is taken at its shortest for E2E, so the floor stays a floor
- output tokens/s <= min(B x BW / W, F / 2N x out / (in + out)), B = the most sequences in a batch
  (--max-num-seqs, vLLM's default 256, or 1024 on cards of 70 GiB and more, and the scenario's concurrency);
  requests/s <= that / mean output; VRAM >= W; MBU and MFU <= 100 %.

These are floors, not predictions: a real card reaches 60-90 % of its bandwidth. A bound under its floor can
never pass; a bound just above it will usually fail too, and the report shows how close it is.

Peak figures come from ``perfgate.core.hardware`` (datasheet dense bf16 without sparsity, and memory bandwidth).
Sources checked for the classes the SLO sets use: A10G 600 GB/s (baseten.co/blog/nvidia-a10-vs-a10g-for-ml-
model-inference: A10 and A10G share 24 GB GDDR6 at 600 GB/s; the table's 125 TFLOP/s is the A10's tensor
figure, above the A10G's, so it can only lower a floor); H100 SXM 3.35 TB/s and H200 4.8 TB/s, both 989
TFLOP/s dense BF16 (NVIDIA H100/H200 datasheets, as tabulated at lzwjava.github.io/nvidia-h200-gpu-specs-en
and itkb.uw.cz/2026/06/nvidia-h200-vs-b300-precisions-cores.html).

Not modelled (the bound is left unchecked, with the reason): quantized weights, speculative decoding (several
tokens a step), mixture-of-experts models (a step reads only the experts it routes to).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from perfgate._errors import ConfigError
from perfgate.core.catalog import METRICS
from perfgate.core.fmt import format_value
from perfgate.core.hardware import CPU_CLASS, GpuClass, known_class_keys
from perfgate.core.hardware import gpu_class as lookup_gpu_class
from perfgate.load.scenario import ClosedLoop, Fixed, Scenario, Uniform, available_scenarios, load_scenario
from perfgate.models.shape import ModelShape, read_model_shape
from perfgate.serving.doctor import int_flag, model_dir_for, resolve_dtypes
from perfgate.serving.profile import Profile, available_profiles, load_profile
from perfgate.verdict.slo import ResolvedBound, SloSet
from perfgate.verdict.slo_files import load_slos

GiB = 1024**3
_QUANTILES = {"median": 0.5, "p50": 0.5, "p90": 0.9, "p95": 0.95, "p99": 0.99}
_LATENCIES = ("ttft", "tpot", "itl", "e2el")
_RATE_OUT = {"output_throughput": "out", "total_token_throughput": "total", "request_throughput": "req",
             "request_goodput": "req", "max_sustained_rate": "req"}


@dataclass
class BoundCheck:
    metric: str
    written: str  # "<= 1,200 ms"
    source: str  # "a10g.toml [*/chat]"
    ok: bool
    arithmetic: str  # how the floor or ceiling was reached

    def render(self) -> str:
        return f"{'ok' if self.ok else 'REFUSED'}: {self.metric} {self.written} ({self.source}): {self.arithmetic}"


@dataclass
class PhysicsReport:
    key: str  # gpu_class/profile/scenario
    lines: list[str] = field(default_factory=list)  # the inputs and the per-step floors
    checks: list[BoundCheck] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def refused(self) -> list[BoundCheck]:
        return [c for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.refused

    def render(self) -> str:
        verdict = (f"OK: every bound is above its physical floor ({len(self.checks)} checked)" if self.ok else
                   f"REFUSED: {len(self.refused)} bound(s) below the physical floor; no {self.key.split('/')[0]} "
                   "can pass them")
        return "\n".join([f"physics {self.key}:", *(f"  {line}" for line in self.lines),
                          *(f"  {c.render()}" for c in sorted(self.checks, key=lambda c: c.ok)), f"  {verdict}",
                          *(f"  note: {n}" for n in self.notes)])


def quantile(lengths: object, q: float) -> float:
    """The lower q-quantile of a scenario's lengths (a floor must not be taken at a longer length)."""
    if isinstance(lengths, Fixed):
        return float(lengths.value)
    if isinstance(lengths, Uniform):
        return float(lengths.min + int(q * (lengths.max - lengths.min)))
    values = sorted(lengths.values)  # type: ignore[attr-defined]
    return float(values[int(q * (len(values) - 1))])


def _gb(n: float) -> str:
    return f"{n / 1e9:,.2f} GB"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def _not_modelled(profile: Profile, shape: ModelShape) -> str:
    if shape.experts:
        return "a mixture-of-experts model (a decode step reads only the experts it routes to)"
    for key in ("quantization", "speculative-config", "speculative_config"):
        if profile.flags.get(key) not in (None, False, ""):
            return f"--{key} (weights or tokens per step differ from the dense bf16 sums)"
    return ""


def check_set(slos: SloSet, profile: Profile, scenario: Scenario, gpu: GpuClass, shape: ModelShape,
              model: str = "") -> PhysicsReport:
    """Every latency, throughput and memory bound of ``slos`` against the floors for this key."""
    report = PhysicsReport(slos.key)
    unmodelled = _not_modelled(profile, shape)
    if unmodelled:
        report.notes.append(f"physical floors not computed: {unmodelled}")
        return report
    _, dtype_bytes, _, _ = resolve_dtypes(profile, shape)
    tp = int_flag(profile, "tensor-parallel-size", 1) or 1
    embed = 0 if shape.tied_embeddings else shape.vocab * shape.hidden  # an untied input table is only gathered
    weights = (shape.params - embed) * dtype_bytes
    matmul = shape.layer_params + shape.lm_head_params
    bandwidth, flops = gpu.mem_bandwidth_gbs * 1e9 * tp, gpu.bf16_tflops * 1e12 * tp
    step = weights / bandwidth
    default_seqs = 1024 if gpu.memory_gib >= 70 else 256
    batch = int_flag(profile, "max-num-seqs", default_seqs) or default_seqs
    batch_from = f"--max-num-seqs {batch}"
    if isinstance(scenario.load, ClosedLoop) and scenario.load.concurrency < batch:
        batch, batch_from = scenario.load.concurrency, f"concurrency {scenario.load.concurrency}"
    elif getattr(scenario.load, "max_concurrency", None) and scenario.load.max_concurrency < batch:
        batch, batch_from = scenario.load.max_concurrency, f"max_concurrency {scenario.load.max_concurrency}"
    shared = scenario.shared_prefix_tokens
    prompts, outputs = scenario.prompt_tokens, scenario.output_tokens
    tp_text = f" x {tp} GPUs (tensor parallel)" if tp > 1 else ""
    report.lines += [
        f"model {model or shape.path}: {shape.params / 1e9:.2f} B params" + (" less the input embedding" if embed
                                                                             else "") + f" x {dtype_bytes} B "
        f"= {_gb(weights)} streamed per decode step; {matmul / 1e9:.2f} B matmul params",
        f"{gpu.key}: {gpu.mem_bandwidth_gbs:,.0f} GB/s memory bandwidth, {gpu.bf16_tflops:,.0f} TFLOP/s dense bf16"
        + tp_text,
        f"decode step floor: {_gb(weights)} / {gpu.mem_bandwidth_gbs * tp:,.0f} GB/s >= {_ms(step)} a token",
        f"scenario {scenario.name}: {scenario.workload()}"]
    if not scenario.ignore_eos:
        report.notes.append("ignore_eos is off: a request may stop after one token, so E2E floors use 1 token")

    def prefill(p: float) -> tuple[float, str]:
        fed = max(1.0, p - shared)
        compute = 2 * matmul * fed / flops
        return max(step, compute), (f"prefill of {fed:,.0f} prompt tokens max({_ms(step)} weights, 2 x "
                                    f"{matmul / 1e9:.2f} B x {fed:,.0f} / {gpu.bf16_tflops * tp:,.0f} TFLOP/s = "
                                    f"{_ms(compute)})")

    def out_len(stat: str) -> tuple[float, str]:
        if not scenario.ignore_eos:
            return 1.0, "1 token (no ignore_eos)"
        if stat == "mean":
            return outputs.mean, f"mean output {outputs.mean:,.0f} tokens"
        n = quantile(outputs, _QUANTILES[stat])
        return n, f"{stat} output {n:,.0f} tokens"

    def latency_floor(stat: str, kind: str) -> tuple[float, str] | None:
        if kind == "tpot" or (kind == "itl" and stat == "mean"):
            return step, f"floor {_ms(step)} = one decode step"
        if kind == "ttft":
            p = prompts.mean if stat == "mean" else quantile(prompts, _QUANTILES[stat])
            seconds, how = prefill(p)
            return seconds, f"floor {_ms(seconds)} = {how}"
        if kind == "e2el":
            n, n_how = out_len(stat)
            first, how = prefill(prompts.min)
            seconds = first + (n - 1) * step
            return seconds, (f"floor {_ms(seconds)} = {how} + {n - 1:,.0f} decode steps ({n_how}) x "
                             f"{_ms(step)} ({_gb(weights)} / {gpu.mem_bandwidth_gbs * tp:,.0f} GB/s)")
        return None

    mean_out = outputs.mean if scenario.ignore_eos else 1.0
    mean_in = max(1.0, prompts.mean - shared)
    decode_rate = batch * bandwidth / weights
    compute_rate = flops / (2 * matmul) * mean_out / (mean_in + mean_out)
    out_rate = min(decode_rate, compute_rate)
    rate_how = (f"output <= min(decode {batch} seqs ({batch_from}) x {gpu.mem_bandwidth_gbs * tp:,.0f} GB/s / "
                f"{_gb(weights)} = {decode_rate:,.0f} tok/s, compute {gpu.bf16_tflops * tp:,.0f} TFLOP/s / (2 x "
                f"{matmul / 1e9:.2f} B) x {mean_out:,.0f} out / ({mean_in:,.0f} in + {mean_out:,.0f} out) = "
                f"{compute_rate:,.0f} tok/s)")
    ceilings = {"out": (out_rate, rate_how),
                "total": (out_rate * (mean_in + mean_out) / mean_out, f"{rate_how} x (in + out) / out"),
                "req": (out_rate / mean_out, f"{rate_how} / {mean_out:,.0f} mean output tokens")}

    for metric, bound in slos.bounds.items():
        check = _check_bound(metric, bound, latency_floor, ceilings, weights / tp)
        if check is not None:
            report.checks.append(check)
    return report


def _check_bound(metric: str, bound: ResolvedBound, latency_floor, ceilings: dict[str, tuple[float, str]],
                 weights_per_gpu: float) -> BoundCheck | None:
    unit = METRICS[metric].unit
    stat, _, rest = metric.partition("_")
    kind = rest.removesuffix("_ms").removesuffix("_from_scheduled")
    if metric.startswith("server_mean_"):
        stat, kind = "mean", metric.removeprefix("server_mean_").removesuffix("_ms")
    if bound.max is not None and unit == "ms" and kind in _LATENCIES and (stat == "mean" or stat in _QUANTILES):
        found = latency_floor(stat, kind)
        if found is None:
            return None
        seconds, how = found
        floor_ms = seconds * 1e3
        return BoundCheck(metric, bound.written, bound.source, bound.max >= floor_ms,
                          how + ("" if bound.max >= floor_ms else f" > the bound {format_value(bound.max, unit)}"))
    if bound.min is not None and metric in _RATE_OUT:
        ceiling, how = ceilings[_RATE_OUT[metric]]
        ok = bound.min <= ceiling
        return BoundCheck(metric, bound.written, bound.source, ok, f"ceiling {format_value(ceiling, unit)}: {how}"
                          + ("" if ok else f" < the bound {format_value(bound.min, unit)}"))
    if bound.max is not None and metric.startswith("vram_") and unit == "GiB":
        need = weights_per_gpu / GiB
        ok = bound.max >= need
        return BoundCheck(metric, bound.written, bound.source, ok, f"floor {need:,.2f} GiB: the weights alone"
                          + ("" if ok else f" > the bound {format_value(bound.max, unit)}"))
    if bound.min is not None and metric in ("mbu_pct", "mfu_pct"):
        return BoundCheck(metric, bound.written, bound.source, bound.min <= 100.0, "ceiling 100 % of the peak")
    return None


@dataclass
class PhysicsRun:
    reports: list[PhysicsReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not checked, and why

    @property
    def refused(self) -> list[PhysicsReport]:
        return [r for r in self.reports if not r.ok]

    def render(self) -> str:
        checked = sum(len(r.checks) for r in self.reports)
        tail = (f"physics: {sum(len(r.refused) for r in self.reports)} of {checked} bounds are below their physical "
                f"floor" if self.refused else f"physics: no bound below its physical floor ({checked} bounds, "
                f"{len(self.reports)} GPU class x profile x scenario keys)")
        return "\n".join([*(r.render() for r in self.reports), *(f"not checked: {n}" for n in self.notes), tail])


def slo_gpu_classes(slos_dir: Path) -> tuple[list[str], list[str]]:
    """(GPU classes with an SLO file and peak figures, notes on the other files)."""
    classes, notes = [], []
    for path in sorted(Path(slos_dir).glob("*.toml")):
        if lookup_gpu_class(path.stem) is not None:
            classes.append(path.stem)
        elif path.stem == CPU_CLASS:
            notes.append(f"{path.name}: the CPU class has no bandwidth or FLOP figures")
        elif path.stem != "common":
            notes.append(f"{path.name}: no GPU class {path.stem!r} in perfgate.core.hardware (known: "
                         f"{', '.join(known_class_keys())})")
    return classes, notes


def check_all(*, slos_dir: Path, gpu_classes: list[str] | None = None, profiles: list[str] | None = None,
              scenarios: list[str] | None = None, profiles_dir: Path | None = None,
              scenarios_dir: Path | None = None, model_dir: Path | None = None) -> PhysicsRun:
    """Every SLO set x profile x scenario (or the ones named) against its physical floors.

    The measurement method of a file is not checked here: a floor holds whatever method made the bounds.
    """
    run = PhysicsRun()
    if not Path(slos_dir).is_dir():
        raise ConfigError("no SLO directory here", source=str(slos_dir),
                          fix="run from the repository root, or give --slos-dir")
    found, run.notes = slo_gpu_classes(slos_dir)
    if not (gpu_classes or found):
        raise ConfigError("no SLO set of a GPU class to check", source=str(slos_dir),
                          fix="add slos/<class>.toml for one of: "
                              + ", ".join(k for k in known_class_keys() if k != CPU_CLASS))
    for name in gpu_classes or found:
        gpu = lookup_gpu_class(name)
        if gpu is None:
            run.notes.append(f"GPU class {name!r}: no bandwidth or FLOP figures (known: {', '.join(known_class_keys())})")
            continue
        for profile_name in profiles or available_profiles(profiles_dir):
            profile = load_profile(profile_name, gpu_class=name, profiles_dir=profiles_dir)
            if profile.platform == "cpu":
                continue  # a CPU profile never serves on a GPU class
            local = model_dir or model_dir_for(profile)
            shape = read_model_shape(local)
            for scenario_name in scenarios or available_scenarios(scenarios_dir):
                scenario = load_scenario(scenario_name, scenarios_dir)
                slos = load_slos(name, profile.name, scenario.name, slos_dir, check_method=False)
                if slos is None:
                    continue
                report = check_set(slos, profile, scenario, gpu, shape, model=profile.model)
                if report.checks or report.notes:
                    run.reports.append(report)
    return run
