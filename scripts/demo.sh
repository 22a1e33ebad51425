#!/usr/bin/env bash
# README command one: install what is missing, build, then train an MLP on
# Fashion-MNIST with a local fsps cluster (servers and workers on loopback),
# show progress and the final test accuracy, draw worker 0's run into a
# picture kept under demo-runs/, and stop every process it started, also on
# Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS=2
WORKERS=2
EPOCHS=""
MODEL=mlp:784,512,256,10
BATCH=64
MIN_ACC=""
TORCH=""
SERVER_FLAGS=()
EXTRA=()

usage() {
  cat <<EOF
Usage: scripts/demo.sh [--torch] [--servers N] [--workers N] [--epochs N]
                       [--model mlp:784,...,10] [--batch N]
                       [--min-accuracy A] [--deterministic] [-- worker flags]

Starts N fsps-server processes and N fsps-worker processes on 127.0.0.1,
trains on Fashion-MNIST (/usr/share/datasets/fashion-mnist) and prints the
test accuracy after each epoch. Defaults: 2 servers, 2 workers, 10 epochs,
$MODEL, batch $BATCH per worker, Adam lr 0.001 with a cosine schedule,
inputs normalised.
With --min-accuracy, exits 1 if the final test accuracy is below A.
With --deterministic, the servers sum the workers' gradients in worker order
(fsps-server --deterministic): a run gives the same bits every time.
Worker flags such as --wire-dtype bf16 (parameters and gradients travel as
bfloat16) go after --.
Worker 0's progress (fsps-worker --log-jsonl) and its picture (scripts/plot.py)
are kept in demo-runs/<UTC time>/ (or under \$DEMO_RUNS_DIR), whose path is
printed at the end.
Flags after -- go to every fsps-worker (see fsps-worker --help).

--torch trains examples/torch_fashion_cnn.py instead (PyTorch, through
fsps.torch): a CNN, 6 epochs unless --epochs, batch 64 per worker unless
--batch, Adam lr 0.002 with a cosine schedule; flags after -- go to it.
Its rank 0 writes the same --log-jsonl file, drawn the same way.
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --servers) SERVERS=$2; shift 2 ;;
    --workers) WORKERS=$2; shift 2 ;;
    --epochs) EPOCHS=$2; shift 2 ;;
    --model) MODEL=$2; shift 2 ;;
    --batch) BATCH=$2; shift 2 ;;
    --min-accuracy) MIN_ACC=$2; shift 2 ;;
    --deterministic) SERVER_FLAGS+=(--deterministic); shift ;;
    --torch) TORCH=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "demo: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$EPOCHS" ] || { [ -n "$TORCH" ] && EPOCHS=6 || EPOCHS=10; }
for v in "$SERVERS" "$WORKERS" "$EPOCHS" "$BATCH"; do
  case "$v" in
    ''|*[!0-9]*|0) echo "demo: counts must be positive integers, not '$v'" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
echo "demo: building in $BUILD_DIR"
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" >/dev/null

RUN_DIR=$(mktemp -d /tmp/fsps-demo.XXXXXX)
# Kept after the run (RUN_DIR is not): worker 0's log and its picture.
LOG_DIR="${DEMO_RUNS_DIR:-demo-runs}/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$LOG_DIR" && LOG_DIR=$(cd "$LOG_DIR" && pwd)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$RUN_DIR"
}
trap cleanup EXIT
trap 'echo "demo: interrupted, stopping the cluster" >&2; exit 130' INT TERM

echo "demo: starting $SERVERS servers for $WORKERS workers"
for ((s = 0; s < SERVERS; s++)); do
  "$BUILD_DIR/server/fsps-server" --listen 127.0.0.1:0 --index "$s" \
    --num-servers "$SERVERS" --workers "$WORKERS" \
    --port-file "$RUN_DIR/port$s" --log-level warn \
    ${SERVER_FLAGS[@]+"${SERVER_FLAGS[@]}"} &
  PIDS+=($!)
done
list=""
for ((s = 0; s < SERVERS; s++)); do
  for _ in $(seq 200); do [ -s "$RUN_DIR/port$s" ] && break; sleep 0.05; done
  [ -s "$RUN_DIR/port$s" ] || { echo "demo: server $s did not start" >&2; exit 1; }
  list+="${list:+,}127.0.0.1:$(cat "$RUN_DIR/port$s")"
done
echo "demo: servers at $list"

start_worker() { # start_worker RANK OUTPUT [worker flags]
  if [ -n "$TORCH" ]; then
    FSPS_LIBRARY="$BUILD_DIR/client/libfsps.so.0" PYTHONPATH=python \
      /usr/bin/python3 examples/torch_fashion_cnn.py --servers "$list" \
      --rank "$1" --world "$WORKERS" --batch "$BATCH" --epochs "$EPOCHS" \
      "${@:3}" ${EXTRA[@]+"${EXTRA[@]}"} >"$2" &
  else
    "$BUILD_DIR/worker/fsps-worker" --servers "$list" --rank "$1" \
      --world "$WORKERS" --model "$MODEL" --batch "$BATCH" \
      --epochs "$EPOCHS" --normalize --schedule cosine --progress-secs 5 \
      "${@:3}" ${EXTRA[@]+"${EXTRA[@]}"} >"$2" &
  fi
  WPIDS+=($!)
  PIDS+=($!)
}

if [ -n "$TORCH" ]; then
  echo "demo: training examples/torch_fashion_cnn.py (PyTorch through fsps.torch) for $EPOCHS epochs"
else
  echo "demo: training $MODEL for $EPOCHS epochs on Fashion-MNIST"
fi
WPIDS=()
# Workers show progress on stderr; worker 0's stdout is its JSON summary.
start_worker 0 "$RUN_DIR/summary.json" --log-jsonl "$LOG_DIR/worker0.jsonl"
for ((r = 1; r < WORKERS; r++)); do start_worker "$r" /dev/null; done
# Wait for the workers; the first that fails ends the demo at once (the
# others would wait for its pushes until their deadline).
status=0
left=("${WPIDS[@]}")
while [ "${#left[@]}" -gt 0 ] && [ "$status" -eq 0 ]; do
  next=()
  for pid in "${left[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then next+=("$pid")
    else wait "$pid" || status=1; fi
  done
  left=(${next[@]+"${next[@]}"})
  [ "${#left[@]}" -eq 0 ] || sleep 0.2
done
if [ "$status" -ne 0 ]; then
  echo "demo: a worker failed (see its messages above)" >&2
  exit 1
fi
echo "demo: summary of worker 0:"
cat "$RUN_DIR/summary.json"
acc=$(sed -n 's/.*"test_accuracy": *\([0-9.]*\).*/\1/p' "$RUN_DIR/summary.json")
echo "demo: final test accuracy $acc"
if ! /usr/bin/python3 scripts/plot.py "$LOG_DIR/worker0.jsonl" \
    -o "$LOG_DIR/run.png"; then
  echo "demo: could not draw the run (log kept in $LOG_DIR)" >&2
  exit 1
fi
echo "demo: worker 0's log: $LOG_DIR/worker0.jsonl"
echo "demo: picture of the run: $LOG_DIR/run.png"
if [ -n "$MIN_ACC" ] && ! awk -v a="$acc" -v m="$MIN_ACC" 'BEGIN { exit !(a >= m) }'; then
  echo "demo: accuracy $acc is below the required $MIN_ACC" >&2
  exit 1
fi
