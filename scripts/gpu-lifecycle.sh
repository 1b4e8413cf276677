#!/usr/bin/env bash
# Issue 13 on a GPU: no server outlives its run, and a start names who holds the GPU.
#   (a) `perfgate serve PROFILE` in the background, healthy, then `kill -9` perfgate: is any vLLM process or
#       GPU memory left 30 s later? (the watchdog must have stopped the server)
#   (b) a leaked server made on purpose (PERFGATE_TEST_NO_WATCHDOG=1, a test-only switch, then `kill -9` its
#       owner); a second start must fail in under 10 s, before vLLM is launched, naming the PID and memory;
#   (c) `perfgate serve --reap-stale` stops it: the GPU is free again.
# Prints timings; writes $OUT/lifecycle.json plus the logs. About 3-5 minutes of GPU time.
#   . /tmp/site/env.sh; bash scripts/gpu-lifecycle.sh [PROFILE]      (default: optimized)
set -uo pipefail
cd "$(dirname "$0")/.."
profile=${1:-optimized}
out=${OUT:-$PWD/gpu-out}; mkdir -p "$out"
[ -f /tmp/site/env.sh ] && . /tmp/site/env.sh
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
py=${PYTHON:-python3}
now() { date +%s.%N; }
since() { $py -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 2))" "$1" "$(now)"; }
gpu_apps() { nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null | grep -c . ; }
vllm_procs() { pgrep -fc 'vllm.entrypoints|VLLM::' ; }
gpu_used_mib() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -1 | tr -d ' '; }
# Whatever happens to this script, leave the GPU as it was found: stop our servers, then leaked ones.
pids=()
cleanup() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null; done; sleep 2
            $py -m perfgate serve --reap-stale > /dev/null 2>&1; }
trap cleanup EXIT

start_serve() {  # $1 = tag; extra env may be set by the caller. Waits for healthy; sets serve_pid, healthy_s.
  local tag=$1 t0; rm -f "/tmp/lifecycle-$tag.ready"; t0=$(now)
  $py -m perfgate serve "$profile" --ready-file "/tmp/lifecycle-$tag.ready" --log "$out/vllm-$tag.log" \
    > /dev/null 2> "$out/serve-$tag.txt" &
  serve_pid=$!; pids+=("$serve_pid")
  for _ in $(seq 900); do [ -s "/tmp/lifecycle-$tag.ready" ] && break; kill -0 "$serve_pid" 2>/dev/null || break; sleep 1; done
  healthy_s=$(since "$t0")
  [ -s "/tmp/lifecycle-$tag.ready" ] || { echo "[$tag] server did not start"; tail -20 "$out/serve-$tag.txt"; return 1; }
  echo "[$tag] healthy after ${healthy_s} s; GPU apps $(gpu_apps), memory used $(gpu_used_mib) MiB"
}

wait_gpu_free() {  # up to $1 s; sets free_after_s (empty if still held)
  local t0; t0=$(now); free_after_s=""
  for _ in $(seq "$1"); do
    if [ "$(gpu_apps)" = "0" ]; then free_after_s=$(since "$t0"); return 0; fi
    sleep 1
  done
  return 1
}

idle_mib=$(gpu_used_mib); echo "GPU memory used before: ${idle_mib} MiB, compute apps: $(gpu_apps)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.txt" 2>&1

# (a) kill -9 perfgate: the watchdog stops the server.
a_ok=false; a_free=""; a_left_apps=""; a_left_mib=""
if start_serve a; then
  a_healthy=$healthy_s; a_apps_before=$(gpu_apps)
  kill -9 "$serve_pid"; echo "[a] perfgate (pid $serve_pid) SIGKILLed"
  wait_gpu_free 30 && a_ok=true; a_free=$free_after_s
  a_left_apps=$(gpu_apps); a_left_mib=$(gpu_used_mib); a_left_vllm=$(vllm_procs)
  nvidia-smi > "$out/nvidia-smi-a.txt" 2>&1
  echo "[a] GPU free after kill -9: $a_ok (after ${a_free:-n/a} s); apps left $a_left_apps, memory used" \
       "${a_left_mib} MiB, vLLM processes left $a_left_vllm"
