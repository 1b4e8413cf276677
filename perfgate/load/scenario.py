"""Scenarios: the traffic shape a phase drives, as reviewed TOML in ``scenarios/``.

A scenario names its workload exactly (endpoint, prompt and output lengths, sampling, arrival process,
request count, warm-up, seed), so an SLO or baseline keyed by it means one thing. Bad fields fail with
the file, the field and what is allowed (``perfgate._toml.validate``).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from perfgate._errors import ConfigError
from perfgate._toml import data_dir, named_file, names_in, read_toml, validate

Endpoint = Literal["/v1/completions", "/v1/chat/completions"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Fixed(_Strict):
    """Every request has exactly ``value`` tokens."""

    kind: Literal["fixed"] = "fixed"
    value: int = Field(gt=0)

    def sample(self, rng: random.Random) -> int:
        return self.value

    @property
    def max(self) -> int:
        return self.value

    @property
    def min(self) -> int:
        return self.value

    @property
    def mean(self) -> float:
        return float(self.value)


class Uniform(_Strict):
    """Lengths drawn uniformly from ``min``..``max`` (both inclusive)."""

    kind: Literal["uniform"] = "uniform"
    min: int = Field(gt=0)
    max: int = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self

    def sample(self, rng: random.Random) -> int:
        return rng.randint(self.min, self.max)

    @property
    def mean(self) -> float:
        return (self.min + self.max) / 2


class Choice(_Strict):
    """Lengths drawn (with replacement) from a shipped list, e.g. lengths measured from a real trace."""

    kind: Literal["list"] = "list"
    values: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)

    def sample(self, rng: random.Random) -> int:
        return rng.choice(self.values)

    @property
    def max(self) -> int:
        return max(self.values)

    @property
    def min(self) -> int:
        return min(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / len(self.values)


Lengths = Annotated[Fixed | Uniform | Choice, Field(discriminator="kind")]


class Sampling(_Strict):
    """Sampling parameters sent with every request (OpenAI names; ``None`` means the server's default)."""

    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)

    def body(self) -> dict[str, float | int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ClosedLoop(_Strict):
    """``concurrency`` requests in flight at all times: each finished request starts the next."""

    kind: Literal["closed"] = "closed"
    concurrency: int = Field(gt=0, le=100_000)


class OpenLoop(_Strict):
    """Requests sent at scheduled times whether or not earlier ones finished.

    ``poisson``: exponential gaps at ``rate``. ``gamma``: gamma gaps with shape ``burstiness`` (< 1 is
    burstier, > 1 more even; 1 is Poisson), as ``vllm bench serve --burstiness``. ``max_concurrency``
    optionally caps requests in flight (a client-side queue; latency from the scheduled time shows it).
    """

    kind: Literal["open"] = "open"
    rate: float = Field(gt=0, description="requests per second")
    arrival: Literal["poisson", "gamma"] = "poisson"
    burstiness: float = Field(1.0, gt=0)
    max_concurrency: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _poisson_is_burstiness_1(self) -> OpenLoop:
        if self.arrival == "poisson" and self.burstiness != 1.0:
            raise ValueError("poisson arrivals have burstiness 1; for another burstiness set arrival = \"gamma\"")
        return self


Load = Annotated[ClosedLoop | OpenLoop, Field(discriminator="kind")]


class Warmup(_Strict):
    """Warm-up, excluded from statistics: ``requests`` per batch, repeated until warm.

    The CPU build compiles shapes on the first requests (two identical runs right after start: 3.97 then
    5.94 req/s), so one fixed batch is not enough: batches repeat (up to ``max_batches``) until the median
    TTFT of the last batch is within ``until_stable_pct`` % of the batch before. ``until_stable_pct = 0``
    runs exactly one batch.
    """

    requests: int = Field(8, ge=0)
    concurrency: int | None = Field(None, gt=0, description="defaults to the scenario's concurrency")
    until_stable_pct: float = Field(15.0, ge=0)
    max_batches: int = Field(6, gt=0)


class SelfCheck(_Strict):
    """When the client itself fell behind, the run is invalid (its numbers describe the client)."""

    max_p99_send_lag_ms: float = Field(50.0, gt=0)
    min_achieved_rate_ratio: float = Field(0.95, gt=0, le=1)


class Sweep(_Strict):
    """``[sweep]``: how ``perfgate.capacity`` sweeps an open-loop scenario's offered rate (``perfgate.load.sweep``).

    Rates climb from ``start_rate`` by ``growth`` (at most ``max_climb_points`` points, none above
    ``max_rate``, which is measured itself when the climb would pass it) until a point fails its SLOs or
    saturates; then up to ``refine_steps`` bisections narrow [highest passing, lowest failing), stopping once
    the bracket is narrower than ``resolution`` of its upper end. When the capacity gate is INCONCLUSIVE, up
    to ``extra_refine_steps`` more points are measured where they decide it. Each point is one measured window
    of ``point_duration_s`` seconds or ``point_requests`` requests (exactly one of them).
    """

    start_rate: float = Field(gt=0, description="requests per second of the first point")
    growth: float = Field(2.0, gt=1, description="each climbing point offers this many times the last")
    max_rate: float = Field(gt=0, description="no point offers more (req/s)")
    max_climb_points: int = Field(6, ge=1, le=30)
    refine_steps: int = Field(3, ge=0, le=20)
    extra_refine_steps: int = Field(2, ge=0, le=20)
    resolution: float = Field(0.05, gt=0, lt=1, description="stop bisecting below this relative width")
    point_duration_s: float | None = Field(None, gt=0)
    point_requests: int | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _one_window_and_ordered(self) -> Sweep:
        if (self.point_duration_s is None) == (self.point_requests is None):
            raise ValueError("give exactly one of point_duration_s and point_requests (each point's measured "
                             "window)")
        if self.max_rate < self.start_rate:
            raise ValueError(f"max_rate ({self.max_rate:g}) must be >= start_rate ({self.start_rate:g})")
        return self

    def climb_rates(self) -> list[float]:
        """The climbing schedule: start_rate x growth^i, at most max_climb_points, capped by max_rate."""
        rates: list[float] = []
        rate = self.start_rate
        while len(rates) < self.max_climb_points:
            rates.append(min(rate, self.max_rate))
            if rate >= self.max_rate:
                break
            rate *= self.growth
        return rates


class Scenario(_Strict):
    name: str
    description: str = Field(min_length=1)
    endpoint: Endpoint = "/v1/completions"
    prompt_tokens: Lengths
    # Like `vllm bench serve --random-prefix-len`: every request of a phase opens with the same prefix of this
    # many tokens (chat: a system message), counted in prompt_tokens. Drawn per phase, so it is shared
    # within a phase only; the phase checks the server's prefix-cache hit rate against it.
    shared_prefix_tokens: int = Field(0, ge=0)
    output_tokens: Lengths
    ignore_eos: bool = True
    sampling: Sampling = Sampling()
    load: Load
    num_requests: int | None = Field(None, gt=0)
    duration_s: float | None = Field(None, gt=0)
    warmup: Warmup = Warmup()
    self_check: SelfCheck = SelfCheck()
    # Request timeout (whole request), seconds. A request past it is recorded as errors_timeout.
    request_timeout_s: float = Field(600.0, gt=0)
    seed: int = 0
    # Set for a capacity scenario (``perfgate.capacity``); a plain measurement runs one point at [load].rate.
    sweep: Sweep | None = None

    @model_validator(mode="before")
    @classmethod
    def _sweep_window_is_the_default_window(cls, data: object) -> object:
        """A sweep scenario need not repeat its point window at the top: a plain measurement of it (one
        window at [load].rate) then lasts one point's window."""
        if isinstance(data, dict) and isinstance(data.get("sweep"), dict) \
                and data.get("num_requests") is None and data.get("duration_s") is None:
            sweep = data["sweep"]
            if sweep.get("point_duration_s") is not None:
                data = {**data, "duration_s": sweep["point_duration_s"]}
            elif sweep.get("point_requests") is not None:
                data = {**data, "num_requests": sweep["point_requests"]}
        return data

    @model_validator(mode="after")
    def _sweep_needs_an_open_loop(self) -> Scenario:
        if self.sweep is not None and not isinstance(self.load, OpenLoop):
            raise ValueError("a [sweep] varies the offered request rate, so [load] must be open loop "
                             "(kind = \"open\")")
        return self

    def at_rate(self, rate: float) -> Scenario:
        """One sweep point: this scenario offered at ``rate`` for the [sweep] point window."""
        if self.sweep is None or not isinstance(self.load, OpenLoop):
            raise ValueError(f"scenario {self.name} has no [sweep] table")
        return self.model_copy(update={
            "load": self.load.model_copy(update={"rate": rate}), "sweep": None,
            "duration_s": self.sweep.point_duration_s, "num_requests": self.sweep.point_requests})

    @field_validator("shared_prefix_tokens")
    @classmethod
    def _prefix_shorter_than_prompts(cls, value: int, info: ValidationInfo) -> int:
        lengths = info.data.get("prompt_tokens")
        if value and lengths is not None and value >= lengths.min:
            raise ValueError(f"shared_prefix_tokens ({value}) must be smaller than the shortest prompt "
                             f"(prompt_tokens {_describe(lengths)}, shortest {lengths.min}): the prefix is part "
                             f"of the prompt; set shared_prefix_tokens below {lengths.min} or lengthen "
                             "prompt_tokens")
        return value

    @model_validator(mode="after")
    def _length_or_count(self) -> Scenario:
        if self.num_requests is None and self.duration_s is None:
            raise ValueError("give num_requests or duration_s (how long the measured window lasts)")
        return self

    @property
    def max_total_tokens(self) -> int:
        return self.prompt_tokens.max + self.output_tokens.max

    def expected_prefix_hit_pct(self) -> float:
        """The most prefix-cache hits (% of prompt tokens) the declared sharing allows: 0 unless a prefix is
        shared; else shared_prefix_tokens / mean prompt length (the chat template's few tokens and block
        rounding are inside the tolerance the phase check allows)."""
        if not self.shared_prefix_tokens:
            return 0.0
        return 100.0 * self.shared_prefix_tokens / self.prompt_tokens.mean

    def content_digest(self, extra: str = "") -> str:
        """A stable hash of what the scenario sends (not its name or description): a baseline is refused for
        a scenario whose content changed under the same name. Fields left at their defaults are left out, so
        a field perfgate adds later (with a default) does not change every digest; ``self_check`` and the
        timeout judge the client and change no figure, so they are left out too. ``extra``: what else shaped
        the load (a Locust ramp)."""
        content = self.model_dump(mode="json", exclude_defaults=True,
                                  exclude={"name", "description", "self_check", "request_timeout_s"})
        text = json.dumps(content, sort_keys=True, separators=(",", ":")) + (f"|{extra}" if extra else "")
        return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def workload(self) -> str:
        """One line naming the workload exactly, for report headers."""
        load = (f"closed loop, concurrency {self.load.concurrency}" if isinstance(self.load, ClosedLoop)
                else f"open loop {self.load.arrival} {self.load.rate:g} req/s"
                     + (f" burstiness {self.load.burstiness:g}" if self.load.arrival == "gamma" else ""))
        count = f"{self.num_requests} requests" if self.num_requests else f"{self.duration_s:g} s"
        if self.sweep is not None:
            sweep = self.sweep
            load = (f"open loop {self.load.arrival}, offered rate swept from {sweep.start_rate:g} req/s (x"
                    f"{sweep.growth:g}, at most {sweep.max_rate:g})")
            count = (f"{sweep.point_requests} requests" if sweep.point_requests
                     else f"{sweep.point_duration_s:g} s") + " per point"
        prefix = (f" (first {self.shared_prefix_tokens} shared within a phase)" if self.shared_prefix_tokens
                  else "")
        return (f"{self.endpoint}, prompt {_describe(self.prompt_tokens)} tok{prefix}, output "
                f"{_describe(self.output_tokens)} tok{' (ignore_eos)' if self.ignore_eos else ''}, {load}, {count}")


def _describe(lengths: Fixed | Uniform | Choice) -> str:
    if isinstance(lengths, Fixed):
        return str(lengths.value)
    if isinstance(lengths, Uniform):
        return f"{lengths.min}-{lengths.max}"
    return f"list of {len(lengths.values)} (max {lengths.max})"


def default_scenarios_dir() -> Path:
    """``$PERFGATE_SCENARIOS_DIR``, else ``scenarios/`` in the current directory or the repo root."""
    return data_dir("scenarios")


def available_scenarios(scenarios_dir: Path | None = None) -> list[str]:
    return names_in(scenarios_dir or default_scenarios_dir())


def scenario_path(name_or_path: str, scenarios_dir: Path | None = None) -> Path:
    return named_file(name_or_path, scenarios_dir or default_scenarios_dir(), "scenario")


def load_scenario(name_or_path: str, scenarios_dir: Path | None = None) -> Scenario:
    """Read and validate one scenario; its ``name`` is the file's stem unless the file sets one."""
    path = scenario_path(name_or_path, scenarios_dir)
    data = read_toml(path, "scenario")
    if not isinstance(data, dict):  # pragma: no cover - tomllib always returns a table
        raise ConfigError("a scenario file must be a TOML table", source=str(path))
    data.setdefault("name", path.stem)
    return validate(Scenario, data, path, "scenario")


def scenario_from_flags(*, input_len: int, output_len: int, num_prompts: int, request_rate: float,
                        burstiness: float = 1.0, max_concurrency: int | None = None, seed: int = 0,
                        ignore_eos: bool = False, endpoint: Endpoint = "/v1/completions",
                        warmup_requests: int = 0, temperature: float | None = None) -> Scenario:
    """The scenario ``vllm bench serve --dataset-name random`` flags describe (for ``perfgate bench``).

    Like vLLM: an infinite rate with ``max_concurrency`` is a closed loop; a finite rate is an open loop
    (capped at ``max_concurrency`` in flight when given).
    """
    if request_rate == float("inf"):
        load: ClosedLoop | OpenLoop = ClosedLoop(concurrency=max_concurrency or num_prompts)
    else:
        load = OpenLoop(rate=request_rate, arrival="poisson" if burstiness == 1.0 else "gamma",
                        burstiness=burstiness, max_concurrency=max_concurrency)
    name = f"random-{input_len}-{output_len}"
    scenario = Scenario(
        name=name, description=f"random tokens, {input_len} in / {output_len} out (from command-line flags)",
        endpoint=endpoint, prompt_tokens=Fixed(value=input_len), output_tokens=Fixed(value=output_len),
        ignore_eos=ignore_eos, sampling=Sampling(temperature=temperature), load=load,
        num_requests=num_prompts, warmup=Warmup(requests=warmup_requests, until_stable_pct=0 if not
                                                 warmup_requests else 15.0), seed=seed)
    return scenario
