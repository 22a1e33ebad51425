#!/usr/bin/env bash
# Installs the build into a temporary prefix, then compiles the README's
# libfsps example against the installed fsps.pc twice — shared (it must load
# libfsps.so.MAJOR) and static (fsps-static.pc) — and runs both against a real
# fsps-server; then imports the installed Python package, and one pip built.
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

# The Python package as installed (not in sanitized builds: python3 cannot
# load an instrumented libfsps.so): importable from any folder with only
# the install's site folder on the path, loading the installed library.
[ -n "${CFLAGS:-}" ] && exit 0
pydir=$(dirname "$(dirname "$(find "$dir/prefix" -name _libpath.py)")")
(cd "$dir" && env -u FSPS_LIBRARY PYTHONPATH="$pydir" /usr/bin/python3 -c "
import fsps, os
want = os.path.realpath('$libdir/libfsps.so.$major')
assert os.path.realpath(fsps.LIBRARY_PATH) == want, fsps.LIBRARY_PATH
assert fsps.library_version() == fsps.__version__
print('python: fsps', fsps.__version__, 'from', fsps.LIBRARY_PATH)")
# pip's way (a virtual environment's): the package alone, the library
# named by FSPS_LIBRARY. Built from a copy: pip writes into the folder.
cp -r "$(dirname "$0")/../../python" "$dir/pysrc"
/usr/bin/python3 -m pip install -q --no-build-isolation --no-deps --no-index \
  --root-user-action=ignore --target "$dir/pip" "$dir/pysrc"
(cd "$dir" && FSPS_LIBRARY=$libdir/libfsps.so.$major PYTHONPATH="$dir/pip" \
  /usr/bin/python3 -c "import fsps; print('pip: fsps', fsps.__version__)")
