#!/usr/bin/env bash
# One `git bisect run` step: optionally build and measure the checked-out commit, then map a perfgate
# verdict's exit code (perfgate/verdict/exit_codes.py) onto what `git bisect run` understands.
#
#   scripts/bisect-step.sh [--build CMD] [--measure CMD] -- VERDICT_COMMAND [ARG...]
#
#   --build CMD     bash command run first (e.g. install vLLM from this commit into a candidate env);
#                   when it fails the commit cannot be tested: exit 125 (git bisect skips it)
#   --measure CMD   bash command run next (e.g. the pytest suite into a results directory); its exit code
#                   is printed and ignored: pytest fails a regressed test too, the verdict command decides
#   VERDICT_COMMAND e.g. `perfgate compare BASELINE RESULTS_DIR` or `perfgate ab run ...`:
#                   0 pass -> 0 (good); 1 regressed -> 1 (bad); 3 inconclusive -> 125 (skip);
#                   anything else (2 bad input, a crash, a missing command) -> 128 (aborts the bisect)
#
# In CMD and in VERDICT_COMMAND's arguments, {commit} becomes the checked-out commit's short hash (one
# results directory per step); $PERFGATE_BISECT_COMMIT holds it too. Copy this script out of the tree
# before bisecting a range of this repository: older commits may not have it.
set -uo pipefail

ABORT=128  # git bisect run aborts on an exit code above 127

say() { echo "bisect-step [${commit:-?}]: $*" >&2; }
usage() { sed -n '2,18s/^# \{0,1\}//p' "$0" >&2; }

build="" measure=""
while [ $# -gt 0 ]; do
  case "$1" in
    --build|--measure)
      if [ $# -lt 2 ]; then echo "bisect-step: $1 needs a command" >&2; usage; exit $ABORT; fi
      if [ "$1" = --build ]; then build=$2; else measure=$2; fi
      shift 2 ;;
    --) shift; break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bisect-step: unknown argument '$1' (the verdict command goes after --)" >&2; usage; exit $ABORT ;;
  esac
done
if [ $# -eq 0 ]; then
  echo "bisect-step: no verdict command after --" >&2; usage; exit $ABORT
fi

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
export PERFGATE_BISECT_COMMIT=$commit
fill() { printf '%s' "${1//\{commit\}/$commit}"; }

if [ -n "$build" ]; then
  say "build: $(fill "$build")"
  if ! bash -c "$(fill "$build")"; then
    say "the build failed: this commit cannot be tested -> 125 (skip)"
    exit 125
  fi
fi
if [ -n "$measure" ]; then
  say "measure: $(fill "$measure")"
  bash -c "$(fill "$measure")"
  say "measure exited $? (ignored: the verdict command decides)"
fi

verdict=()
for arg in "$@"; do verdict+=("$(fill "$arg")"); done
say "verdict: ${verdict[*]}"
"${verdict[@]}"
rc=$?
case $rc in
  0) say "exit 0 (pass) -> 0 (good)"; exit 0 ;;
  1) say "exit 1 (regressed) -> 1 (bad)"; exit 1 ;;
  3) say "exit 3 (inconclusive) -> 125 (skip)"; exit 125 ;;
  *) say "exit $rc (2 = bad input; else the command failed) -> $ABORT (abort the bisect)"; exit $ABORT ;;
esac
