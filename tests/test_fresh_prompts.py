"""Fresh prompts in every repeat (measurement method 2), and prefixes shared only where a scenario says so.

Unit tests build prompts with the tiny synthetic model's tokenizer (and a small byte-level BPE one) and drive
the engine against a recording server that counts prompt tokens with that tokenizer, as vLLM does. The
``cpu``/``slow`` tests run real vLLM (CPU build): fresh repeats keep its prefix-cache hit rate near 0, and
re-sent prompts (same nonce, same repeat) make the phase INVALID.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from perfgate._errors import ConfigError
from perfgate.core.phase import PhaseResult
from perfgate.load.engine import run_load
from perfgate.load.prompts import PromptBuilder, PromptStream, load_tokenizer, new_nonce
from perfgate.load.scenario import (
    Choice,
    ClosedLoop,
    Fixed,
    OpenLoop,
    Scenario,
    SelfCheck,
    Uniform,
    Warmup,
    load_scenario,
)
from perfgate.load.schedule import request_specs
from perfgate.load.sweep import run_sweep
from perfgate.run.measure import PREFIX_HIT_TOLERANCE_PCT, check_prefix_cache, prefix_cache_verdict

HEAD = 16  # prompts must differ within their first HEAD tokens (a GPU KV block is 16 tokens)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("synthetic:tiny")


def scenario(*, prompt=None, prefix: int = 0, endpoint: str = "/v1/completions", n: int = 6,
             warmup: Warmup | None = None, load=None, **kw) -> Scenario:
    return Scenario(name=kw.pop("name", "fresh"), description="test", endpoint=endpoint,
                    prompt_tokens=prompt or Uniform(min=40, max=90), shared_prefix_tokens=prefix,
                    output_tokens=Fixed(value=2), load=load or ClosedLoop(concurrency=2), num_requests=n,
                    warmup=warmup or Warmup(requests=0), **kw)


def prompt_of(body: bytes | dict) -> str | list[dict]:
    data = json.loads(body) if isinstance(body, bytes) else body
    return data["messages"] if "messages" in data else data["prompt"]


def server_ids(tok, prompt: str | list[dict]) -> list[int]:
    """The token ids the server sees (the chat template rendered, or the prompt with special tokens)."""
    if isinstance(prompt, list):
        ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)
    return list(tok(prompt, add_special_tokens=True)["input_ids"])


def content_head(tok, prompt: str | list[dict], skip: int = 0) -> tuple[int, ...]:
    """The first HEAD tokens of a prompt's own text (after ``skip`` tokens of it)."""
    text = prompt if isinstance(prompt, str) else prompt[-1]["content"]
    return tuple(tok(text, add_special_tokens=False)["input_ids"][skip:skip + HEAD])


def specs(sc: Scenario, tok, stream: PromptStream, name: str = "measure", n: int = 6, **kw) -> list:
    builder = PromptBuilder(tok, chat=sc.endpoint.endswith("chat/completions"))
    return list(request_specs(sc, builder, "m", stream, name, n, **kw))


# --- the stream -------------------------------------------------------------------------------------------

