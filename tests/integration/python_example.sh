#!/usr/bin/env bash
# Runs examples/quickstart.py against two real fsps-servers, checks the
# model it trained, and that the README's "Use from Python" example is that
# file word for word. Usage (FSPS_SERVER, FSPS_LIBRARY, PYTHONPATH set):
# python_example.sh SOURCE_DIR
set -euo pipefail
src=$1
source "$(dirname "$0")/servers.sh"
start_servers 2 1
out=$(cd "$dir" && /usr/bin/python3 "$src/examples/quickstart.py" --servers "$servers")
echo "$out"
grep -qx "version 60: weight \[ 2.  -1.   0.5  3. \], bias 1.00" <<<"$out" ||
  { echo "the example did not learn the line"; exit 1; }
sed -n '/<!-- python-example: begin -->/,/<!-- python-example: end -->/p' \
  "$src/README.md" | sed '1,2d;$d' | sed '$d' > "$dir/readme.py"
diff -u "$src/examples/quickstart.py" "$dir/readme.py" ||
  { echo "README's Python example differs from examples/quickstart.py"; exit 1; }
