#!/usr/bin/env bash
# Runs a command so that a cancel stops it, from any shell, and forwards its exit status.
#   exec bash scripts/stoppable.sh [--log FILE] -- CMD [ARGS...]
#
# Why: GitHub Actions cancels a step by signalling the step's shell only (SIGINT, SIGTERM 7.5 s later, then
# SIGKILL); a foreground command never sees those signals, and a non-interactive shell's background job
# inherits SIGINT ignored. Here CMD runs in the background, this script waits for it, and SIGINT or SIGTERM
# to this script is passed on as SIGTERM, which perfgate (pytest or `perfgate serve`) takes as "stop:
# tear down the servers, write the results". If this script is SIGKILLed, CMD may be killed too; perfgate's
# watchdog then stops the vLLM server within seconds. `exec` it from a workflow step so that the step's
# shell *is* this script and the runner's signals reach it. --log FILE also copies the output there (tee).
set -u
log=""
if [ "${1:-}" = "--log" ]; then log=$2; shift 2; fi
if [ "${1:-}" = "--" ]; then shift; fi
if [ $# -eq 0 ]; then echo "usage: stoppable.sh [--log FILE] -- CMD [ARGS...]" >&2; exit 2; fi
tee_pid=""
if [ -n "$log" ]; then
  fifo=$(mktemp -u "${TMPDIR:-/tmp}/stoppable.XXXXXX"); mkfifo "$fifo"
  tee "$log" < "$fifo" & tee_pid=$!
  "$@" > "$fifo" 2>&1 &
  pid=$!
else
  "$@" &
  pid=$!
fi
trap 'kill -TERM "$pid" 2>/dev/null' INT TERM
while :; do
  wait "$pid"; rc=$?
  kill -0 "$pid" 2>/dev/null || break  # wait was cut short by a trapped signal: keep waiting
done
if [ -n "$tee_pid" ]; then wait "$tee_pid"; rm -f "$fifo"; fi  # the last lines reach the log first
exit "$rc"