def test_prompt_stream_seeds_by_seed_nonce_repeat_and_name() -> None:
    stream = PromptStream(7, "ab12cd34", 2)
    assert stream.as_dict() == {"seed": 7, "nonce": "ab12cd34", "repeat": 2}
    draw = stream.rng("fresh:measure").random()
    assert draw == random.Random("7:ab12cd34:2:fresh:measure").random() == stream.rng("fresh:measure").random()
    others = [PromptStream(8, "ab12cd34", 2), PromptStream(7, "ab12cd35", 2), PromptStream(7, "ab12cd34", 3)]
    assert all(o.rng("fresh:measure").random() != draw for o in others)
    assert stream.rng("fresh:warmup0").random() != draw
    nonces = {new_nonce() for _ in range(50)}
    assert len(nonces) == 50 and all(re.fullmatch(r"[0-9a-f]{8}", n) for n in nonces)


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_same_stream_gives_byte_identical_requests(tokenizer, endpoint: str) -> None:
    sc = scenario(endpoint=endpoint, prefix=24)
    stream = PromptStream(0, "deadbeef", 1)
    first, again = specs(sc, tokenizer, stream), specs(sc, tokenizer, PromptStream(0, "deadbeef", 1))
    assert [s.body for s in first] == [s.body for s in again]
    assert [s.prompt_tokens for s in first] == [s.prompt_tokens for s in again]


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_another_repeat_nonce_or_scenario_differs_from_the_first_token(tokenizer, endpoint: str) -> None:
    sc = scenario(endpoint=endpoint)
    base = PromptStream(0, "deadbeef", 0)
    heads = {content_head(tokenizer, prompt_of(s.body)) for s in specs(sc, tokenizer, base, n=20)}
    assert len(heads) == 20  # no two requests of a phase share a head either
    for other, sc_other in ((PromptStream(0, "deadbeef", 1), sc), (PromptStream(0, "feedface", 0), sc),
                            (base, scenario(endpoint=endpoint, name="another"))):
        for s in specs(sc_other, tokenizer, other, n=20):
            head = content_head(tokenizer, prompt_of(s.body))
            assert len(head) == HEAD and head not in heads


def test_every_repeat_and_run_is_the_same_workload_with_other_text(tokenizer) -> None:
    """Lengths follow the scenario's seed alone: only the text is fresh, so repeats are comparable."""
    sc = scenario().model_copy(update={"output_tokens": Uniform(min=2, max=40)})

    def shape(stream: PromptStream) -> list[tuple[int, int]]:
        return [(s.prompt_tokens, s.max_tokens) for s in specs(sc, tokenizer, stream, n=20)]

    base = shape(PromptStream(0, "deadbeef", 0))
    assert len(set(base)) > 5  # the lengths do vary from request to request
    assert shape(PromptStream(0, "feedface", 3)) == base
    assert shape(PromptStream(1, "deadbeef", 0)) != base  # another seed is another workload
    texts = {prompt_of(s.body) for s in specs(sc, tokenizer, PromptStream(0, "feedface", 3), n=20)}
    assert not texts & {prompt_of(s.body) for s in specs(sc, tokenizer, PromptStream(0, "deadbeef", 0), n=20)}


def test_request_specs_refuses_a_bare_stream_name(tokenizer) -> None:
    with pytest.raises(TypeError, match="PromptStream"):
        specs(scenario(), tokenizer, "measure")  # type: ignore[arg-type]


# --- shared prefix ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["word", "bpe"])
@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_shared_prefix_counts_exactly_and_is_shared_within_a_phase_only(tokenizer, bpe_tokenizer, kind: str,
                                                                        endpoint: str) -> None:
    tok = tokenizer if kind == "word" else bpe_tokenizer
    chat = endpoint.endswith("chat/completions")
    sc = scenario(endpoint=endpoint, prefix=32, prompt=Uniform(min=48, max=120))
    stream = PromptStream(0, "cafe0001", 0)
    phase = specs(sc, tok, stream, n=8)
    for s in phase:  # the total the server sees, prefix included, is exactly what was asked
        assert len(server_ids(tok, prompt_of(s.body))) == s.prompt_tokens
        assert 48 <= s.prompt_tokens <= 120
    prompts = [prompt_of(s.body) for s in phase]
    if chat:
        assert all([m["role"] for m in p] == ["system", "user"] for p in prompts)
        prefixes = {p[0]["content"] for p in prompts}
        (prefix,) = prefixes
        assert len(tok(prefix, add_special_tokens=False)["input_ids"]) == 32
        assert len({p[1]["content"] for p in prompts}) == 8
    else:
        # The prefix's 32 tokens open every prompt; what follows differs per request.
        ids = [server_ids(tok, p) for p in prompts]
        assert len({tuple(i[:30]) for i in ids}) == 1
        assert len({tuple(i[34:34 + HEAD]) for i in ids}) == 8
    # Another repeat, and the warm-up of the same repeat, share nothing with this phase's prefix.
    for other in (specs(sc, tok, PromptStream(0, "cafe0001", 1), n=2), specs(sc, tok, stream, "warmup0", n=2)):
        for s in other:
            p = prompt_of(s.body)
            if chat:
                assert p[0]["content"] not in prefixes
                assert tok(p[0]["content"], add_special_tokens=False)["input_ids"][:HEAD] != \
                    tok(prefix, add_special_tokens=False)["input_ids"][:HEAD]
            else:
                assert server_ids(tok, p)[:HEAD] != ids[0][:HEAD]


