"""A runner that lies fails: GPU tests asked for on a machine that cannot run them fail the session.

The rule (applied by the pytest plugin once collection is done, never under ``--collect-only`` or
``--vllm-url``): a session *asks for GPU tests* when at least one selected test carries the ``gpu`` marker
and either

- the ``-m`` expression depends on ``gpu`` (``-m gpu``, ``-m "gpu and slow"``, ``-m "gpu or cpu"``; not
  ``-m slow`` or ``-m "not gpu"``), or
- ``--profile`` names a CUDA profile.

If such a session cannot serve a CUDA profile here (no NVIDIA GPU visible to NVML, a broken driver, or no
CUDA build of vLLM: ``perfgate.serving.builds.unavailable_reason("cuda")``), it fails at once with that cause: a
GPU job whose every test skipped would otherwise go green having measured nothing. ``--perfgate-allow-no-gpu``
turns that into a skip of the GPU tests, with the cause as the reason. A plain run (no ``-m``, no GPU
profile: the repository's own ``pytest`` on a CPU machine) skips GPU tests at setup with the reason, as before.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

from _pytest.mark import expression as _markexpr  # pytest's own -m grammar

Expression = _markexpr.Expression
# pytest 9 raises SyntaxError for a malformed -m; pytest 8 raised its own ParseError.
_PARSE_ERRORS: tuple[type[Exception], ...] = (SyntaxError, *([_markexpr.ParseError] if hasattr(_markexpr, "ParseError") else []))

GPU_MARKER = "gpu"
_NAME = re.compile(r"[A-Za-z_][\w.\-]*")
_KEYWORDS = {"and", "or", "not"}
_MAX_NAMES = 10  # 2**10 marker combinations at most; longer expressions are judged by name alone


def markexpr_depends_on_gpu(markexpr: str) -> bool:
    """Whether adding the ``gpu`` marker to some test can make ``markexpr`` select it (``-m`` semantics).

    Evaluates the expression with pytest's own ``-m`` parser for every combination of the other names it
    mentions. An expression pytest cannot parse is refused by pytest itself; here it counts as asking
    for GPU tests when it names ``gpu`` at all.
    """
    expr = markexpr.strip()
    if not expr or not re.search(rf"\b{GPU_MARKER}\b", expr):
        return False
    try:
        compiled = Expression.compile(expr)
    except _PARSE_ERRORS:
        return True
    names = sorted(set(_NAME.findall(expr)) - _KEYWORDS - {GPU_MARKER})
    if len(names) > _MAX_NAMES:
        return True
    for values in itertools.product((False, True), repeat=len(names)):
        env = dict(zip(names, values))

        def with_gpu(present: bool, env: dict[str, bool] = env) -> Callable[..., bool]:
            return lambda name, /, **kwargs: present if name == GPU_MARKER else env.get(name, False)

        if compiled.evaluate(with_gpu(True)) and not compiled.evaluate(with_gpu(False)):
            return True
    return False


def gpu_request(markexpr: str, profiles: list[str] | None, is_cuda_profile: Callable[[str], bool]) -> str | None:
    """How this session asked for GPU tests (``"-m gpu"``, ``"--profile optimized"``), or None if it did not."""
    if markexpr_depends_on_gpu(markexpr):
        return f"-m {markexpr!r}" if " " in markexpr.strip() else f"-m {markexpr.strip()}"
    for name in profiles or ():
        if is_cuda_profile(name):
            return f"--profile {name}"
    return None


def no_gpu_message(asked: str, count: int, reason: str) -> str:
    return (f"{asked} selected {count} GPU test(s), but this machine cannot run them: {reason}. "
            "Skipping them would turn a broken GPU runner into a green job that measured nothing.\n"
            "  fix: run on a GPU runner whose driver works (`nvidia-smi` lists the GPU) set up with "
            "`bash scripts/setup.sh gpu`; or pass --perfgate-allow-no-gpu to skip them on purpose")


def allowed_skip_reason(reason: str) -> str:
    return f"no usable GPU here ({reason}); skipped because --perfgate-allow-no-gpu was given"
