#!/usr/bin/env bash
# demo_wire.sh: the README's demo with the bf16 wire (--wire-dtype bf16)
# ends within 0.5 points of the same demo in fp32. Both run on
# deterministic servers (scripts/demo.sh --deterministic), so each accuracy
# is reproducible and their difference is the wire dtype's alone, not
# run-to-run noise. Prints both accuracies and their difference as JSON.
#   BUILD_DIR, DEMO_RUNS_DIR  as for scripts/demo.sh
#   MAX_DIFF                  the largest difference allowed (0.005)
set -euo pipefail
cd "$(dirname "$0")/../.."
MAX_DIFF=${MAX_DIFF:-0.005}

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT

# accuracy runs the demo (its output shown on stderr, appended: a tee to
# /dev/stderr would truncate a log file stderr goes to) and prints its
# final test accuracy.
accuracy() {
  bash scripts/demo.sh --deterministic "$@" >"$OUT"
  cat "$OUT" >&2
  sed -n 's/^demo: final test accuracy //p' "$OUT"
}

fp32=$(accuracy)
bf16=$(accuracy -- --wire-dtype bf16)
[ -n "$fp32" ] && [ -n "$bf16" ] || { echo "demo_wire: no accuracy" >&2; exit 1; }
diff=$(awk -v a="$fp32" -v b="$bf16" 'BEGIN { printf "%.4f", b - a }')
echo "{\"bench\":\"demo_wire\",\"fp32_test_accuracy\":$fp32,\"bf16_test_accuracy\":$bf16,\"difference\":$diff}"
if ! awk -v d="$diff" -v m="$MAX_DIFF" 'BEGIN { exit !(d <= m && -d <= m) }'; then
  echo "demo_wire: bf16 ends $diff from fp32, more than $MAX_DIFF" >&2
  exit 1
fi