def test_locust_workers_share_the_phase_prefix_but_not_prompts(tokenizer) -> None:
    sc = scenario(prefix=20, prompt=Fixed(value=60))
    stream = PromptStream(0, "cafe0002", 0)
    a = specs(sc, tokenizer, stream, "locust-101", n=3, prefix_name="locust")
    b = specs(sc, tokenizer, stream, "locust-202", n=3, prefix_name="locust")
    heads = [server_ids(tokenizer, prompt_of(s.body)) for s in a + b]
    assert len({tuple(h[:20]) for h in heads}) == 1
    assert len({tuple(h[20:20 + HEAD]) for h in heads}) == 6


def test_prefix_too_long_for_the_template_is_a_clear_error(tokenizer) -> None:
    sc = scenario(endpoint="/v1/chat/completions", prefix=38, prompt=Fixed(value=40))
    with pytest.raises(ConfigError) as err:
        specs(sc, tokenizer, PromptStream(0, "x", 0), n=1)
    assert "shared prefix" in str(err.value) and "shared_prefix_tokens" in str(err.value)


@pytest.mark.parametrize("lengths, shortest", [(Fixed(value=64), 64), (Uniform(min=40, max=100), 40),
                                               (Choice(values=[300, 30, 100]), 30)])
def test_prefix_must_be_shorter_than_the_shortest_prompt(lengths, shortest: int) -> None:
    assert scenario(prompt=lengths, prefix=shortest - 1).shared_prefix_tokens == shortest - 1
    for bad in (shortest, shortest + 50):
        with pytest.raises(ValidationError) as err:
            scenario(prompt=lengths, prefix=bad)
        text = str(err.value)
        assert "shared_prefix_tokens" in text and f"below {shortest}" in text
    with pytest.raises(ValidationError):
        scenario(prefix=-1)


