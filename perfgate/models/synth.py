"""Writing synthetic model directories (config + word-level tokenizer + chat template)."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

from perfgate._errors import ConfigError
from perfgate.models.catalog import SYNTHETIC_MODELS, SyntheticModel

SYNTHETIC_PREFIX = "synthetic:"
# ChatML, as Qwen3-Instruct uses, without the tool-calling branches.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_CONSONANTS = "bcdfghjklmnprstvwxz"
_VOWELS = "aeiou"


def models_cache_dir() -> Path:
    """``$PERFGATE_MODELS_DIR``, else ``~/.cache/perfgate/models``."""
    env = os.environ.get("PERFGATE_MODELS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "perfgate" / "models"


def resolve_model(spec: str, cache_dir: Path | None = None) -> str:
    """A profile's ``model`` -> what to pass to ``--model``: a directory path, or a hub id unchanged."""
    if spec.startswith(SYNTHETIC_PREFIX):
        name = spec[len(SYNTHETIC_PREFIX):]
        model = _synthetic(name)
        target = (cache_dir or models_cache_dir()) / f"{name}-{_fingerprint(model)}"
        if not (target / "config.json").is_file():
            write_model(name, target)
        return str(target)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError("model directory has no config.json", source=str(path),
                              fix="point `model` at a Hugging Face model directory, or use synthetic:<name>")
        return str(path.resolve())
    if spec.startswith((".", "/", "~")):
        raise ConfigError("model directory not found", source=spec,
                          fix=f"create it, or use one of: {', '.join(SYNTHETIC_PREFIX + n for n in SYNTHETIC_MODELS)}")
    return spec  # a hub id: vLLM resolves it (needs network or a populated HF cache)


def write_model(name: str, directory: Path) -> Path:
    """Write config.json, generation_config.json and a tokenizer for synthetic model ``name``.

    Written into a temporary sibling and renamed, so a killed run never leaves half a model behind.
    """
    model = _synthetic(name)
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        _write_files(model, tmp)
        if directory.exists():
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def _synthetic(name: str) -> SyntheticModel:
    try:
        return SYNTHETIC_MODELS[name]
    except KeyError:
        raise ConfigError(f"no synthetic model named '{name}'",
                          fix=f"use one of: {', '.join(sorted(SYNTHETIC_MODELS))}") from None


def _fingerprint(model: SyntheticModel) -> str:
    blob = json.dumps([model.config, model.bos, model.eos, model.im_start, CHAT_TEMPLATE], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _words():
    """Pronounceable pseudo-words, shortest first: each is one token of the word-level tokenizer."""
    syllables = [c + v for c in _CONSONANTS for v in _VOWELS]
    for length in itertools.count(1):
        for combo in itertools.product(syllables, repeat=length):
            yield "".join(combo)


def _write_files(model: SyntheticModel, out: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    config = dict(model.config)
    vocab_size = config["vocab_size"]
    specials = {model.bos[0]: model.bos[1], model.im_start[0]: model.im_start[1], model.eos[0]: model.eos[1]}
    # Exactly vocab_size entries, so every id the random weights can emit decodes to a word.
    vocab: dict[str, int] = {"<unk>": 0}
    taken = set(specials.values()) | {0}
    words = itertools.chain(model.extra_words, _words())
    for token_id in range(vocab_size):
        if token_id in taken:
            continue
        vocab[next(words)] = token_id
    vocab.update(specials)
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.add_special_tokens(list(specials))
    tokenizer.save(str(out / "tokenizer.json"))

    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps(
        {"bos_token_id": model.bos[1], "eos_token_id": [model.eos[1], model.bos[1]],
         "pad_token_id": model.bos[1], "do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20},
        indent=2) + "\n")
    (out / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": model.eos[0],
         "pad_token": model.bos[0], "unk_token": "<unk>", "model_max_length": config["max_position_embeddings"],
         "clean_up_tokenization_spaces": False, "chat_template": CHAT_TEMPLATE}, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": model.eos[0], "pad_token": model.bos[0], "unk_token": "<unk>"}, indent=2) + "\n")
    (out / "README.md").write_text(
        f"# synthetic:{model.name}\n\n{model.description}.\n\nWritten by perfgate for `--load-format dummy`: "
        "no weights are stored; vLLM fills the real shapes with random values. The tokenizer is word-level "
        "(every vocab word is one token), so prompts of an exact token count are easy to build.\n")
