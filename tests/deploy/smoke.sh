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
# With TLS each server's plaintext health port is on its own address too.
# With metrics on, each server's rendered metrics port is scraped once the
# workers are done: it must show every layer's version.
#
# With TLS or tokens on, the Secrets the pods mount are made here (openssl:
# a CA, a server certificate naming every server's DNS name as cert-manager
# would, a client certificate, random tokens) and each process finds its
# files, with the rendered modes, under $DIR/root-<process>/ instead of at
# the rendered paths: its variables are rewritten to match (printed).
#
# With a serve binary (5th argument) and a scenario with serve.enabled, the
# rendered fsps-serve command runs too, its binary replaced by the one
# given, listening on 127.0.3.1 (its metrics too) instead of 0.0.0.0; the
# kubelet's probe of it is a plaintext gRPC health check of its rendered
# probe port, made with fsps-health. Source "servers": it starts before the
# workers, dialling the servers by their DNS names (with the rendered TLS
# files and token), and must not be SERVING while the servers hold no model
# (not ready); once the workers are done it must be SERVING (ready), and
# still be after the servers stop (it keeps the last good version). Source
# "checkpoint": once the servers have stopped, their final checkpoints are
# copied into one folder, bind-mounted read-only as the claim is, and the
# rendered command runs with --checkpoint-dir pointing there (printed): it
# must become SERVING. Either way it must exit on SIGTERM.
#
#   smoke.sh DIR FSPS_SERVER FSPS_WORKER FSPS_HEALTH [FSPS_SERVE]
#                                                  (DIR from validate.mjs --emit)
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/smoke_lib.sh"
dir=$1 server_bin=$2 worker_bin=$3 health_bin=$4 serve_bin=${5:-}
OVERRIDES=(FSPS_MAX_STEPS=12 FSPS_TRAIN_LIMIT=4096 FSPS_NO_EVAL=1 FSPS_TIMEOUT_MS=60000)
# This machine's OpenBLAS workarounds, if any, are not the chart's business.
KEEP=()
for v in OPENBLAS_CORETYPE OPENBLAS_L2_SIZE; do
  if [ -n "${!v:-}" ]; then KEEP+=("$v=${!v}"); fi
done