def test_prefix_validation_names_the_file_line_and_fix(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('description = "x"\nnum_requests = 4\nshared_prefix_tokens = 128\n'
                    '[prompt_tokens]\nkind = "fixed"\nvalue = 128\n[output_tokens]\nkind = "fixed"\nvalue = 4\n'
                    '[load]\nkind = "closed"\nconcurrency = 1\n')
    with pytest.raises(ConfigError) as err:
        load_scenario(str(path))
    text = str(err.value)
    assert f"{path}:3" in text and "field 'shared_prefix_tokens'" in text and "below 128" in text


def test_expected_prefix_hit_pct_and_workload() -> None:
    assert scenario(prompt=Fixed(value=512)).expected_prefix_hit_pct() == 0.0
    assert scenario(prompt=Fixed(value=512), prefix=128).expected_prefix_hit_pct() == 25.0
    assert scenario(prompt=Uniform(min=100, max=300), prefix=50).expected_prefix_hit_pct() == 25.0
    assert scenario(prompt=Choice(values=[100, 300, 500]), prefix=60).expected_prefix_hit_pct() == 20.0
    assert "first 128 shared within a phase" in scenario(prompt=Fixed(value=512), prefix=128).workload()
    assert "shared" not in scenario(prompt=Fixed(value=512)).workload()


# --- the phase check --------------------------------------------------------------------------------------

def test_prefix_cache_verdict() -> None:
    reason, note = prefix_cache_verdict(94.3, expected_max_pct=0.0, shared_prefix_tokens=0)
    assert reason is not None and "prefix cache served 94.3 %" in reason
    assert "at most 0.0 % (shared_prefix_tokens = 0)" in reason and "warm cache" in reason
    assert "at most 0.0 %" in note
    edge = PREFIX_HIT_TOLERANCE_PCT
    assert prefix_cache_verdict(edge, expected_max_pct=0.0, shared_prefix_tokens=0)[0] is None
    assert prefix_cache_verdict(edge + 0.1, expected_max_pct=0.0, shared_prefix_tokens=0)[0] is not None
    assert prefix_cache_verdict(29.0, expected_max_pct=25.0, shared_prefix_tokens=128)[0] is None
    reason, _ = prefix_cache_verdict(31.0, expected_max_pct=25.0, shared_prefix_tokens=128)
    assert reason is not None and "at most 25.0 % (shared_prefix_tokens = 128)" in reason
    reason, note = prefix_cache_verdict(None, expected_max_pct=0.0, shared_prefix_tokens=0,
                                        why_unread="prefix caching off?")
    assert reason is None and "not checked (prefix caching off?)" in note


def test_template_opening_is_allowed_but_not_more(tokenizer, bpe_tokenizer) -> None:
    """A chat template that opens every prompt alike (here with a default system prompt, as some do) is
    served from the cache in every request: that share is allowed on top of the declared prefix."""
    assert PromptBuilder(tokenizer, chat=False).opening_tokens() == 0
    assert PromptBuilder(tokenizer, chat=True).opening_tokens() == 2  # <|im_start|> user
    assert PromptBuilder(bpe_tokenizer, chat=False).opening_tokens() == 1  # the BOS
    tok = load_tokenizer("synthetic:tiny")
    tok.chat_template = "<|im_start|>system\n" + " ".join(["ba"] * 30) + "<|im_end|>\n" + tok.chat_template
    opening = PromptBuilder(tok, chat=True).opening_tokens()
    assert opening == 35  # <|im_start|> system, 30 words, <|im_end|>, <|im_start|> user
    pct = 100.0 * opening / 144
    reason, note = prefix_cache_verdict(pct, expected_max_pct=0.0, shared_prefix_tokens=0, opening_pct=pct)
    assert reason is None and f"{pct:.1f} % more for the template's common opening" in note
    reason, _ = prefix_cache_verdict(pct + PREFIX_HIT_TOLERANCE_PCT + 1, expected_max_pct=0.0,
                                     shared_prefix_tokens=0, opening_pct=pct)
    assert reason is not None


def test_check_prefix_cache_invalidates_the_phase_and_notes_why() -> None:
    sc = scenario(prompt=Fixed(value=512), prefix=128)
    warm = PhaseResult(profile="p", scenario="s", gpu_class="cpu", metrics={"prefix_cache_hit_pct": 80.0})
    check_prefix_cache(warm, sc)
    assert not warm.valid and "prefix cache served 80.0 %" in warm.invalid_reasons[0]
    assert any("at most 25.0 %" in n for n in warm.notes)
    fresh = PhaseResult(profile="p", scenario="s", gpu_class="cpu", metrics={"prefix_cache_hit_pct": 24.0})
    check_prefix_cache(fresh, sc)
    assert fresh.valid and not fresh.invalid_reasons and any("24.0 % of prompt tokens hit" in n for n in fresh.notes)
    unread = PhaseResult(profile="p", scenario="s", gpu_class="cpu",
                         unavailable={"prefix_cache_hit_pct": "no prefix-cache lookups in the window"})
    check_prefix_cache(unread, sc)
    assert unread.valid and any("not checked (no prefix-cache lookups" in n for n in unread.notes)
    down = PhaseResult(profile="p", scenario="s", gpu_class="cpu", unavailable={"server": "/metrics unreachable"})
    check_prefix_cache(down, sc)
    assert any("/metrics unreachable" in n for n in down.notes)


# --- through the engine, against a server that records what it was sent -----------------------------------

class Recorder:
    """A tiny OpenAI-style streaming server in its own thread: records every request body, counts prompt
    tokens with the real tokenizer (as vLLM does), and answers ``max_tokens`` tokens."""

    def __init__(self, tok) -> None:
        self.tok = tok
        self.bodies: list[dict] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        self.ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        self.ready.set()
        self.loop.run_forever()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode()
                headers = {k.strip().lower(): v.strip() for k, v in
                           (line.split(":", 1) for line in head.split("\r\n")[1:] if ":" in line)}
                length = int(headers.get("content-length", 0))
                body = await reader.readexactly(length) if length else b""
                if head.startswith("GET"):
                    data = json.dumps({"data": [{"id": "rec", "root": None}]}).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                                 % (len(data), data))
                    await writer.drain()
                    continue
                req = json.loads(body)
                self.bodies.append(req)
                n = req.get("max_tokens") or req.get("max_completion_tokens") or 1
                chat = "messages" in req
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
                events = [{"choices": [{"index": 0, "delta": {"content": " w"}} if chat else
                                       {"index": 0, "text": " w", "finish_reason": None}]} for _ in range(n)]
                events.append({"choices": [], "usage": {"prompt_tokens": len(server_ids(self.tok, prompt_of(req))),
                                                        "completion_tokens": n}})
                for event in events:
                    chunk = b"data: " + json.dumps(event).encode() + b"\n\n"
                    writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                done = b"data: [DONE]\n\n"
                writer.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(done), done))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
