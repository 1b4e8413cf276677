#!/usr/bin/env bash
# perfgate bench between two `vllm bench serve` runs of the same closed-loop workload, on one server
# (issue: the load generator's accuracy). Writes $OUT/accuracy-*.json and prints the comparison.
#   bash scripts/gpu-accuracy.sh PROFILE
set -uo pipefail
cd "$(dirname "$0")/.."
profile=${1:-defaults}
out=${OUT:-$PWD/gpu-out}; mkdir -p "$out"
[ -f /tmp/site/env.sh ] && . /tmp/site/env.sh
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
ready=/tmp/perfgate-serve-ready; rm -f "$ready"
$py -m perfgate serve "$profile" --ready-file "$ready" --log /tmp/perfgate-serve.log > /dev/null 2> "$out/serve-$profile.txt" &
serve=$!
# SIGTERM, not SIGINT: this background job inherits SIGINT ignored (perfgate restores it, but only once it
# runs). If this script is killed, perfgate's watchdog still stops the server when perfgate goes.
trap 'kill -TERM $serve 2>/dev/null' EXIT
for _ in $(seq 600); do [ -s "$ready" ] && break; kill -0 $serve 2>/dev/null || break; sleep 1; done
url=$(cat "$ready" 2>/dev/null) || { echo "server did not start"; tail -20 "$out/serve-$profile.txt"; exit 1; }
model=$($py -c "from perfgate.serving.profile import load_profile; print(load_profile('$profile').served_model_name)")
tok=$($py -c "from perfgate.serving.profile import load_profile; from perfgate.models import resolve_model; print(resolve_model(load_profile('$profile').model))")
work=(--random-input-len 512 --random-output-len 256 --num-prompts 320 --max-concurrency 32 --ignore-eos --seed 0)
vb() { $py benchmarks/vllm_bench_serve.py --base-url "$url" --model "$model" --tokenizer "$tok" --dataset-name random \
  "${work[@]}" --percentile-metrics ttft,tpot,itl,e2el --disable-tqdm --save-result --result-filename "$1" > /dev/null 2>&1; }
vb /tmp/acc-warm.json
vb "$out/accuracy-vllm-a.json"
$py -m perfgate bench --base-url "$url" --model "$model" --tokenizer "$tok" "${work[@]}" --result-file "$out/accuracy-perfgate.json" > /dev/null 2>&1
vb "$out/accuracy-vllm-b.json"
kill -TERM $serve
for _ in $(seq 60); do kill -0 $serve 2>/dev/null || break; sleep 1; done; kill -9 $serve 2>/dev/null
$py - "$out" <<'PY'
import json, sys
out = sys.argv[1]
runs = {n: json.load(open(f"{out}/accuracy-{n}.json")) for n in ("vllm-a", "perfgate", "vllm-b")}
print(f"{'metric':<20}{'vllm A':>10}{'perfgate':>10}{'vllm B':>10}{'vs mean of A,B':>16}")
for k in ("request_throughput", "output_throughput", "median_ttft_ms", "median_tpot_ms", "p99_e2el_ms"):
    a, p, b = (runs[n].get(k, float("nan")) for n in ("vllm-a", "perfgate", "vllm-b"))
    print(f"{k:<20}{a:>10.2f}{p:>10.2f}{b:>10.2f}{(p / ((a + b) / 2) - 1) * 100:>+15.1f}%")
PY
