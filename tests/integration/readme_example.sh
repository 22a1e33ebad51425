#!/usr/bin/env bash
# Runs the README's libfsps example against a real fsps-server and checks
# what it prints. Usage: readme_example.sh FSPS_SERVER EXAMPLE
set -euo pipefail
dir=$(mktemp -d)
"$1" --listen 127.0.0.1:0 --port-file "$dir/port" --log-level warn &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 200); do [ -s "$dir/port" ] && break; sleep 0.05; done
out=$("$2" "127.0.0.1:$(cat "$dir/port")")
echo "$out"
[ "$out" = "bias[0] after 3 steps: -0.3" ]