def recorder(tokenizer):
    rec = Recorder(tokenizer)
    yield rec
    rec.stop()


def heads_of(tok, bodies: list[dict]) -> list[tuple[int, ...]]:
    return [content_head(tok, prompt_of(b)) for b in bodies]


async def test_warm_up_batches_and_the_window_never_resend_a_prompt(recorder, tokenizer) -> None:
    # until_stable_pct tiny: the batches never settle, so all 3 run.
    sc = scenario(n=6, warmup=Warmup(requests=3, until_stable_pct=0.0001, max_batches=3))
    recorder.bodies.clear()
    stream = PromptStream(0, "0badf00d", 4)
    res = await run_load(recorder.base_url, sc, model="rec", tokenizer=tokenizer, prompt_stream=stream)
    assert res.valid, res.invalid_reasons
    assert res.prompt_stream == {"seed": 0, "nonce": "0badf00d", "repeat": 4}
    assert len(res.warmup_records) == 9 and len(res.records) == 6 and len(recorder.bodies) == 15
    heads = heads_of(tokenizer, recorder.bodies)
    assert len(set(heads)) == 15, "a warm-up batch or the window re-sent a prompt"
    measured = sorted(prompt_of(b) for b in recorder.bodies[9:])
    # The same stream rebuilds the same measured prompts (without warm-up: those come from their own part).
    recorder.bodies.clear()
    await run_load(recorder.base_url, sc, model="rec", tokenizer=tokenizer, prompt_stream=stream, warmup=False)
    assert sorted(prompt_of(b) for b in recorder.bodies) == measured


async def test_runs_without_a_stream_send_fresh_prompts(recorder, tokenizer) -> None:
    sc = scenario(n=5)
    recorder.bodies.clear()
    first = await run_load(recorder.base_url, sc, model="rec", tokenizer=tokenizer)
    second = await run_load(recorder.base_url, sc, model="rec", tokenizer=tokenizer)
    assert first.prompt_stream["nonce"] != second.prompt_stream["nonce"]
    assert first.prompt_stream["seed"] == 0 and first.prompt_stream["repeat"] == 0
    heads = heads_of(tokenizer, recorder.bodies)
    assert len(heads) == 10 and len(set(heads)) == 10


async def test_sweep_points_share_no_prompt(recorder, tokenizer) -> None:
    sc = scenario(n=4, load=OpenLoop(rate=1.0), self_check=SelfCheck(max_p99_send_lag_ms=500,
                                                                     min_achieved_rate_ratio=0.3))
    recorder.bodies.clear()
    res = await run_sweep(recorder.base_url, sc, model="rec", tokenizer=tokenizer, bounds={"p99_e2el_ms": 60_000},
                          rates=[20.0, 40.0, 80.0], prompt_stream=PromptStream(0, "5eed5eed", 0))
    assert len(res.points) == 3
    heads = heads_of(tokenizer, recorder.bodies)
    assert len(heads) == 12 and len(set(heads)) == 12


