# Sourced by the integration scripts: start_servers S W starts S real
# fsps-servers ($FSPS_SERVER) for W workers on loopback ports, stopped and
# cleaned up on exit, and sets $servers to "host:port,...", $dir to a
# temporary folder.
dir=$(mktemp -d)
server_pids=()
trap 'kill "${server_pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
start_servers() {
  local S=$1 W=$2 i
  for ((i = 0; i < S; i++)); do
    "$FSPS_SERVER" --listen 127.0.0.1:0 --port-file "$dir/port$i" \
      --num-servers "$S" --index $i --workers "$W" --log-level warn &
    server_pids+=($!)
  done
  servers=""
  for ((i = 0; i < S; i++)); do
    for _ in $(seq 400); do [ -s "$dir/port$i" ] && break; sleep 0.05; done
    [ -s "$dir/port$i" ] || { echo "fsps-server $i did not start"; exit 1; }
    servers+="${servers:+,}127.0.0.1:$(cat "$dir/port$i")"
  done
}
