#!/usr/bin/env bash
# Installs the build into a temporary prefix, then compiles the README's
# libfsps example against the installed fsps.pc twice — shared (it must load
# libfsps.so.MAJOR) and static (fsps-static.pc) — and runs both against a real fsps-server.
# Usage: [CC=cc] [CFLAGS=...] installed_lib.sh BUILD_DIR EXAMPLE_SOURCE FSPS_SERVER
# (CFLAGS: what a sanitized build's libraries need at link time)
set -euo pipefail
build=$1 src=$2 server=$3
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cmake --install "$build" --prefix "$dir/prefix" >/dev/null
pc=$(find "$dir/prefix" -name fsps.pc -path '*/pkgconfig/*')
export PKG_CONFIG_PATH=$(dirname "$pc")
libdir=$(pkg-config --variable=libdir fsps)
major=$(sed -n 's/^#define FSPS_VERSION_MAJOR \([0-9]*\)$/\1/p' \
        "$dir/prefix/include/fsps/fsps.h")
[ -e "$libdir/libfsps.so.$major" ] || { echo "no libfsps.so.$major"; exit 1; }
# shellcheck disable=SC2046,SC2086
"${CC:-cc}" -std=c11 ${CFLAGS:-} -o "$dir/shared" "$src" $(pkg-config --cflags --libs fsps)
# shellcheck disable=SC2046,SC2086
"${CC:-cc}" -std=c11 ${CFLAGS:-} -o "$dir/static" "$src" $(pkg-config --cflags --libs fsps-static)
# ldd's output is taken whole before grep reads it: `ldd | grep -q` under
# pipefail fails whenever grep exits on its match before ldd has written the
# rest (SIGPIPE), which a fresh-clone CI run hit once.
shared_deps=$(LD_LIBRARY_PATH=$libdir ldd "$dir/shared")
static_deps=$(ldd "$dir/static")
grep -q "libfsps.so.$major" <<<"$shared_deps" ||
  { echo "the shared build does not load libfsps.so.$major:"; echo "$shared_deps"; exit 1; }
if grep -q libfsps <<<"$static_deps"; then
  echo "the --static build loads libfsps.so:"; echo "$static_deps"; exit 1
fi
LD_LIBRARY_PATH=$libdir bash "$(dirname "$0")/readme_example.sh" "$server" "$dir/shared"
bash "$(dirname "$0")/readme_example.sh" "$server" "$dir/static"
