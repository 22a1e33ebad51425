#!/usr/bin/env bash
# README command one: install what is missing, build, and run the main job.
# The training cluster (fsps-server + fsps-worker) is not built yet; until it
# is, this runs what exists for real: the optimizer benchmark on this
# machine's memory, and says so.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)"

echo "demo: the cluster (fsps-server, fsps-worker) is not built yet;"
echo "demo: running the optimizer benchmark on a 16 Mi-element slice instead"
"$BUILD_DIR/bench/optim" --elements 16777216 --reps 3
