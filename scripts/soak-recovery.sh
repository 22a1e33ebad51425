#!/usr/bin/env bash
# Soak of the recovery tests under CPU load: runs each test of
# tests/integration/test_recovery.py with N disturbed runs (each compared
# bit for bit with one undisturbed run) while two busy loops take the CPU,
# so a race that a quiet machine hides shows. A failure keeps its logs,
# dumps and checkpoints under KEEP.
#
#   scripts/soak-recovery.sh [BUILD_DIR] [N] [TEST...]
#     BUILD_DIR  a built tree (build)
#     N          disturbed runs per test (50)
#     TEST       test names (all three recovery tests)
#   KEEP         where failures are kept (/tmp/fsps-soak)
#   LOAD         busy loops beside the runs (2)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
n=${2:-50}
shift $(($# < 2 ? $# : 2))
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(test_server_killed_with_layers_in_pieces
  test_server_killed_and_restarted test_worker_killed_and_restarted)
keep=${KEEP:-/tmp/fsps-soak}
mkdir -p "$keep"
busy=()
stop_load() { [ ${#busy[@]} -eq 0 ] || kill "${busy[@]}" 2>/dev/null || true; }
trap stop_load EXIT
for _ in $(seq "${LOAD:-2}"); do
  (while :; do :; done) &
  busy+=($!)
done
status=0
for t in "${tests[@]}"; do
  start=$(date +%s)
  if FSPS_KEEP_FAILED=$keep /usr/bin/python3 \
    tests/integration/test_recovery.py --bin "$build" --repeat "$n" \
    "RecoveryTest.$t" >"$keep/$t.log" 2>&1; then
    echo "soak: $t: $n of $n disturbed runs bit-identical ($(($(date +%s) - start)) s)"
  else
    status=1
    echo "soak: $t FAILED ($(($(date +%s) - start)) s): see $keep/$t.log"
  fi
done
exit $status
