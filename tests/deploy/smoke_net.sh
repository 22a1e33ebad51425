#!/usr/bin/env bash
# Runs what the chart rendered as pods on an emulated cluster network: each
# server and each worker in its own network namespace with its own address,
# joined to one bridge by a veth pair shaped with tc tbf at $SMOKE_LINK
# (1gbit) each way, as bench/scale does. The servers listen where the chart
# says (FSPS_LISTEN as rendered, not a loopback address of smoke.sh's); the
# workers find them by their cluster DNS names through a private /etc/hosts
# that maps each name to its server's address, and their gathers and
# pushes cross the shaped links (each link's byte counters are checked).
# Plaintext scenarios only (smoke.sh runs TLS, tokens, metrics and probes).
# validate.sh runs it inside new mount and network namespaces (unshare -m
# -n), so the namespaces it makes are invisible outside and go with it.
#
#   smoke_net.sh DIR FSPS_SERVER FSPS_WORKER FSPS_HEALTH   (DIR from validate.mjs --emit)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/smoke_lib.sh"
dir=$1 server_bin=$2 worker_bin=$3 health_bin=$4
OVERRIDES=(FSPS_MAX_STEPS=12 FSPS_TRAIN_LIMIT=4096 FSPS_NO_EVAL=1 FSPS_TIMEOUT_MS=60000)
link=${SMOKE_LINK:-1gbit}
pre=fsps-pods-$$
read -r S W port _ <"$dir/counts"

ip link set lo up
# Server i's DNS name now maps to 10.88.0.(i+1), its pod's address.
sed 's/^127\.0\.1\./10.88.0./' "$dir/hosts" >"$dir/hosts.net"
mount --bind "$dir/hosts.net" /etc/hosts

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for n in $(ip netns list | awk -v p="$pre-" 'index($1, p) == 1 { print $1 }'); do
    ip netns del "$n" 2>/dev/null || true
  done
}
trap cleanup EXIT

# pod NAME ADDRESS: a namespace with one shaped link to the bridge.
pod() {
  local ns=$pre-$1
  ip netns add "$ns"
  ip link add eth0 netns "$ns" type veth peer name "$1" netns "$pre-br"
  ip -n "$pre-br" link set "$1" master br0 up
  ip -n "$ns" addr add "$2/16" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
  tc -n "$ns" qdisc add dev eth0 root tbf rate "$link" burst 256k limit 1048576
  tc -n "$pre-br" qdisc add dev "$1" root tbf rate "$link" burst 256k limit 1048576
}
ip netns add "$pre-br"
ip -n "$pre-br" link add br0 type bridge
ip -n "$pre-br" link set br0 up
for ((i = 0; i < S; i++)); do pod "s$i" "10.88.0.$((i + 1))"; done
for ((r = 0; r < W; r++)); do pod "w$r" "10.88.1.$((r + 1))"; done
echo "smoke_net: $S server and $W worker pods, each on its own link at $link"

# in_pod NAME FILE LOG BIN [VAR=VALUE...]: BIN in NAME's namespace with
# exactly FILE's environment (plus the VARs); dies with this script.
in_pod() {
  local name=$1 file=$2 log=$3 bin=$4 vars
  shift 4
  mapfile -t vars < <(grep -v '^$' "$file")
  exec ip netns exec "$pre-$name" setpriv --pdeathsig KILL -- env -i PATH=/usr/bin:/bin \
    ${vars[@]+"${vars[@]}"} "$@" "$bin" >"$log" 2>&1
}

server_pids=()
for ((i = 0; i < S; i++)); do
  (in_pod "s$i" "$dir/server-$i.env" "$dir/net-server-$i.log" "$server_bin" \
    FSPS_CHECKPOINT_DIR="$dir/net-ckpt-$i") &
  pids+=($!)
  server_pids[i]=$!
done
# Each server answers health checks from a worker's pod, by its DNS name.
names=$(awk '$2 != "localhost" { print $2 }' "$dir/hosts")
for h in $names; do
  if ! ip netns exec "$pre-w0" "$health_bin" --timeout-ms 30000 "$h:$port" >"$dir/net-probe.log" 2>&1; then
    echo "smoke_net: $h:$port does not answer from a worker's pod:"
    cat "$dir/net-probe.log" "$dir"/net-server-*.log
    exit 1
  fi
done
echo "smoke_net: every server SERVING by its DNS name across the bridge"

wpids=()
for ((r = 0; r < W; r++)); do
  (in_pod "w$r" "$dir/worker-$r.env" "$dir/net-worker-$r.log" "$worker_bin" "${OVERRIDES[@]}") &
  wpids+=($!)
  pids+=($!)
done
wait_workers smoke_net "$dir/net-worker-%d.log" "${wpids[@]}"

# Every pod's link carried the training's traffic both ways.
for ((i = 0; i < S; i++)); do nodes[i]=s$i; done
for ((r = 0; r < W; r++)); do nodes[S + r]=w$r; done
for n in "${nodes[@]}"; do
  tx=$(ip netns exec "$pre-br" cat "/sys/class/net/$n/statistics/tx_bytes")
  rx=$(ip netns exec "$pre-br" cat "/sys/class/net/$n/statistics/rx_bytes")
  if [ "$tx" -lt 100000 ] || [ "$rx" -lt 100000 ]; then
    echo "smoke_net: pod $n's link carried $tx bytes in, $rx out: not the training"
    exit 1
  fi
  echo "smoke_net: pod $n's link: $((tx / 1000)) kB in, $((rx / 1000)) kB out"
done
stop_servers smoke_net "$dir/net-server-%d.log" "${server_pids[@]}"
pids=()
echo "smoke_net: $W worker(s) trained with $S server(s) over shaped links; all stopped cleanly"
