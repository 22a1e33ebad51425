#!/usr/bin/env bash
# README command two: install what is missing, build, run the whole test
# suite, then the unit and integration tests again under AddressSanitizer
# and ThreadSanitizer, then a short fuzz run of every request decoder and
# the checkpoint reader. Exits non-zero on any failure.
#
#   BUILD_DIR          main build folder (build)
#   FSPS_SANITIZERS    sanitizer passes to run ("address thread"; "" = none)
#   FSPS_FUZZ_SECONDS  seconds each fuzz target runs (12; 0 = no fuzzing)
#   JOBS               parallel build jobs (nproc)
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
SANITIZERS=${FSPS_SANITIZERS-address thread}
werror=()
[ -n "${CI:-}" ] && werror=(-DFSPS_WERROR=ON)

build() { # build DIR [cmake args...]
  local dir=$1
  shift
  echo "test: configuring and building $dir"
  cmake -S . -B "$dir" "${werror[@]}" "$@" >/dev/null
  cmake --build "$dir" -j "$JOBS" >/dev/null
}

build "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo
echo "test: running the test suite"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS"

export TSAN_OPTIONS="suppressions=$PWD/tests/tsan.supp second_deadlock_stack=1"
export ASAN_OPTIONS="detect_leaks=1"
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp"
for san in $SANITIZERS; do
  dir="$BUILD_DIR-$san"
  build "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFSPS_SANITIZE="$san"
  echo "test: unit and integration tests under the $san sanitizer"
  # Every server and client process is instrumented; a sanitizer report
  # makes that process exit non-zero, which fails its test.
  # OpenBLAS's own threads synchronise inside the (uninstrumented) library,
  # which ThreadSanitizer cannot see; one BLAS thread keeps its reports ours.
  OPENBLAS_NUM_THREADS=1 \
    ctest --test-dir "$dir" --output-on-failure -j "$JOBS" -LE "slow|deploy"
done

# libFuzzer needs clang: the fuzz build has its own folder, compiler and
# sanitizers (address and undefined, on every library). Each target starts
# from its committed seeds; a crash, a leak, a sanitizer report or a failed
# check fails the run and names the input (kept in a temporary folder).
FUZZ_SECONDS=${FSPS_FUZZ_SECONDS:-12}
if [ "$FUZZ_SECONDS" != 0 ]; then
  dir="$BUILD_DIR-fuzz"
  echo "test: configuring and building the fuzz targets in $dir (clang)"
  CC=clang cmake -S . -B "$dir" "${werror[@]}" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFSPS_FUZZ=ON >/dev/null
  cmake --build "$dir" -j "$JOBS" --target fuzz >/dev/null
  echo "test: fuzzing each decoder for $FUZZ_SECONDS s (FSPS_FUZZ_SECONDS=0 skips)"
  bash tests/fuzz/run.sh "$dir" "$FUZZ_SECONDS"
fi
echo "test: all passed"
