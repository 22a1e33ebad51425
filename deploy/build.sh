#!/usr/bin/env bash
# Builds what the container image ships, into PREFIX/usr/local/bin:
# fsps-server, fsps-worker, fsps-health (the `helm test` health client) and
# fsps-reslice (re-slices checkpoints for another number of servers) and
# fsps-ctl (the operator's tool: status, checkpoint, rollback), and
# fsps-serve and fsps-export (serving and safetensors export), stripped. deploy/Dockerfile's build stage runs exactly this, and so does
# tests/deploy/check_dockerfile.py on a copy of the Docker build context, so
# the image's build is exercised without a Docker engine.
#
#   bash deploy/build.sh PREFIX       (from any folder; builds the repo it is in)
#   BUILD_DIR   CMake build folder (a new temporary folder)
#   JOBS        parallel build jobs (nproc)
set -euo pipefail
prefix=${1:?usage: build.sh PREFIX}
cd "$(dirname "$0")/.."
build=${BUILD_DIR:-$(mktemp -d)}
jobs=${JOBS:-$(nproc)}

cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release
cmake --build "$build" -j "$jobs" --target fsps-server fsps-worker fsps-health \
  fsps-reslice fsps-ctl fsps-serve fsps-export
for bin in server/fsps-server worker/fsps-worker tests/fsps-health \
           server/fsps-reslice ctl/fsps-ctl serve/fsps-serve \
           serve/fsps-export; do
  install -D -s -m 0755 "$build/$bin" "$prefix/usr/local/bin/${bin##*/}"
done
echo "build.sh: installed fsps-server fsps-worker fsps-health fsps-reslice fsps-ctl fsps-serve fsps-export into $prefix/usr/local/bin"
