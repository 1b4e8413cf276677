#!/usr/bin/env bash
# Runs the GPU suite on an offline GPU host where vLLM was installed by ../shared/gpu/install.sh
# (/tmp/site). Everything it produces goes under $OUT (default ./gpu-out) as a few files:
# a tarball of the results directory and baselines, plus the pytest log and the summary.
#   bash scripts/gpu-suite.sh PROFILE [pytest args...]
set -uo pipefail
cd "$(dirname "$0")/.."
profile=${1:?usage: gpu-suite.sh PROFILE [pytest args]}; shift
out=${OUT:-$PWD/gpu-out}; mkdir -p "$out"
[ -f /tmp/site/env.sh ] && . /tmp/site/env.sh
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
results=/tmp/perfgate-results/$profile
mkdir -p "$results"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit,clocks.max.sm --format=csv
  $py -m perfgate doctor "$profile"
} > "$out/doctor-$profile.txt" 2>&1
start=$(date +%s)
# In the background with SIGINT/SIGTERM passed on as SIGTERM: a foreground pytest never sees a signal sent
# to this script, and this script may itself be a non-interactive background job (SIGINT ignored).
$py -m pytest perf_tests -m gpu --profile "$profile" \
  --perfgate-results-dir "$results" --junitxml "$results/junit.xml" -p no:cacheprovider "$@" \
  > "$out/pytest-$profile.log" 2>&1 &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' INT TERM
while :; do wait $pid; rc=$?; kill -0 $pid 2>/dev/null || break; done
trap - INT TERM
echo "pytest exit $rc, wall $(( $(date +%s) - start )) s" >> "$out/pytest-$profile.log"
grep -h "KV cache\|GPU KV cache size\|Maximum concurrency\|Loading weights took\|Model loading took\|init engine" \
  "$results"/servers/*.log > "$out/vllm-facts-$profile.txt" 2>/dev/null
cp "$results/summary.md" "$out/summary-$profile.md" 2>/dev/null
tar -czf "$out/results-$profile.tgz" -C /tmp/perfgate-results "$profile"
tar -czf "$out/baselines-$profile.tgz" baselines
tail -40 "$out/pytest-$profile.log"
exit $rc
