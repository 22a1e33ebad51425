#!/usr/bin/env bash
# Installs, from Debian's packages, only what fsps needs and this machine lacks.
# Idempotent: a second run installs nothing. Works as root or through sudo.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config git
  libgrpc-dev protobuf-c-compiler libprotobuf-c-dev
  libopenblas-dev libuv1-dev libcmocka-dev zlib1g-dev
  grpc-proto python3-grpcio python3-protobuf protobuf-compiler
  # the open inference protocol's Python stub, generated as its clients do
  # (serve_online_python)
  python3-grpc-tools
  dataset-fashion-mnist
  # the optimizers are checked bit for bit against torch.optim (optim_torch,
  # interop_python), and the Python package's tests; pip checks the package
  # installs as in a virtual environment (installed_lib)
  python3-torch python3-numpy python3-cffi python3-pytest python3-pip
  universal-ctags clang-format
  # scripts/plot.py draws fsps-worker --log-jsonl runs (the demo's picture)
  python3-matplotlib
  # libFuzzer targets (tests/fuzz): Debian's default clang, its compiler-rt
  # (libFuzzer and the sanitizer runtimes, only recommended by clang) and
  # llvm-symbolizer, which puts file:line in sanitizer reports
  clang libclang-rt-dev llvm
  # /metrics on fsps-server and fsps-worker is served by libmicrohttpd (no
  # hand-written HTTP); the tests check every scrape with promtool and run
  # the Prometheus server itself against a live run, both in Debian's
  # prometheus package
  libmicrohttpd-dev prometheus
  # the status page beside /metrics is tested in Debian's headless
  # Chromium: its scripts run, the rendered values checked, a screenshot
  chromium
  # TLS: rpc/ checks PEM files with libcrypto (gRPC core's own OpenSSL);
  # the TLS tests and bench/wire --tls make certificates with the openssl tool
  libssl-dev openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} required packages are installed"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "setup: need root or sudo to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
