#!/usr/bin/env bash
# The upgrade A/B (`perfgate ab run`) on an offline GPU host where vLLM was installed by
# ../shared/gpu/install.sh (/tmp/site), one server at a time. Results go under $OUT (default ./gpu-out).
#   B_PYTHON=/tmp/site2/bin/python bash scripts/gpu-upgrade-ab.sh [PROFILE] [SCENARIO] [REPEATS]
# A_PYTHON / B_PYTHON: the two environments' interpreters (default: python3 for both, i.e. an A/A of the
# installed vLLM through the same mechanism: what to run when no second vLLM build can be installed there).
set -uo pipefail
cd "$(dirname "$0")/.."
profile=${1:-optimized}; scenario=${2:-fixed-512-256}; repeats=${3:-3}
out=${OUT:-$PWD/gpu-out}; mkdir -p "$out"
[ -f /tmp/site/env.sh ] && . /tmp/site/env.sh
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
a=${A_PYTHON:-$(command -v python3)}; b=${B_PYTHON:-$a}
results=/tmp/perfgate-results/upgrade-ab
rm -rf "$results"
start=$(date +%s)
# In the background with SIGINT/SIGTERM passed on as SIGTERM (see scripts/gpu-suite.sh for why).
"$a" -m perfgate ab run --a-python "$a" --b-python "$b" --profile "$profile" --scenario "$scenario" \
  --repeats "$repeats" --one-at-a-time --results "$results" > "$out/upgrade-ab.txt" 2> "$out/upgrade-ab.log" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null' INT TERM
while :; do wait $pid; rc=$?; kill -0 $pid 2>/dev/null || break; done
trap - INT TERM
echo "perfgate ab run exit $rc, wall $(( $(date +%s) - start )) s" >> "$out/upgrade-ab.log"
tar -czf "$out/upgrade-ab-results.tgz" -C /tmp/perfgate-results upgrade-ab 2>/dev/null
cat "$out/upgrade-ab.txt"; tail -5 "$out/upgrade-ab.log"
exit $rc
