#!/usr/bin/env bash
# Runs what the chart rendered, as a cluster would, on this machine: the
# servers with their rendered environment, the workers' wait-for-servers
# init command, the workers with their rendered environment (FSPS_SERVERS
# holding the servers' cluster DNS names), and the `helm test` command.
# validate.sh calls it inside new mount and network namespaces (unshare
# -m -n), where a private /etc/hosts maps each server's DNS name to its
# own loopback address 127.0.1.<i+1>: only loopback is reachable, and the
# names resolve through the same resolver gRPC uses in a pod.
#
# Differences from a cluster, all printed: each server listens on its own
# loopback address rather than 0.0.0.0 (they share one network namespace),
# and so serves its metrics (with metrics on) and each worker its own on
# 127.0.2.<r+1>, on the rendered metrics port; workers stop after a few steps
# on part of the data, without the final evaluation, to keep the run short
# (and give up on a call after 60 s rather than 120 s if something hangs).
# With metrics on, each server's rendered metrics port is scraped once the
# workers are done: it must show every layer's version.
#
#   smoke.sh DIR FSPS_SERVER FSPS_WORKER FSPS_HEALTH     (DIR from validate.mjs --emit)
set -euo pipefail
dir=$1 server_bin=$2 worker_bin=$3 health_bin=$4
OVERRIDES=(FSPS_MAX_STEPS=12 FSPS_TRAIN_LIMIT=4096 FSPS_NO_EVAL=1 FSPS_TIMEOUT_MS=60000)
# This machine's OpenBLAS workarounds, if any, are not the chart's business.
KEEP=()
for v in OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do
  if [ -n "${!v:-}" ]; then KEEP+=("$v=${!v}"); fi
done

ip link set lo up
mount --bind "$dir/hosts" /etc/hosts
read -r S W port mport <"$dir/counts"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# run_env FILE LOG BIN [VAR=VALUE...]: execs BIN with exactly FILE's
# environment (plus the VARs), so that `run_env ... &` leaves $! = BIN's pid.
run_env() {
  local file=$1 log=$2 bin=$3
  shift 3
  local vars
  mapfile -t vars <"$file"
  exec env -i PATH=/usr/bin:/bin ${KEEP[@]+"${KEEP[@]}"} "${vars[@]}" "$@" "$bin" >"$log" 2>&1
}

# mapfile_cmd FILE: sets CMD to the rendered command, with the image's
# fsps-health replaced by the one built here.
mapfile_cmd() {
  mapfile -t CMD <"$1"
  [ "$(basename "${CMD[0]}")" = fsps-health ] || {
    echo "smoke: $1 does not run fsps-health"
    exit 1
  }
  CMD[0]=$health_bin
}

SECONDS=0
# The init container starts first, as pods may: it must wait for servers.
if [ -f "$dir/init.cmd" ]; then
  mapfile_cmd "$dir/init.cmd"
  "${CMD[@]}" >"$dir/init.log" 2>&1 &
  init_pid=$!
  pids+=("$init_pid")
  sleep 0.5
fi

# metrics_at HOST: the metrics address override for the process on HOST.
metrics_at() {
  if [ "$mport" -ne 0 ]; then echo "FSPS_METRICS_LISTEN=$1:$mport"; fi
}
for ((i = 0; i < S; i++)); do
  # The rendered checkpoint folder is the pod's volume: use one of ours.
  run_env "$dir/server-$i.env" "$dir/server-$i.log" "$server_bin" \
    FSPS_LISTEN="127.0.1.$((i + 1)):$port" FSPS_CHECKPOINT_DIR="$dir/ckpt-$i" \
    $(metrics_at "127.0.1.$((i + 1))") &
  pids+=($!)
  server_pids[i]=$!
done

# servers_alive: fails, showing its log, if a server has exited.
servers_alive() {
  for ((i = 0; i < S; i++)); do
    if ! kill -0 "${server_pids[i]}" 2>/dev/null; then
      echo "smoke: server $i exited early:"
      tail -n 10 "$dir/server-$i.log"
      return 1
    fi
  done
}

if [ -n "${init_pid:-}" ]; then
  while kill -0 "$init_pid" 2>/dev/null; do
    servers_alive || exit 1
    sleep 0.2
  done
  if ! wait "$init_pid"; then
    echo "smoke: wait-for-servers failed:"
    cat "$dir/init.log"
    tail -n 5 "$dir"/server-*.log
    exit 1
  fi
  echo "smoke: wait-for-servers saw all $S server(s) SERVING: $(tr '\n' ' ' <"$dir/init.log")"
fi

mapfile_cmd "$dir/test.cmd"
if ! servers_alive || ! "${CMD[@]}" >"$dir/test.log" 2>&1; then
  echo "smoke: the helm test command failed:"
  cat "$dir/test.log"
  exit 1
fi
echo "smoke: helm test command passed"

echo "smoke: starting $W worker(s) with overrides ${OVERRIDES[*]}"
wpids=()
for ((r = 0; r < W; r++)); do
  run_env "$dir/worker-$r.env" "$dir/worker-$r.log" "$worker_bin" "${OVERRIDES[@]}" \
    $(metrics_at "127.0.2.$((r + 1))") &
  wpids+=($!)
  pids+=($!)
done
status=0
for ((r = 0; r < W; r++)); do
  if ! wait "${wpids[r]}"; then
    echo "smoke: worker $r failed:"
    tail -n 20 "$dir/worker-$r.log"
    status=1
  fi
done
[ "$status" -eq 0 ] || exit 1
echo "smoke: all $W worker(s) trained and exited 0; rank 0 said:"
tail -n 3 "$dir/worker-0.log" | sed 's/^/  /'

# What the ServiceMonitor scrapes: each server's /metrics on the rendered
# port, which must show every layer's version, trained.
if [ "$mport" -ne 0 ]; then
  for ((i = 0; i < S; i++)); do
    if ! /usr/bin/python3 - "http://127.0.1.$((i + 1)):$mport/metrics" >"$dir/scrape-$i.log" 2>&1 <<'EOF'
import re, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=30) as r:
    text = r.read().decode()
v = [float(x) for x in re.findall(r"^fsps_layer_version\{[^}]*\} (\S+)$", text, re.M)]
if not v or min(v) < 1:
    sys.exit("%s: layer versions %s" % (sys.argv[1], v))
print("%s: %d layer versions, %g..%g" % (sys.argv[1], len(v), min(v), max(v)))
EOF
    then
      echo "smoke: server $i's metrics port answered no trained layer versions:"
      cat "$dir/scrape-$i.log"
      exit 1
    fi
    echo "smoke: $(cat "$dir/scrape-$i.log")"
  done
fi

# SIGTERM, as the kubelet sends it: each server must stop cleanly.
for ((i = 0; i < S; i++)); do kill -TERM "${server_pids[i]}"; done
for ((i = 0; i < S; i++)); do
  if ! wait "${server_pids[i]}"; then
    echo "smoke: server $i did not exit 0 on SIGTERM:"
    tail -n 10 "$dir/server-$i.log"
    exit 1
  fi
done
pids=()
# ... and leave its final checkpoint in its (rendered) checkpoint folder.
for ((i = 0; i < S; i++)); do
  if ! ls "$dir/ckpt-$i"/ckpt-s${i}of${S}-v*.fsps >/dev/null 2>&1; then
    echo "smoke: server $i wrote no final checkpoint:"
    tail -n 10 "$dir/server-$i.log"
    exit 1
  fi
done
echo "smoke: $S server(s) stopped cleanly on SIGTERM and wrote their final checkpoint (${SECONDS} s in all)"
