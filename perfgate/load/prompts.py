"""Prompts of an exact token count, measured with the served model's own tokenizer.

Like vLLM's random dataset: random vocabulary ids are decoded to text, the text is re-encoded, and the
ids are trimmed or padded until the text the server will see has exactly the asked number of tokens. For
``/v1/completions`` that count includes the special tokens the server adds (a BOS, for tokenizers that
have one); for ``/v1/chat/completions`` it is the rendered chat template's token count. The synthetic
models' tokenizers are word-level (one vocab word = one token), where the first try is exact; BPE
tokenizers merge across the joins and need the re-encode loop.

Which random draws a phase's prompts come from (seed, run nonce, repeat) is ``perfgate.load.stream``'s
``PromptStream``, re-exported here.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from perfgate._errors import ConfigError
from perfgate.load.stream import PromptStream, new_nonce
from perfgate.models import resolve_model

__all__ = ["Prompt", "PromptBuilder", "PromptStream", "load_tokenizer", "new_nonce"]

# Re-encode rounds before giving up on an exact count (BPE merges at the joins converge in 1-3).
_MAX_ROUNDS = 12


@dataclass(frozen=True)
class Prompt:
    """A built prompt: ``text`` for completions, or ``messages`` for chat; ``tokens`` as the server counts."""

    tokens: int
    text: str | None = None
    messages: list[dict[str, str]] | None = None


def load_tokenizer(name_or_path: str) -> Any:
    """A Hugging Face tokenizer from a model directory (or ``synthetic:<name>``, or a cached hub id)."""
    if name_or_path.startswith("synthetic:"):
        name_or_path = resolve_model(name_or_path)
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name_or_path)
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, HFValidationError ...
        raise ConfigError(f"cannot load a tokenizer from '{name_or_path}': {type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''}",
                          fix="pass the served model's directory (--tokenizer DIR), or synthetic:<name>; "
                              "prompts are built to an exact token count with the server's own tokenizer"
                          ) from None


_CLEAN_IDS: dict[int, tuple[Any, list[int]]] = {}


def _clean_ids(tokenizer: Any) -> list[int]:
    """Ordinary vocabulary ids that decode to clean text (cached per tokenizer: 150k decodes take ~2 s).

    Byte-level BPE vocabularies hold pieces of multi-byte characters; decoded alone they give U+FFFD,
    which re-encodes to other tokens and never converges, so those are left out, as are special tokens.
    """
    cached = _CLEAN_IDS.get(id(tokenizer))
    if cached is not None and cached[0] is tokenizer:
        return cached[1]
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = set(getattr(tokenizer, "get_added_vocab", dict)().values())
    candidates = [i for i in range(len(tokenizer)) if i not in special and i not in added]
    pieces = tokenizer.batch_decode([[i] for i in candidates], clean_up_tokenization_spaces=False)
    ids = [i for i, text in zip(candidates, pieces) if text and "\ufffd" not in text]
    _CLEAN_IDS[id(tokenizer)] = (tokenizer, ids)
    return ids


class PromptBuilder:
    """Builds prompts of exact token counts for one tokenizer and endpoint.

    A shared prefix (``prefix_text``) opens every prompt built with it: for chat it is a system message,
    for completions the text's beginning. The count a prompt is built to always includes it.
    """

    def __init__(self, tokenizer: Any, *, chat: bool) -> None:
        self.tokenizer = tokenizer
        self.chat = chat
        self._ids = _clean_ids(tokenizer)
        if not self._ids:
            raise ConfigError("the tokenizer has no ordinary (non-special) tokens to build prompts from")
        self._overheads: dict[str, int] = {}
        # Tokens the server adds around the text: chat template, or BOS/EOS for completions.
        self.overhead = self.count("") if not chat else self._chat_overhead()

    def count(self, text: str, prefix: str = "") -> int:
        """Tokens the server will count for ``text`` (after ``prefix``, if any) on this endpoint."""
        if self.chat:
            ids = self.tokenizer.apply_chat_template(self.messages(text, prefix), add_generation_prompt=True,
                                                     tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):  # some transformers versions return a BatchEncoding
                ids = ids["input_ids"]
            return len(ids)
        # add_special_tokens=True: vLLM's completions endpoint tokenizes the prompt the same way.
        return len(self.tokenizer(self.join(prefix, text), add_special_tokens=True)["input_ids"])

    @staticmethod
    def messages(text: str, prefix: str = "") -> list[dict[str, str]]:
        """The chat messages of a prompt: the shared prefix is a system message before the user's text."""
        user = {"role": "user", "content": text}
        return [{"role": "system", "content": prefix}, user] if prefix else [user]

    @staticmethod
    def join(prefix: str, text: str) -> str:
        """A completions prompt: the prefix, then a space (so the two never merge into one word), the text."""
        return f"{prefix} {text}" if prefix else text

    def _chat_overhead(self) -> int:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError("the tokenizer has no chat template, so chat prompts cannot be counted",
                              fix="use endpoint = \"/v1/completions\", or a model directory with a chat "
                                  "template in tokenizer_config.json")
        return self.count("")

    def opening_tokens(self) -> int:
        """Tokens every prompt on this endpoint opens with whatever its text: a BOS, the chat template's
        opening, a default system prompt some templates add. The server's prefix cache may serve them."""
        a, b = (self.tokenizer.decode([i], skip_special_tokens=True) for i in self._ids[:2])
        if self.chat:
            ids = [self.tokenizer.apply_chat_template(self.messages(t), add_generation_prompt=True, tokenize=True)
                   for t in (a, b)]
            ids = [x["input_ids"] if hasattr(x, "keys") else x for x in ids]
        else:
            ids = [self.tokenizer(t, add_special_tokens=True)["input_ids"] for t in (a, b)]
        return next((n for n, (x, y) in enumerate(zip(*ids)) if x != y), min(map(len, ids)))

    def _overhead(self, prefix: str) -> int:
        if not prefix:
            return self.overhead
        if prefix not in self._overheads:
            self._overheads = {prefix: self.count("", prefix)}  # one phase's prefix at a time
        return self._overheads[prefix]

    def prefix_text(self, tokens: int, rng: random.Random) -> str:
        """Random text of exactly ``tokens`` tokens (no special tokens), to open every prompt of a phase."""
        text, got = self._fit(tokens, rng, lambda t: len(self.tokenizer(t, add_special_tokens=False)["input_ids"]),
                              start=tokens)
        if got != tokens:
            raise ConfigError(f"a shared prefix of exactly {tokens} tokens could not be built with this "
                              f"tokenizer (closest: {got})", fix="try another shared_prefix_tokens")
        return text

    def build(self, tokens: int, rng: random.Random, prefix: str = "") -> Prompt:
        """A prompt of exactly ``tokens`` tokens (server count, ``prefix`` included); ConfigError if impossible."""
        overhead = self._overhead(prefix)
        content = tokens - overhead
        if content < 1:
            what = "the chat template" if self.chat else "the special tokens the server adds"
            if prefix:
                what = f"the shared prefix and {what}"
            raise ConfigError(f"a prompt of {tokens} tokens cannot be built: {what} alone take "
                              f"{overhead}", fix=f"ask for at least {overhead + 1} prompt tokens"
                              + (" or a shorter shared_prefix_tokens" if prefix else ""))
        text, got = self._fit(tokens, rng, lambda t: self.count(t, prefix), start=content)
        # Not exact only for a pathological tokenizer: the closest is returned; the request records the count
        # it actually has, so the mismatch is visible, never hidden.
        if self.chat:
            return Prompt(tokens=got, messages=self.messages(text, prefix))
        return Prompt(tokens=got, text=self.join(prefix, text))

    def _fit(self, tokens: int, rng: random.Random, count: Any, *, start: int) -> tuple[str, int]:
        """Content text whose ``count`` is ``tokens`` (or the closest found), from ``start`` random ids."""
        ids = [rng.choice(self._ids) for _ in range(start)]
        best: tuple[int, str] | None = None
        for _ in range(_MAX_ROUNDS):
            text = self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            got = count(text)
            if got == tokens:
                return text, got
            if best is None or abs(got - tokens) < abs(best[0] - tokens):
                best = (got, text)
            # Re-encode what the server would see, then trim or pad to the target.
            ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            if got > tokens:
                ids = ids[: max(1, len(ids) - (got - tokens))]
            else:
                ids += [rng.choice(self._ids) for _ in range(tokens - got)]
        assert best is not None
        return best[1], best[0]
