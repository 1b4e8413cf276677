#!/usr/bin/env bash
# The gate's sensitivity run (benchmarks/sensitivity.py) on an offline GPU host where vLLM was installed
# from the bundle (../shared/gpu/README.md). It takes longer than one remote command may run, so `start`
# launches it in its own session (setsid: it outlives the command that started it) and returns; `wait`
# follows its progress for up to N seconds; `collect` packs the results and the recorded baselines.
#   bash scripts/gpu-sensitivity.sh start PROFILE [--knob FLAG=VALUE ...]
#   bash scripts/gpu-sensitivity.sh wait SECONDS
#   bash scripts/gpu-sensitivity.sh collect DIR
#   bash scripts/gpu-sensitivity.sh stop        (SIGTERM to the job's session; perfgate's watchdog then
#                                                 stops any vLLM server it started, within seconds)
set -uo pipefail
cd "$(dirname "$0")/.."
work=/tmp/sensitivity
copy=/tmp/sensitivity-repo  # the job runs in its own copy: a later command may re-sync this checkout
[ -f /tmp/site/env.sh ] && . /tmp/site/env.sh
site=${PYTHONPATH:-}
case "${1:-}" in
  start)
    profile=${2:?usage: gpu-sensitivity.sh start PROFILE [--knob FLAG=VALUE ...]}; shift 2
    mkdir -p "$work"; rm -rf "$copy"; cp -r . "$copy"; cd "$copy" || exit 1
    export PYTHONPATH=$copy${site:+:$site}
    nvidia-smi --query-gpu=name,memory.total,driver_version,power.limit --format=csv > "$work/gpu.txt" 2>&1
    setsid nohup bash -c "python3 benchmarks/sensitivity.py run --profile $profile --out $work/out $*; \
      echo \"exit \$?\" > $work/done" > "$work/progress.log" 2>&1 < /dev/null &
    echo $! > "$work/pid"  # setsid: this pid leads the job's session and process group
    echo "started (pid $!); progress in $work/progress.log"
    ;;
  wait)
    deadline=$(( $(date +%s) + ${2:?seconds} ))
    while [ ! -f "$work/done" ] && [ "$(date +%s)" -lt "$deadline" ]; do sleep 5; done
    tail -n 25 "$work/progress.log"
    [ -f "$work/done" ] && cat "$work/done" || echo "still running"
    ;;
  collect)
    dest=${2:?usage: gpu-sensitivity.sh collect DIR}; mkdir -p "$dest"
    cp "$work/progress.log" "$work/gpu.txt" "$dest/" 2>/dev/null
    cp "$work/out/sensitivity.md" "$work/out/noise.json" "$dest/" 2>/dev/null
    tar -czf "$dest/results.tgz" --exclude='*-profiles' -C "$work" out
    tar -czf "$dest/baselines.tgz" -C "$copy" baselines
    ls -la "$dest"
    ;;
  stop)
    pid=$(cat "$work/pid" 2>/dev/null) || { echo "no job recorded in $work/pid"; exit 1; }
    kill -TERM -- "-$pid" 2>/dev/null || echo "job $pid is not running"
    for _ in $(seq 60); do kill -0 -- "-$pid" 2>/dev/null || break; sleep 1; done
    kill -KILL -- "-$pid" 2>/dev/null  # what ignored SIGTERM for 60 s; the watchdog stops its server
    ;;
  *) echo "usage: gpu-sensitivity.sh start PROFILE [--knob ...] | wait SECONDS | collect DIR | stop" >&2; exit 2 ;;
esac