else a_healthy=""; a_apps_before=""; a_left_vllm=""; fi
wait_gpu_free 60  # leave (b) a clean start even if (a) failed

# (b) a leaked server (watchdog off on purpose), then a second start.
b_leaked_apps=""; b_rc=""; b_refusal_s=""; b_names_pid=false; b_names_mem=false; b_says_leaked=false
b_vllm_launched=true
if PERFGATE_TEST_NO_WATCHDOG=1 start_serve b-leak; then
  kill -9 "$serve_pid"; sleep 3
  b_leaked_apps=$(nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader 2>/dev/null | tr '\n' ';')
  echo "[b] leaked server holds: $b_leaked_apps"
  rm -f "$out/vllm-b-second.log"; t0=$(now)
  timeout 120 $py -m perfgate serve "$profile" --log "$out/vllm-b-second.log" > /dev/null 2> "$out/serve-b-second.txt"
  b_rc=$?; b_refusal_s=$(since "$t0")
  [ -e "$out/vllm-b-second.log" ] || b_vllm_launched=false
  first_pid=$(echo "$b_leaked_apps" | cut -d, -f1 | tr -d ' ;')
  [ -n "$first_pid" ] && grep -q "pid $first_pid" "$out/serve-b-second.txt" && b_names_pid=true
  grep -q "GiB, running" "$out/serve-b-second.txt" && b_names_mem=true
  grep -q "LEAKED perfgate server" "$out/serve-b-second.txt" && b_says_leaked=true
  echo "[b] second start: exit $b_rc after ${b_refusal_s} s; vLLM launched: $b_vllm_launched;" \
       "names pid: $b_names_pid, memory: $b_names_mem, leaked: $b_says_leaked"
  sed -n 1,12p "$out/serve-b-second.txt"
fi

# (c) reap-stale clears it.
t0=$(now); $py -m perfgate serve --reap-stale > "$out/reap-stale.txt" 2>&1; c_rc=$?; c_reap_s=$(since "$t0")
c_ok=false; wait_gpu_free 30 && c_ok=true; c_free=$free_after_s
c_left_vllm=$(vllm_procs)
echo "[c] reap-stale exit $c_rc in ${c_reap_s} s; GPU free: $c_ok (${c_free:-n/a} s later); memory used" \
     "$(gpu_used_mib) MiB; vLLM processes left $c_left_vllm"
cat "$out/reap-stale.txt"

$py - "$out/lifecycle.json" <<PY
import json, sys
b = lambda s: s == "true"
f = lambda s: float(s) if s else None
summary = {
  "profile": "$profile", "gpu_memory_used_mib_before": f("$idle_mib"),
  "a_kill9_owner": {"healthy_after_s": f("$a_healthy"), "gpu_apps_before_kill": f("$a_apps_before"),
                    "gpu_free_within_30s": b("$a_ok"), "free_after_s": f("$a_free"),
                    "apps_left": f("$a_left_apps"), "memory_used_mib_after": f("$a_left_mib"),
                    "vllm_processes_left": f("$a_left_vllm")},
  "b_leaked_then_second_start": {"leaked_apps": "$b_leaked_apps", "exit_code": f("$b_rc"),
                    "refusal_after_s": f("$b_refusal_s"), "under_10s": f("$b_refusal_s") is not None and f("$b_refusal_s") < 10,
                    "vllm_launched": b("$b_vllm_launched"), "names_pid": b("$b_names_pid"),
                    "names_memory": b("$b_names_mem"), "says_leaked": b("$b_says_leaked")},
  "c_reap_stale": {"exit_code": f("$c_rc"), "took_s": f("$c_reap_s"), "gpu_free": b("$c_ok"),
                   "free_after_s": f("$c_free"), "vllm_processes_left": f("$c_left_vllm")},
}
json.dump(summary, open(sys.argv[1], "w"), indent=2)
print(json.dumps(summary, indent=2))
PY
