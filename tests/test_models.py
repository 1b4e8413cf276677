"""Synthetic models: exact architecture, a tokenizer that covers the whole vocabulary, the CLI."""

import json

import pytest
from transformers import AutoTokenizer

from perfgate._errors import ConfigError
from perfgate.cli import main
from perfgate.models import resolve_model, write_model


def test_qwen3_4b_has_the_exact_architecture(tmp_path):
    path = write_model("qwen3-4b-instruct-2507", tmp_path / "q")
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["architectures"] == ["Qwen3ForCausalLM"]
    expected = {"num_hidden_layers": 36, "hidden_size": 2560, "intermediate_size": 9728,
                "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
                "tie_word_embeddings": True, "rope_theta": 5000000, "max_position_embeddings": 262144,
                "torch_dtype": "bfloat16"}
    assert {k: cfg[k] for k in expected} == expected


def test_tokenizer_covers_every_id_and_renders_chat(tmp_path):
    path = write_model("tiny", tmp_path / "t")
    tok = AutoTokenizer.from_pretrained(path)
    assert len(tok) == 4096  # every id the random weights can emit decodes to a word
    words = tok.decode([10, 11, 12]).split()
    assert tok.encode(" ".join(words), add_special_tokens=False) == [10, 11, 12]  # one word, one token
    rendered = tok.apply_chat_template([{"role": "user", "content": "ba be"}], add_generation_prompt=True,
                                       tokenize=False)
    assert rendered == "<|im_start|>user\nba be<|im_end|>\n<|im_start|>assistant\n"


def test_resolve_caches_and_rejects_unknown(tmp_path):
    first = resolve_model("synthetic:tiny", cache_dir=tmp_path)
    assert resolve_model("synthetic:tiny", cache_dir=tmp_path) == first
    with pytest.raises(ConfigError, match="tiny"):
        resolve_model("synthetic:nope", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        resolve_model("./no/such/dir", cache_dir=tmp_path)


def test_cli_synth_writes_a_model(tmp_path, capsys):
    assert main(["model", "synth", "qwen3-4b-instruct-2507", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "tokenizer.json").is_file()
    assert "36" in capsys.readouterr().out
    assert main(["model", "synth", "nope", str(tmp_path / "x")]) == 2