ip link set lo up
mount --bind "$dir/hosts" /etc/hosts
read -r S W port mport <"$dir/counts"
# ---- the Secrets -------------------------------------------------------------
make_secrets() {
  local pki=$dir/pki names
  mkdir -p "$pki"
  names=$(awk '$2 != "localhost" { print $2 }' "$dir/hosts")
  local san="" h
  for h in $names; do san="$san,DNS:$h,DNS:*.${h#*.}"; done
  san=${san#,}
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" -subj /CN=smoke-ca -days 2 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign 2>/dev/null
  for who in server client; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout "$pki/$who.key" -out "$pki/$who.csr" -subj "/CN=smoke-$who" 2>/dev/null
  done
  openssl x509 -req -in "$pki/server.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -out "$pki/server.crt" -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth' "$san") 2>/dev/null
  openssl x509 -req -in "$pki/client.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -out "$pki/client.crt" -extfile <(printf 'extendedKeyUsage=clientAuth') 2>/dev/null
  for t in admin worker; do openssl rand -hex 32 >"$pki/$t.token"; done
  printf '# made by smoke.sh\nadmin %s\nworker %s\n' "$(cat "$pki/admin.token")" "$(cat "$pki/worker.token")" >"$pki/tokens"
  echo "smoke: made a CA, a server certificate for [$san], a client certificate and tokens"
}

# localize NAME: NAME's Secret files under $dir/root-NAME with the rendered
# modes, and NAME.env.local: NAME.env with those paths rewritten.
localize() {
  local name=$1 root=$dir/root-$1 path secret key mode src
  cp "$dir/$name.env" "$dir/$name.env.local"
  [ -s "$dir/$name.files" ] || return 0
  while read -r path secret key mode; do
    src=$(awk -v s="$secret" -v k="$key" '$1 == s && $2 == k { print $3 }' "$dir/secrets")
    [ -n "$src" ] || { echo "smoke: nothing known for $secret $key"; exit 1; }
    mkdir -p "$root$(dirname "$path")"
    cp "$dir/pki/$src" "$root$path"
    chmod "$mode" "$root$path"
    sed -i "s|=$path\$|=$root$path|" "$dir/$name.env.local"
  done <"$dir/$name.files"
  echo "smoke: $name: $(sed 's|^\([^ ]*\) \([^ ]*\) \([^ ]*\) \(.*\)|\1 (\2 \3, mode \4)|' "$dir/$name.files" | tr '\n' ';' | sed 's/;$//') under $root"
}
if [ -s "$dir/secrets" ]; then make_secrets; fi
for f in "$dir"/*.env; do localize "$(basename "$f" .env)"; done

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
  mapfile -t vars < <(grep -v '^$' "$file")
  exec env -i PATH=/usr/bin:/bin ${KEEP[@]+"${KEEP[@]}"} ${vars[@]+"${vars[@]}"} "$@" "$bin" >"$log" 2>&1
}

# run_cmd FILE LOG CMD...: execs CMD with exactly FILE's environment.
run_cmd() {
  local file=$1 log=$2
  shift 2
  local vars
  mapfile -t vars < <(grep -v '^$' "$file")
  exec env -i PATH=/usr/bin:/bin ${vars[@]+"${vars[@]}"} "$@" >"$log" 2>&1
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
  (run_cmd "$dir/init.env.local" "$dir/init.log" "${CMD[@]}") &
  init_pid=$!
  pids+=("$init_pid")
  sleep 0.5
fi

# metrics_at HOST: the metrics address override for the process on HOST.
metrics_at() {
  if [ "$mport" -ne 0 ]; then echo "FSPS_METRICS_LISTEN=$1:$mport"; fi
}
# health_at HOST: with TLS, the health-only port on HOST (as metrics_at).
read -r probe <"$dir/probe"
health_at() {
  if [ "$probe" -ne "$port" ]; then echo "FSPS_HEALTH_LISTEN=$1:$probe"; fi
}
for ((i = 0; i < S; i++)); do
  # The rendered checkpoint folder is the pod's volume: use one of ours.
  run_env "$dir/server-$i.env.local" "$dir/server-$i.log" "$server_bin" \
    FSPS_LISTEN="127.0.1.$((i + 1)):$port" FSPS_CHECKPOINT_DIR="$dir/ckpt-$i" \
    $(metrics_at "127.0.1.$((i + 1))") $(health_at "127.0.1.$((i + 1))") &
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

# The kubelet's probes: plaintext gRPC health checks of the rendered probe
# port; with TLS that is the health-only port, and the gRPC port refuses a
# plaintext check.
for ((i = 0; i < S; i++)); do
  if ! env -i "$health_bin" --timeout-ms 30000 "127.0.1.$((i + 1)):$probe" >"$dir/probe-$i.log" 2>&1; then
    echo "smoke: server $i does not answer the kubelet's plaintext probe on port $probe:"
    cat "$dir/probe-$i.log"
    exit 1
  fi
  if [ "$probe" -ne "$port" ] &&
    env -i "$health_bin" --timeout-ms 2000 "127.0.1.$((i + 1)):$port" >>"$dir/probe-$i.log" 2>&1; then
    echo "smoke: server $i answers a plaintext check on its TLS port $port"
    exit 1
  fi
done
echo "smoke: the probes' plaintext health checks on port $probe pass$([ "$probe" -ne "$port" ] && echo ", and the TLS port $port refuses them")"

mapfile_cmd "$dir/test.cmd"
if ! servers_alive || ! (run_cmd "$dir/test.env.local" "$dir/test.log" "${CMD[@]}"); then
  echo "smoke: the helm test command failed:"
  cat "$dir/test.log"
  exit 1
fi
echo "smoke: helm test command passed"

# ---- fsps-serve (with a serve binary and serve.enabled) ----------------------
serve_source="" serve_pid=""
if [ -f "$dir/serve.cmd" ]; then
  read -r serve_source sport smport serve_ckpt <"$dir/serve.info"
  if [ -z "$serve_bin" ]; then
    echo "smoke: NOTE: the chart renders fsps-serve ($serve_source), but no serve binary was given: not run"
    serve_source=""
  fi
fi
serve_addr=127.0.3.1
# start_serve [CHECKPOINT_DIR]: runs the rendered fsps-serve command (its
# binary ours, --listen on $serve_addr, --checkpoint-dir replaced when
# given) with exactly its rendered environment (Secret paths localized,
# metrics on $serve_addr); sets serve_pid.
start_serve() {
  local ckpt=${1:-} cmd vars i
  mapfile -t cmd <"$dir/serve.cmd"
  [ "$(basename "${cmd[0]}")" = fsps-serve ] || {
    echo "smoke: serve.cmd does not run fsps-serve"
    exit 1
  }
  cmd[0]=$serve_bin
  for ((i = 1; i + 1 < ${#cmd[@]}; i++)); do
    case "${cmd[i]}" in
      --listen) cmd[i + 1]=$serve_addr:$sport ;;
      --checkpoint-dir) [ -z "$ckpt" ] || cmd[i + 1]=$ckpt ;;
    esac
  done
  mapfile -t vars < <(grep -v '^$' "$dir/serve.env.local")
  if [ "$smport" -ne 0 ]; then vars+=("FSPS_METRICS_LISTEN=$serve_addr:$smport"); fi
  echo "smoke: fsps-serve: ${cmd[*]:1}"
  env -i PATH=/usr/bin:/bin ${KEEP[@]+"${KEEP[@]}"} ${vars[@]+"${vars[@]}"} "${cmd[@]}" >"$dir/serve.log" 2>&1 &
  serve_pid=$!
  pids+=("$serve_pid")
}
# serve_health TIMEOUT_MS: the kubelet's probe of fsps-serve (plaintext
# grpc.health.v1 on its rendered probe port); its answer in serve-health.log.
serve_health() {
  env -i "$health_bin" --timeout-ms "$1" "$serve_addr:$sport" >"$dir/serve-health.log" 2>&1
}
serve_alive() {
  kill -0 "$serve_pid" 2>/dev/null || {
    echo "smoke: fsps-serve exited $1:"
    tail -n 20 "$dir/serve.log"
    exit 1
  }
}
# serve_ready WHEN: fsps-serve must answer SERVING (a model loaded).
serve_ready() {
  serve_alive "$1"
  if ! serve_health 60000; then
    echo "smoke: fsps-serve is not ready (SERVING) $1:"
    cat "$dir/serve-health.log"
    tail -n 20 "$dir/serve.log"
    exit 1
  fi
  echo "smoke: fsps-serve is SERVING on its probe port $sport $1"
}
# stop_serve: SIGTERM, as the kubelet sends it; fsps-serve must exit.
stop_serve() {
  local rc=0
  kill -TERM "$serve_pid"
  wait "$serve_pid" || rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 143 ]; then
    echo "smoke: fsps-serve exited $rc on SIGTERM:"
    tail -n 10 "$dir/serve.log"
    exit 1
  fi
  echo "smoke: fsps-serve stopped on SIGTERM (exit $rc)"
}

if [ "$serve_source" = servers ]; then
  # The servers hold no model until rank 0 declares one: not ready yet.
  start_serve
  if serve_health 3000; then
    echo "smoke: fsps-serve says SERVING before the servers hold a model"
    exit 1
  fi
  serve_alive "while the servers held no model"
  echo "smoke: fsps-serve is up and not ready while the servers hold no model: $(tr '\n' ' ' <"$dir/serve-health.log")"
fi

echo "smoke: starting $W worker(s) with overrides ${OVERRIDES[*]}"
wpids=()
for ((r = 0; r < W; r++)); do
  run_env "$dir/worker-$r.env.local" "$dir/worker-$r.log" "$worker_bin" "${OVERRIDES[@]}" \
    $(metrics_at "127.0.2.$((r + 1))") &
  wpids+=($!)
  pids+=($!)
done
wait_workers smoke "$dir/worker-%d.log" "${wpids[@]}"
echo "smoke: all $W worker(s) trained and exited 0; rank 0 said:"
tail -n 3 "$dir/worker-0.log" | sed 's/^/  /'

if [ "$serve_source" = servers ]; then
  serve_ready "once the workers trained the model"
  if [ "$smport" -ne 0 ]; then
    if ! /usr/bin/python3 -c 'import sys, urllib.request; r = urllib.request.urlopen(sys.argv[1], timeout=30); b = r.read(); sys.exit(0 if r.status == 200 and b.strip() else 1)' \
      "http://$serve_addr:$smport/metrics" >"$dir/serve-scrape.log" 2>&1; then
      echo "smoke: fsps-serve's rendered metrics port $smport answered no metrics:"
      cat "$dir/serve-scrape.log"
      exit 1
    fi
    echo "smoke: fsps-serve serves /metrics on its rendered metrics port $smport"
  fi
fi

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
stop_servers smoke "$dir/server-%d.log" "${server_pids[@]}"
pids=(${serve_pid:+"$serve_pid"})
# ... and leave its final checkpoint in its (rendered) checkpoint folder.
for ((i = 0; i < S; i++)); do
  if ! ls "$dir/ckpt-$i"/ckpt-s${i}of${S}-v*.fsps >/dev/null 2>&1; then
    echo "smoke: server $i wrote no final checkpoint:"
    tail -n 10 "$dir/server-$i.log"
    exit 1
  fi
done
echo "smoke: $S server(s) stopped cleanly on SIGTERM and wrote their final checkpoint (${SECONDS} s in all)"

if [ "$serve_source" = servers ]; then
  # The servers are gone: fsps-serve keeps serving the last good version.
  serve_ready "after the servers stopped"
  stop_serve
elif [ "$serve_source" = checkpoint ]; then
  # The claim: every server's final checkpoint in one folder, read-only.
  mkdir -p "$dir/serve-ckpt"
  cp "$dir"/ckpt-*/ckpt-*.fsps "$dir/serve-ckpt/"
  mount --bind "$dir/serve-ckpt" "$dir/serve-ckpt"
  mount -o remount,bind,ro "$dir/serve-ckpt"
  echo "smoke: the servers' final checkpoints ($(ls "$dir/serve-ckpt" | tr '\n' ' ')) read-only in $dir/serve-ckpt, for the rendered $serve_ckpt"
  start_serve "$dir/serve-ckpt"
  serve_ready "from the checkpoint folder"
  stop_serve
fi
