#!/usr/bin/env bash
# tests/fuzz/run.sh: runs each libFuzzer target of a -DFSPS_FUZZ=ON build
# over its seed corpus (tests/fuzz/corpus/<target>) for a bounded time, one
# target after another. Fails on the first crash, leak, sanitizer report or
# broken check, printing the report and the input that caused it.
#
#   tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...] [-- LIBFUZZER_FLAGS...]
#
#   SECONDS               -max_total_time of each target
#   TARGET                fuzz_push, ... (default: all eleven)
#   LIBFUZZER_FLAGS       passed on, e.g. -jobs=2 -workers=2
#   FSPS_FUZZ_CORPUS      keep the inputs found in DIR/<target> (default: a
#                         temporary folder; the seeds are never written to)
#   FSPS_FUZZ_ARTIFACTS   where crashing inputs go (default: a temporary
#                         folder, kept and named when something is found)
set -euo pipefail
cd "$(dirname "$0")/../.."

ALL=(fuzz_init fuzz_pull fuzz_push fuzz_values fuzz_status fuzz_checkpoint
  fuzz_rollback fuzz_health fuzz_msg fuzz_ckpt_read fuzz_infer)
[ $# -ge 2 ] || { sed -n '2,17p' "$0" >&2; exit 2; }
build=$(cd "$1" && pwd)
seconds=$2
shift 2
targets=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do targets+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#targets[@]} -gt 0 ] || targets=("${ALL[@]}")

seeds=$PWD/tests/fuzz/corpus
work=$(mktemp -d "${TMPDIR:-/tmp}/fsps-fuzz-run.XXXXXX")
corpus=${FSPS_FUZZ_CORPUS:-$work/corpus}
artifacts=${FSPS_FUZZ_ARTIFACTS:-$work/artifacts}
mkdir -p "$corpus" "$artifacts"
corpus=$(cd "$corpus" && pwd)
artifacts=$(cd "$artifacts" && pwd)

# Leaks fail a run (LeakSanitizer checks after every input that allocated
# more than it freed); UBSan stops at its first report. One BLAS thread:
# the optimizers run on OpenBLAS, whose threads would only add noise.
export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export OPENBLAS_NUM_THREADS=1

# stat NAME DIR prints libFuzzer's final figure NAME, summed over the logs
# in DIR (one per job with -jobs; the peak RSS is the largest).
stat() {
  cat "$2"/*.log | sed -n "s/^stat::$1: *//p" |
    awk -v max="$([ "$1" = peak_rss_mb ] && echo 1)" \
      '{ s = max ? (s > $1 ? s : $1) : s + $1 } END { print s + 0 }'
}

failed=""
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/$t
  [ -x "$bin" ] || { echo "fuzz: $bin is not built (cmake --build $1 --target fuzz)" >&2; exit 2; }
  mkdir -p "$corpus/$t" "$work/$t"
  # Run in the target's log folder: with -jobs, libFuzzer writes each job's
  # output to fuzz-N.log in the current folder.
  if (cd "$work/$t" && "$bin" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="$artifacts/$t-" "$@" "$corpus/$t" "$seeds/$t") \
      >"$work/$t/run.log" 2>&1; then
    printf 'fuzz: %-16s %9s runs %7s exec/s  %4s new inputs  %5s MB peak\n' \
      "$t" "$(stat number_of_executed_units "$work/$t")" \
      "$(stat average_exec_per_sec "$work/$t")" \
      "$(stat new_units_added "$work/$t")" "$(stat peak_rss_mb "$work/$t")"
  else
    echo "fuzz: $t FAILED; its report:" >&2
    for log in "$work/$t"/*.log; do tail -n 80 "$log" >&2; done
    failed="$failed $t"
    break
  fi
done

if [ -n "$failed" ]; then
  echo "fuzz: failing input(s) in $artifacts (reproduce: $build/tests/fuzz/<target> FILE)" >&2
  exit 1
fi
rm -rf "$work" # the default corpus and artifacts folders live in it
exit 0