async def test_shared_prefix_counts_hold_through_the_engine(recorder, tokenizer) -> None:
    for endpoint in ("/v1/completions", "/v1/chat/completions"):
        sc = scenario(endpoint=endpoint, n=4, prefix=30, prompt=Uniform(min=40, max=80))
        res = await run_load(recorder.base_url, sc, model="rec", tokenizer=tokenizer)
        assert res.valid and res.metrics["token_count_mismatches"] == 0, res.invalid_reasons
        assert res.metrics["completed"] == 4


def test_bench_prompt_nonce_reproduces_and_defaults_to_fresh(recorder, tmp_path: Path, capsys) -> None:
    import argparse

    from perfgate.commands import bench as bench_command

    parser = argparse.ArgumentParser()
    bench_command.register(parser.add_subparsers())

    def bench(*extra: str) -> tuple[dict, list]:
        recorder.bodies.clear()
        out = tmp_path / f"r{len(list(tmp_path.iterdir()))}.json"
        args = parser.parse_args(["bench", "--base-url", recorder.base_url, "--tokenizer", "synthetic:tiny",
                                  "--random-input-len", "24", "--random-output-len", "1", "--num-prompts", "3",
                                  "--max-concurrency", "1", "--result-file", str(out), *extra])
        assert args.func(args) == 0, capsys.readouterr()
        return json.loads(out.read_text()), [prompt_of(b) for b in recorder.bodies]

    fixed, sent = bench("--prompt-nonce", "abad1dea")
    assert fixed["prompt_nonce"] == "abad1dea" and fixed["prompt_stream"]["nonce"] == "abad1dea"
    assert bench("--prompt-nonce", "abad1dea")[1] == sent
    fresh, fresh_sent = bench()
    assert fresh["prompt_nonce"] != "abad1dea" and set(fresh_sent).isdisjoint(sent)
    assert f"prompt nonce: {fresh['prompt_nonce']}" in capsys.readouterr().out


def test_session_nonce_is_fresh_and_saved(tmp_path: Path) -> None:
    from perfgate.run.session import PerfgateSession

    a, b = PerfgateSession(results_dir=tmp_path / "a"), PerfgateSession(results_dir=tmp_path / "b")
    assert re.fullmatch(r"[0-9a-f]{8}", a.prompt_nonce) and a.prompt_nonce != b.prompt_nonce
    assert json.loads(a.write_manifest().read_text())["prompt_nonce"] == a.prompt_nonce


def test_run_json_carries_the_session_nonce(tmp_path: Path) -> None:
    from perfgate.report import write_run_report
    from perfgate.run.session import PerfgateSession

    session = PerfgateSession(results_dir=tmp_path)
    session.add_phase(PhaseResult(profile="p", scenario="s", gpu_class="cpu", metrics={"completed": 1.0},
                                  prompt_stream={"seed": 0, "nonce": session.prompt_nonce, "repeat": 0}))
    files = write_run_report(session)
    assert json.loads(files.run_json.read_text())["prompt_nonce"] == session.prompt_nonce


def test_locust_command_carries_the_stream(tmp_path: Path) -> None:
    from perfgate.load.locust_runner import locust_command

    argv = locust_command("http://h", tmp_path / "s.json", model="m", tokenizer="t", results_dir=tmp_path, users=1,
                          spawn_rate=1, run_time_s=1, ramp=None, processes=None, warmup_s=0, stop_timeout_s=1,
                          locustfile=tmp_path / "l.py", prompt_stream=PromptStream(0, "c0ffee00", 3))
    assert argv[argv.index("--perfgate-prompt-nonce") + 1] == "c0ffee00"
    assert argv[argv.index("--perfgate-prompt-repeat") + 1] == "3"


# --- real vLLM on the CPU ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cpu_target(tmp_path_factory: pytest.TempPathFactory):
    from perfgate.serving.builds import unavailable_reason

    if reason := unavailable_reason("cpu"):
        pytest.skip(reason)
    from perfgate.models import resolve_model
    from perfgate.run.target import Target
    from perfgate.serving.profile import load_profile
    from perfgate.serving.server import VllmServer

    model = resolve_model("synthetic:tiny")
    log = tmp_path_factory.mktemp("fresh-vllm") / "vllm.log"
    server = VllmServer(load_profile("cpu-tiny"), model, log_path=log)
    try:
        server.start()
        server.wait_healthy()
        yield Target(server=server, profile="cpu-tiny", served_model_name="tiny", tokenizer=model, gpu_class="cpu",
                     model_dir=model)
    finally:
        server.stop()


