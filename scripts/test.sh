#!/usr/bin/env bash
# README command two: install what is missing, build, run the whole test suite.
# Exits non-zero on any failure. BUILD_DIR (default build/) holds the build.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh

BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake_args=(-S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo)
if [ -n "${CI:-}" ]; then
  cmake_args+=(-DFSPS_WERROR=ON)
fi

echo "test: configuring in $BUILD_DIR"
cmake "${cmake_args[@]}" >/dev/null
echo "test: building with $JOBS jobs"
cmake --build "$BUILD_DIR" -j "$JOBS"
echo "test: running the test suite"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS"
