#!/usr/bin/env bash
# Runs the fsps.torch examples' second one, the transformer language model
# (examples/torch_char_lm.py), with W=2 workers on S=2 real servers, and
# checks that its loss fell. (The CNN runs in full as demo_torch.)
# Usage (FSPS_SERVER, FSPS_LIBRARY, PYTHONPATH set): torch_examples.sh SRC
set -euo pipefail
src=$1
source "$(dirname "$0")/servers.sh"
start_servers 2 2
for r in 0 1; do
  /usr/bin/python3 "$src/examples/torch_char_lm.py" --servers "$servers" \
    --rank $r --world 2 --steps 120 >"$dir/out$r" &
  workers[r]=$!
done
wait "${workers[0]}" && wait "${workers[1]}"
cat "$dir/out0"
/usr/bin/python3 - "$dir/out0" <<'PY'
import json, sys
done = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
first, last = done["first_loss"], done["last_loss"]
assert 4.0 < first < 4.7, "first loss %g is not about ln(76)" % first
assert last < 0.75 * first, "the loss did not fall: %g -> %g" % (first, last)
print("loss fell from %.3f to %.3f" % (first, last))
PY