def long_prompts(**kw) -> Scenario:
    """512-token prompts (several of the CPU build's KV blocks), 2 output tokens: quick, and cacheable."""
    return Scenario(name=kw.pop("name", "fresh-cpu"), description="fresh prompts on real vLLM",
                    prompt_tokens=Fixed(value=512), output_tokens=Fixed(value=2), num_requests=4,
                    load=ClosedLoop(concurrency=kw.pop("concurrency", 2)), request_timeout_s=120,
                    warmup=Warmup(requests=2, until_stable_pct=0), **kw)


@pytest.mark.cpu
@pytest.mark.slow
async def test_real_vllm_fresh_repeats_do_not_hit_the_prefix_cache(cpu_target, tmp_path: Path) -> None:
    from perfgate.run.measure import measure_phase

    sc = long_prompts()
    phases = [await measure_phase(cpu_target, sc, results_dir=tmp_path, repeat=r, nonce="f00dcafe")
              for r in range(3)]
    hits = [p.metrics.get("prefix_cache_hit_pct") for p in phases]
    assert all(h is not None for h in hits), [p.unavailable for p in phases]
    assert all(h <= 10.0 for h in hits), hits
    assert all(p.valid for p in phases), [p.invalid_reasons for p in phases]
    # No NVML on the CPU path: no energy or throttle figures, the source's reason, nothing judged on them.
    assert not {k for p in phases for k in p.metrics if k.startswith(("energy_", "avg_power", "throttle_"))}
    assert all("nvml" in p.unavailable and not any("clock-event" in n for n in p.notes) for p in phases)
    assert [p.prompt_stream for p in phases] == [{"seed": 0, "nonce": "f00dcafe", "repeat": r} for r in range(3)]
    assert all(any("at most 0.0 %" in n for n in p.notes) for p in phases)
    saved = json.loads((tmp_path / "phases" / "cpu-tiny__fresh-cpu__r2.json").read_text())
    assert saved["prompt_stream"]["repeat"] == 2 and saved["valid"]


@pytest.mark.cpu
@pytest.mark.slow
async def test_real_vllm_resent_prompts_make_the_phase_invalid(cpu_target, tmp_path: Path) -> None:
    from perfgate.run.measure import measure_phase

    sc = long_prompts(name="resent-cpu")
    first = await measure_phase(cpu_target, sc, results_dir=tmp_path / "a", repeat=0, nonce="5a5a5a5a")
    again = await measure_phase(cpu_target, sc, results_dir=tmp_path / "b", repeat=0, nonce="5a5a5a5a")
    assert first.valid and first.metrics["prefix_cache_hit_pct"] <= 10.0, (first.invalid_reasons, first.metrics)
    assert not again.valid, again.metrics.get("prefix_cache_hit_pct")
    assert again.metrics["prefix_cache_hit_pct"] > 50.0
    reason = " ".join(again.invalid_reasons)
    assert "prefix cache served" in reason and "warm cache" in reason


@pytest.mark.cpu
@pytest.mark.slow
async def test_real_vllm_declared_shared_prefix_is_valid_and_hits(cpu_target, tmp_path: Path) -> None:
    from perfgate.run.measure import measure_phase

    sc = long_prompts(name="prefix-cpu", endpoint="/v1/chat/completions", shared_prefix_tokens=384, concurrency=1)
    phase = await measure_phase(cpu_target, sc, results_dir=tmp_path, repeat=0)
    assert phase.valid, phase.invalid_reasons
    assert phase.metrics["token_count_mismatches"] == 0
    # Requests 2-4 reuse the system prompt's cached blocks; never more than the declared 75 % (+ tolerance).
    assert 20.0 < phase.metrics["prefix_cache_hit_pct"] <= sc.expected_prefix_hit_pct() + PREFIX_HIT_TOLERANCE_PCT
