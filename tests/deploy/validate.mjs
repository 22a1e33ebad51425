// validate.mjs: checks the manifests `helm template` rendered from
// deploy/helm/fsps for one scenario, offline. Run by validate.sh with the
// modules of package.json (kubernetes-models, its Prometheus Operator
// models, yaml) on NODE_PATH.
//
//  1. Kubernetes API types: every object is validated by kubernetes-models'
//     class for its apiVersion/kind (the Kubernetes OpenAPI schemas), and
//     any field those schemas do not know is an error (a misspelt field
//     would otherwise be dropped silently by the API server).
//  2. Pod security: every pod meets the "restricted" Pod Security Standard
//     and the chart's own rules (read-only root, /tmp on an emptyDir, no
//     service-account token, resources on every container).
//  3. Wiring: N servers in a StatefulSet behind a matching headless Service,
//     an Indexed Job of M workers whose FSPS_SERVERS are exactly the
//     servers' stable DNS names, counts and modes that agree, gRPC probes on
//     the gRPC port, selectors that pick the right pods, the NetworkPolicy,
//     PDB, ServiceMonitor, PodMonitor, dashboard ConfigMap and helm test pod
//     when the scenario expects them, and only environment variables and
//     flags the binaries document.
//  3a. Serving (scenarios with "serve"): the fsps-serve Deployment, its
//     Service and HPA: --servers names exactly the server pods' DNS names
//     (or --checkpoint-dir is the claim's read-only mount), the probes ask
//     the serving port, the HPA scales the Deployment on CPU, the Service
//     and NetworkPolicy lead to the serving port, and the token fsps-serve
//     mounts is the worker one, never the admin one.
//  3b. Metrics: FSPS_METRICS_LISTEN on servers and workers exactly when the
//     scenario has metrics, on the port their "metrics" container port
//     opens; the ServiceMonitor's and PodMonitor's ports name those ports
//     (through the Service for the servers); the dashboard ConfigMap carries
//     the sidecar's label and the chart's dashboards/fsps.json, valid JSON.
//  4. With --emit DIR: what smoke.sh needs to run the rendered servers and
//     workers on loopback under their DNS names.
//
//   node validate.mjs --manifests FILE --scenario JSON --help-dir DIR
//                     --dockerfile FILE --dashboard FILE [--emit DIR]
//
// fsps-serve's flags and variables are checked against its --help only
// when HELP-DIR holds fsps-serve.txt (validate.sh --serve).
import fs from "node:fs";
import path from "node:path";
import { parseAllDocuments } from "yaml";

const args = {};
for (let i = 2; i < process.argv.length; i += 2)
  args[process.argv[i].replace(/^--/, "")] = process.argv[i + 1];
for (const k of ["manifests", "scenario", "help-dir", "dockerfile", "dashboard"])
  if (!args[k]) {
    console.error(`validate.mjs: --${k} is required`);
    process.exit(2);
  }
const sc = JSON.parse(args.scenario);
const tag = `[${sc.name}]`;
let failed = 0;
const fail = (msg) => {
  failed++;
  console.log(`FAIL ${tag} ${msg}`);
};
const ok = (msg) => console.log(`ok ${tag} ${msg}`);
const check = (cond, msg) => (cond ? true : (fail(msg), false));

// ---- parse ----------------------------------------------------------------
const docs = parseAllDocuments(fs.readFileSync(args.manifests, "utf8"));
const objs = [];
for (const d of docs) {
  if (d.errors.length) fail(`YAML error: ${d.errors[0].message}`);
  const o = d.toJS();
  if (o !== null && o !== undefined) objs.push(o);
}
check(objs.length > 0, "no objects rendered");

// ---- 1. Kubernetes API types ---------------------------------------------
function modulePath(apiVersion, kind) {
  if (apiVersion === "monitoring.coreos.com/v1")
    return `@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/${kind}`;
  return `kubernetes-models/${apiVersion}/${kind}`; // "v1" is the core group
}

// Records every property the schema validator reads: a property of the
// object it never looks at is one the schema does not define. (Maps such as
// labels are enumerated by the validator, which marks all their keys.)
function unknownFields(Cls, obj) {
  const seen = new Set();
  const wrap = (o, p) =>
    o === null || typeof o !== "object"
      ? o
      : new Proxy(o, {
          get(t, k, r) {
            if (typeof k !== "string") return Reflect.get(t, k, r);
            seen.add(`${p}/${k}`);
            return wrap(Reflect.get(t, k, r), `${p}/${k}`);
          },
          has(t, k) {
            if (typeof k === "string") seen.add(`${p}/${k}`);
            return Reflect.has(t, k);
          },
          ownKeys(t) {
            for (const k of Reflect.ownKeys(t))
              if (typeof k === "string") seen.add(`${p}/${k}`);
            return Reflect.ownKeys(t);
          },
        });
  Cls.prototype.validate.call(wrap(obj, ""));
  const unknown = [];
  const walk = (o, p) => {
    if (o === null || typeof o !== "object") return;
    for (const k of Object.keys(o)) {
      const q = `${p}/${k}`;
      if (!seen.has(q)) unknown.push(q);
      else walk(o[k], q);
    }
  };
  walk(obj, "");
  return unknown;
}

const byKind = {};
for (const o of objs) {
  const id = `${o.kind}/${o.metadata?.name}`;
  (byKind[o.kind] ??= []).push(o);
  if (o.apiVersion === "cert-manager.io/v1") continue; // no model: checked in 3c
  let Cls;
  try {
    const mod = await import(modulePath(o.apiVersion, o.kind));
    Cls = mod[o.kind];
  } catch (e) {
    fail(`${id}: no model for ${o.apiVersion} ${o.kind} (${e.code || e.message})`);
    continue;
  }
  try {
    new Cls(o).validate();
  } catch (e) {
    fail(`${id}: not a valid ${o.apiVersion} ${o.kind}: ${e.message}`);
    continue;
  }
  const unknown = unknownFields(Cls, o);
  if (unknown.length) fail(`${id}: fields unknown to ${o.apiVersion} ${o.kind}: ${unknown.join(", ")}`);
  else ok(`${id} is a valid ${o.apiVersion} ${o.kind}`);
}

// ---- labels and names -----------------------------------------------------
const dns1123 = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
for (const o of objs) {
  const id = `${o.kind}/${o.metadata?.name}`;
  const l = o.metadata?.labels || {};
  for (const k of ["app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                   "app.kubernetes.io/managed-by", "app.kubernetes.io/part-of", "helm.sh/chart"])
    check(l[k], `${id}: label ${k} missing`);
  check(l["app.kubernetes.io/instance"] === sc.release, `${id}: instance label is not the release ${sc.release}`);
  check(dns1123.test(o.metadata.name) && o.metadata.name.length <= 63, `${id}: name is not a DNS label`);
}

// ---- 2. pod security -----------------------------------------------------
const one = (kind, pred = () => true) => {
  const l = (byKind[kind] || []).filter(pred);
  check(l.length === 1, `expected one ${kind}, found ${l.length}`);
  return l[0];
};
const sts = one("StatefulSet");
const job = one("Job");
const testPod = one("Pod", (p) => p.metadata?.annotations?.["helm.sh/hook"] === "test");
const headless = one("Service", (s) => s.spec?.clusterIP === "None");
if (!sts || !job || !testPod || !headless) {
  console.log(`validate.mjs ${tag}: ${failed} failed`);
  process.exit(1);
}
const pods = [
  ["server", sts.spec.template],
  ["worker", job.spec.template],
  ["test", { metadata: testPod.metadata, spec: testPod.spec }],
];
// The serving Deployment (serve.enabled): exactly one, or none.
const isServe = (o) => o.metadata?.labels?.["app.kubernetes.io/component"] === "serve";
const deps = byKind.Deployment || [];
check(deps.length === (sc.serve ? 1 : 0) && deps.every(isServe),
      `${deps.length} Deployments (${deps.map((d) => d.metadata.name)}), expected ${sc.serve ? "the serving one" : "none"}`);
const dep = sc.serve ? deps[0] : undefined;
if (sc.serve && !dep) {
  console.log(`validate.mjs ${tag}: ${failed} failed`);
  process.exit(1);
}
if (dep) pods.push(["serve", dep.spec.template]);
const allowedVolumes = new Set(["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                                "persistentVolumeClaim", "projected", "secret"]);
const images = new Set();
for (const [what, tpl] of pods) {
  const s = tpl.spec;
  const psc = s.securityContext || {};
  check(!s.hostNetwork && !s.hostPID && !s.hostIPC, `${what}: uses host namespaces`);
  check(s.automountServiceAccountToken === false, `${what}: mounts a service-account token`);
  check(psc.seccompProfile?.type === "RuntimeDefault", `${what}: seccompProfile is not RuntimeDefault`);
  check(psc.runAsNonRoot === true, `${what}: pod runAsNonRoot is not true`);
  check(Number.isInteger(psc.runAsUser) && psc.runAsUser > 0, `${what}: runAsUser is not a non-root uid`);
  const vols = Object.fromEntries((s.volumes || []).map((v) => [v.name, v]));
  for (const v of s.volumes || []) {
    const types = Object.keys(v).filter((k) => k !== "name");
    check(types.every((t) => allowedVolumes.has(t)), `${what}: volume ${v.name} of type ${types} is not allowed by "restricted"`);
  }
  if (sts.spec.volumeClaimTemplates && what === "server")
    for (const c of sts.spec.volumeClaimTemplates) vols[c.metadata.name] = { persistentVolumeClaim: {} };
  for (const c of [...(s.initContainers || []), ...s.containers]) {
    const cid = `${what}/${c.name}`;
    const sc2 = c.securityContext || {};
    images.add(c.image);
    check(sc2.allowPrivilegeEscalation === false, `${cid}: allowPrivilegeEscalation is not false`);
    check(sc2.privileged !== true, `${cid}: privileged`);
    check(sc2.readOnlyRootFilesystem === true, `${cid}: root filesystem is writable`);
    check((sc2.capabilities?.drop || []).includes("ALL"), `${cid}: does not drop ALL capabilities`);
    check(!(sc2.capabilities?.add || []).some((x) => x !== "NET_BIND_SERVICE"), `${cid}: adds capabilities`);
    check(sc2.runAsUser === undefined || sc2.runAsUser > 0, `${cid}: runs as root`);
    check(!(c.ports || []).some((p) => p.hostPort), `${cid}: uses a hostPort`);
    const r = c.resources || {};
    check(r.requests?.cpu && r.requests?.memory && r.limits?.memory, `${cid}: lacks cpu/memory requests or a memory limit`);
    const tmp = (c.volumeMounts || []).find((m) => m.mountPath === "/tmp");
    check(tmp && vols[tmp.name]?.emptyDir, `${cid}: /tmp is not an emptyDir mount`);
    for (const m of c.volumeMounts || []) check(vols[m.name], `${cid}: mounts undefined volume ${m.name}`);
    check(Array.isArray(c.command) && c.command[0].startsWith("/"), `${cid}: no exec-form command with an absolute path`);
  }
}
check(images.size === 1, `containers use several images: ${[...images]}`);
const image = [...images][0];
if (sc.image) check(image === sc.image, `image is ${image}, expected ${sc.image}`);
ok(`pods meet the restricted Pod Security Standard; image ${image}`);

// ---- 3. wiring -----------------------------------------------------------
const matches = (sel, labels) => Object.entries(sel || {}).every(([k, v]) => labels?.[k] === v);
const env = (c) => Object.fromEntries((c.env || []).map((e) => [e.name, e]));
const val = (e, n) => e[n]?.value;

// Only variables and flags the binaries document (their --help texts).
const helpOf = (b) => fs.readFileSync(path.join(args["help-dir"], `${b}.txt`), "utf8");
const binOf = (cmd) => path.basename(cmd[0]);
const dockerfile = fs.readFileSync(args.dockerfile, "utf8");
const bindir = (dockerfile.match(/^COPY --from=\S+\s+\S+\s+(\S+?)\/?\s*$/m) || [])[1];
for (const [what, tpl] of pods)
  for (const c of [...(tpl.spec.initContainers || []), ...tpl.spec.containers]) {
    const b = binOf(c.command);
    if (!check(["fsps-server", "fsps-worker", "fsps-health", "fsps-serve"].includes(b), `${what}/${c.name}: runs ${c.command[0]}`)) continue;
    check(path.dirname(c.command[0]) === bindir, `${what}/${c.name}: ${c.command[0]} is not where the Dockerfile puts binaries (${bindir})`);
    if (b === "fsps-serve" && !fs.existsSync(path.join(args["help-dir"], "fsps-serve.txt"))) {
      console.log(`NOTE ${tag} no fsps-serve binary given: its flags and variables are not checked against its --help`);
      continue;
    }
    const help = helpOf(b);
    for (const e of c.env || [])
      if (e.name.startsWith("FSPS_")) check(help.includes(`[${e.name}]`), `${what}/${c.name}: ${b} does not read ${e.name}`);
    for (const a of [...c.command.slice(1), ...(c.args || [])])
      if (a.startsWith("--")) check(help.includes(a.split("=")[0]), `${what}/${c.name}: ${b} has no flag ${a}`);
  }

// Servers.
const S = sc.servers, W = sc.workers;
const sc_ = sts.spec;
const server = sc_.template.spec.containers.find((c) => binOf(c.command) === "fsps-server");
const se = env(server);
check(sc_.replicas === S, `StatefulSet replicas ${sc_.replicas}, expected ${S}`);
check(sc_.podManagementPolicy === "Parallel", "StatefulSet podManagementPolicy is not Parallel");
check(sc_.serviceName === headless.metadata.name, `StatefulSet serviceName ${sc_.serviceName} is not the headless Service ${headless.metadata.name}`);
check(matches(sc_.selector.matchLabels, sc_.template.metadata.labels), "StatefulSet selector does not match its pods");
check(headless.spec.publishNotReadyAddresses === true, "headless Service does not publish not-ready addresses");
check(matches(headless.spec.selector, sc_.template.metadata.labels), "headless Service does not select the server pods");
check(!matches(headless.spec.selector, job.spec.template.metadata.labels), "headless Service selects worker pods too");
const grpcPort = (server.ports || []).find((p) => p.name === "grpc")?.containerPort;
check(grpcPort === sc.port, `server gRPC port ${grpcPort}, expected ${sc.port}`);
// The image documents the ports the chart uses by default.
const exposed = [...dockerfile.matchAll(/^EXPOSE\s+(.*)$/gm)].flatMap((m) => m[1].split(/\s+/).map((p) => Number(p.split("/")[0])));
for (const name of sc.exposed || []) {
  const p = (server.ports || []).find((x) => x.name === name)?.containerPort;
  check(p && exposed.includes(p), `the Dockerfile does not EXPOSE the ${name} port ${p} (EXPOSE ${exposed})`);
}
check(headless.spec.ports.some((p) => p.name === "grpc" && p.port === grpcPort), "headless Service lacks the grpc port");
check(se.FSPS_INDEX?.valueFrom?.fieldRef?.fieldPath === "metadata.labels['apps.kubernetes.io/pod-index']",
      "FSPS_INDEX does not come from the pod-index label (the StatefulSet ordinal)");
check(val(se, "FSPS_NUM_SERVERS") === String(S), `FSPS_NUM_SERVERS ${val(se, "FSPS_NUM_SERVERS")}, expected ${S}`);
check(val(se, "FSPS_WORKERS") === String(W), `server FSPS_WORKERS ${val(se, "FSPS_WORKERS")}, expected ${W}`);
check(val(se, "FSPS_LISTEN") === `0.0.0.0:${grpcPort}`, `FSPS_LISTEN ${val(se, "FSPS_LISTEN")} is not 0.0.0.0:${grpcPort}`);
// With TLS the kubelet (plaintext only) probes the health-only port.
const healthPort = (server.ports || []).find((p) => p.name === "health")?.containerPort;
const probePort = sc.tls ? healthPort : grpcPort;
if (sc.tls) {
  check(healthPort > 0 && healthPort !== grpcPort, `with TLS the servers open no separate health port (${healthPort})`);
  check(val(se, "FSPS_HEALTH_LISTEN") === `0.0.0.0:${healthPort}`,
        `FSPS_HEALTH_LISTEN ${val(se, "FSPS_HEALTH_LISTEN")} is not 0.0.0.0:${healthPort} (the health port)`);
} else {
  check(!healthPort && se.FSPS_HEALTH_LISTEN === undefined, "a health port without TLS");
}
for (const p of ["startupProbe", "readinessProbe", "livenessProbe"])
  check(server[p]?.grpc?.port === probePort && !server[p]?.grpc?.service, `${p} is not a gRPC probe of the health service on ${probePort}`);
const graceMs = Number(val(se, "FSPS_GRACE_MS") ?? 5000);
check(sc_.template.spec.terminationGracePeriodSeconds * 1000 > graceMs,
      `terminationGracePeriodSeconds ${sc_.template.spec.terminationGracePeriodSeconds} does not cover FSPS_GRACE_MS ${graceMs}`);
const ckMount = (server.volumeMounts || []).find((m) => m.name === "checkpoints");
check(ckMount, "servers have no checkpoints volume");
const claim = (sc_.volumeClaimTemplates || []).find((c) => c.metadata.name === "checkpoints");
if (sc.pvc) check(claim?.spec?.resources?.requests?.storage, "checkpoints are not on a volumeClaimTemplate");
else check(!claim && sc_.template.spec.volumes.some((v) => v.name === "checkpoints" && v.emptyDir), "checkpoints are not on an emptyDir");
const metricsPort = (server.ports || []).find((p) => p.name === "metrics");
check(!!metricsPort === !!sc.metrics, `metrics port ${metricsPort ? "open" : "closed"}, expected ${sc.metrics ? "open" : "closed"}`);
check(val(se, "FSPS_CHECKPOINT_DIR") === ckMount?.mountPath,
      `FSPS_CHECKPOINT_DIR ${val(se, "FSPS_CHECKPOINT_DIR")} is not the checkpoints volume's ${ckMount?.mountPath}`);

// Workers.
const js = job.spec;
const worker = js.template.spec.containers.find((c) => binOf(c.command) === "fsps-worker");
const we = env(worker);
check(js.completionMode === "Indexed", "Job is not Indexed");
check(js.completions === W && js.parallelism === W, `Job completions/parallelism ${js.completions}/${js.parallelism}, expected ${W}/${W}`);
check(js.template.spec.restartPolicy === "Never", "worker restartPolicy is not Never");
check(we.FSPS_RANK?.valueFrom?.fieldRef?.fieldPath === "metadata.annotations['batch.kubernetes.io/job-completion-index']",
      "FSPS_RANK does not come from the job-completion-index annotation");
check(val(we, "FSPS_WORLD") === String(W), `FSPS_WORLD ${val(we, "FSPS_WORLD")}, expected ${W}`);
for (const k of ["FSPS_MODE", "FSPS_STALENESS"])
  check(val(we, k) === val(se, k), `workers' ${k} ${val(we, k)} differs from the servers' ${val(se, k)}`);
check(val(se, "FSPS_MODE") === sc.mode, `mode ${val(se, "FSPS_MODE")}, expected ${sc.mode}`);
// Each StatefulSet pod <sts>-<i> is reachable as <sts>-<i>.<serviceName>.<ns>.svc.<domain>.
const dnsNames = [...Array(S).keys()].map(
  (i) => `${sts.metadata.name}-${i}.${sc_.serviceName}.${sc.namespace}.svc.${sc.domain}`);
const expected = dnsNames.map((h) => `${h}:${grpcPort}`);
const servers = (val(we, "FSPS_SERVERS") || "").split(",");
check(JSON.stringify(servers) === JSON.stringify(expected),
      `FSPS_SERVERS is ${servers.join(",")}\n      expected ${expected.join(",")}`);
for (const h of dnsNames) check(h.split(".").every((l) => l.length <= 63 && dns1123.test(l)), `${h} is not a valid DNS name`);
const init = (js.template.spec.initContainers || []).find((c) => binOf(c.command) === "fsps-health");
if (init) check(JSON.stringify(init.command.slice(3)) === JSON.stringify(expected), "wait-for-servers does not wait for exactly the servers");
const testCmd = testPod.spec.containers[0].command;
check(binOf(testCmd) === "fsps-health" && JSON.stringify(testCmd.slice(3)) === JSON.stringify(expected),
      "the helm test pod does not check exactly the servers");
check(testPod.spec.restartPolicy === "Never", "the helm test pod restarts");

// ---- 3b. metrics ----------------------------------------------------------
// Each binary listens for scrapes (FSPS_METRICS_LISTEN, on all addresses)
// exactly when the scenario has metrics, on the port its container opens
// as "metrics"; no metrics flag hides in a command line.
const workerMetricsPort = (worker.ports || []).find((p) => p.name === "metrics");
for (const [what, c, e, port] of [["server", server, se, metricsPort], ["worker", worker, we, workerMetricsPort]]) {
  const listen = val(e, "FSPS_METRICS_LISTEN");
  if (sc.metrics) {
    check(port?.containerPort > 0, `${what}: no container port named metrics`);
    check(listen === `0.0.0.0:${port?.containerPort}`,
          `${what}: FSPS_METRICS_LISTEN ${listen}, expected 0.0.0.0:${port?.containerPort} (its metrics port)`);
  } else {
    check(!port, `${what}: a metrics port is open without metrics`);
    check(e.FSPS_METRICS_LISTEN === undefined, `${what}: FSPS_METRICS_LISTEN is set without metrics`);
  }
  check(!c.command.slice(1).concat(c.args || []).some((a) => /metrics/.test(a)),
        `${what}: a metrics flag on the command line (the chart sets FSPS_METRICS_LISTEN)`);
}
if (sc.metrics) {
  check(metricsPort?.containerPort === workerMetricsPort?.containerPort, "servers and workers serve metrics on different ports");
  const svcPort = headless.spec.ports.find((p) => p.name === "metrics");
  check(svcPort && svcPort.targetPort === "metrics" && svcPort.port === metricsPort?.containerPort,
        "the headless Service's metrics port does not lead to the servers' metrics port");
  if (!failed) ok(`metrics: servers and workers serve /metrics on port ${metricsPort.containerPort}`);
}

// A monitor's relabelings must label every series release=<release>, the
// dashboard's selector.
const labelsRelease = (ep) => (ep.relabelings || []).some(
  (r) => r.targetLabel === "release" && r.replacement === sc.release && (r.action ?? "replace") === "replace" &&
         !(r.sourceLabels || []).length);
const sms = byKind.ServiceMonitor || [];
check(sms.length === (sc.serviceMonitor ? 1 : 0), `${sms.length} ServiceMonitors, expected ${sc.serviceMonitor ? 1 : 0}`);
for (const m of sms) {
  check(JSON.stringify(m.spec.namespaceSelector?.matchNames) === JSON.stringify([sc.namespace]),
        `the ServiceMonitor looks in ${JSON.stringify(m.spec.namespaceSelector)}, not in ${sc.namespace}`);
  check(matches(m.spec.selector.matchLabels, headless.metadata.labels), "the ServiceMonitor does not select the server Service");
  const others = (byKind.Service || []).filter((x) => x !== headless && matches(m.spec.selector.matchLabels, x.metadata.labels));
  check(!others.length, "the ServiceMonitor selects other Services too");
  check(m.spec.endpoints.length === 1, `the ServiceMonitor has ${m.spec.endpoints.length} endpoints, expected 1`);
  for (const e of m.spec.endpoints) {
    const p = headless.spec.ports.find((x) => x.name === e.port);
    check(p, `ServiceMonitor endpoint port ${e.port} is not a port of the Service`);
    check(p && p.targetPort === "metrics" && p.port === metricsPort?.containerPort,
          `ServiceMonitor endpoint port ${e.port} does not lead to the servers' metrics port ${metricsPort?.containerPort}`);
    check((e.path ?? "/metrics") === "/metrics", `ServiceMonitor path ${e.path}: the servers serve /metrics`);
    check(labelsRelease(e), `the ServiceMonitor does not label series release=${sc.release}`);
  }
}
const pms = byKind.PodMonitor || [];
check(pms.length === (sc.serviceMonitor ? 1 : 0), `${pms.length} PodMonitors, expected ${sc.serviceMonitor ? 1 : 0}`);
for (const m of pms) {
  check(JSON.stringify(m.spec.namespaceSelector?.matchNames) === JSON.stringify([sc.namespace]),
        `the PodMonitor looks in ${JSON.stringify(m.spec.namespaceSelector)}, not in ${sc.namespace}`);
  check(matches(m.spec.selector.matchLabels, js.template.metadata.labels), "the PodMonitor does not select the worker pods");
  check(!matches(m.spec.selector.matchLabels, sc_.template.metadata.labels), "the PodMonitor selects server pods too");
  check(!matches(m.spec.selector.matchLabels, testPod.metadata.labels), "the PodMonitor selects the helm test pod");
  check(m.spec.podMetricsEndpoints.length === 1, `the PodMonitor has ${m.spec.podMetricsEndpoints.length} endpoints, expected 1`);
  for (const e of m.spec.podMetricsEndpoints) {
    check(e.port && e.port === workerMetricsPort?.name,
          `PodMonitor endpoint port ${e.port} is not the workers' metrics container port`);
    check((e.path ?? "/metrics") === "/metrics", `PodMonitor path ${e.path}: the workers serve /metrics`);
    check(labelsRelease(e), `the PodMonitor does not label series release=${sc.release}`);
  }
}
if (sc.serviceMonitor && !failed) ok("the ServiceMonitor scrapes the servers' and the PodMonitor the workers' metrics ports");

// The dashboard: one ConfigMap with the sidecar's label, holding the chart's
// dashboards/fsps.json byte for byte: a Grafana dashboard with queries, all
// on the $datasource variable.
const dashSrc = fs.readFileSync(args.dashboard, "utf8");
const cms = (byKind.ConfigMap || []).filter((c) => c.metadata.labels?.["app.kubernetes.io/component"] === "dashboard");
check(cms.length === (sc.dashboard ? 1 : 0), `${cms.length} dashboard ConfigMaps, expected ${sc.dashboard ? 1 : 0}`);
for (const cm of cms) {
  const label = sc.dashboardLabel ?? "grafana_dashboard", want = sc.dashboardLabelValue ?? "1";
  check(cm.metadata.labels[label] === want, `the dashboard ConfigMap's label ${label} is ${cm.metadata.labels[label]}, expected "${want}"`);
  check(cm.metadata.namespace === sc.dashboardNamespace,
        `the dashboard ConfigMap's namespace is ${cm.metadata.namespace}, expected ${sc.dashboardNamespace}`);
  for (const [k, v] of Object.entries(sc.dashboardAnnotations || {}))
    check(cm.metadata.annotations?.[k] === v, `the dashboard ConfigMap lacks the annotation ${k}: ${v}`);
  const keys = Object.keys(cm.data || {});
  check(keys.length === 1 && keys[0].endsWith(".json"), `the dashboard ConfigMap holds ${keys}, expected one .json file`);
  let d;
  try {
    d = JSON.parse(cm.data[keys[0]]);
  } catch (e) {
    fail(`the dashboard ConfigMap's ${keys[0]} is not JSON: ${e.message}`);
    continue;
  }
  check(cm.data[keys[0]].trimEnd() === dashSrc.trimEnd(), `${keys[0]} is not ${args.dashboard} byte for byte`);
  const panels = (d.panels || []).flatMap((p) => [p, ...(p.panels || [])]);
  const exprs = panels.flatMap((p) => (p.targets || []).map((t) => t.expr)).filter((x) => typeof x === "string" && x.trim());
  check(d.uid && d.title && typeof d.schemaVersion === "number", "the dashboard lacks a uid, title or schemaVersion");
  check(exprs.length > 0, "the dashboard has no queries");
  const ids = panels.map((p) => p.id);
  check(new Set(ids).size === ids.length, "the dashboard's panel ids are not unique");
  const vars = (d.templating?.list || []).map((v) => v.name);
  for (const v of ["datasource", "namespace", "release"]) check(vars.includes(v), `the dashboard has no $${v} variable`);
  for (const p of panels.filter((p) => p.type !== "row"))
    check(p.datasource?.uid === "${datasource}" && (p.targets || []).every((t) => t.datasource?.uid === "${datasource}"),
          `dashboard panel "${p.title}" does not query the $datasource variable`);
  if (!failed) ok(`dashboard ConfigMap ${cm.metadata.name}: ${label}="${want}", ${panels.length} panels, ${exprs.length} queries`);
}

// Optional objects.
const pdbs = byKind.PodDisruptionBudget || [];
check(pdbs.length === (sc.pdb ? 1 : 0), `${pdbs.length} PodDisruptionBudgets, expected ${sc.pdb ? 1 : 0}`);
for (const p of pdbs) {
  check(matches(p.spec.selector.matchLabels, sc_.template.metadata.labels), "the PDB does not select the servers");
  check(!matches(p.spec.selector.matchLabels, js.template.metadata.labels), "the PDB selects workers");
}
const nps = byKind.NetworkPolicy || [];
const wantNps = sc.networkPolicy ? (sc.serve ? 3 : 2) : 0;
check(nps.length === wantNps, `${nps.length} NetworkPolicies, expected ${wantNps}`);
if (sc.networkPolicy) {
  const snp = nps.find((n) => matches(n.spec.podSelector.matchLabels, sc_.template.metadata.labels));
  const wnp = nps.find((n) => matches(n.spec.podSelector.matchLabels, js.template.metadata.labels));
  if (check(snp, "no NetworkPolicy selects the servers")) {
    check(snp.spec.policyTypes?.includes("Ingress"), "server NetworkPolicy does not police ingress");
    const grpcRules = snp.spec.ingress.filter((r) => r.ports?.some((p) => p.port === grpcPort));
    check(grpcRules.length === 1, "one ingress rule must cover the gRPC port");
    const r = grpcRules[0] || {};
    const peers = r.from || [];
    check(peers.length > 0 && peers.every((p) => p.podSelector && !p.namespaceSelector && !p.ipBlock),
          "gRPC is open to more than pods of this namespace");
    for (const [what, labels] of [["workers", js.template.metadata.labels], ["servers", sc_.template.metadata.labels],
                                  ["helm test", testPod.metadata.labels]])
      check(peers.some((p) => matches(p.podSelector.matchLabels, labels)), `NetworkPolicy keeps ${what} from the gRPC port`);
    const stranger = { ...js.template.metadata.labels, "app.kubernetes.io/instance": "another-release" };
    check(!peers.some((p) => matches(p.podSelector.matchLabels, stranger)), "another release's pods reach the gRPC port");
    const ports = snp.spec.ingress.flatMap((x) => (x.ports || []).map((p) => p.port));
    const want = sc.metrics ? [grpcPort, metricsPort?.containerPort] : [grpcPort];
    check(JSON.stringify(ports.sort()) === JSON.stringify(want.sort()), `ingress ports ${ports}, expected ${want}`);
  }
  if (check(wnp, "no NetworkPolicy selects the workers")) {
    check(wnp.spec.policyTypes?.includes("Ingress"), "worker NetworkPolicy does not police ingress");
    const wports = (wnp.spec.ingress || []).flatMap((x) => (x.ports || []).map((p) => p.port));
    const open = (wnp.spec.ingress || []).some((x) => !(x.ports || []).length);
    const wwant = sc.metrics ? [workerMetricsPort?.containerPort] : [];
    check(!open && JSON.stringify(wports) === JSON.stringify(wwant),
          `workers accept connections on ${open ? "every port" : `ports [${wports}]`}, expected [${wwant}]`);
    if (sc.metrics) {
      const srule = snp?.spec.ingress.find((r) => r.ports?.some((p) => p.port === metricsPort?.containerPort));
      check(JSON.stringify(wnp.spec.ingress[0]?.from) === JSON.stringify(srule?.from),
            "workers' metrics port admits other sources than the servers' does");
    }
  }
}
const sas = byKind.ServiceAccount || [];
check(sas.length === (sc.serviceAccount ? 1 : 0), `${sas.length} ServiceAccounts, expected ${sc.serviceAccount ? 1 : 0}`);
for (const a of sas) {
  check(a.automountServiceAccountToken === false, "the ServiceAccount automounts its token");
  for (const [what, tpl] of pods) check(tpl.spec.serviceAccountName === a.metadata.name, `${what} pods do not use the chart's ServiceAccount`);
}
if (!failed) ok(`wiring: ${S} server(s) as ${expected.join(", ")}; ${W} worker(s), mode ${sc.mode}`);

// ---- 3a. serving -----------------------------------------------------------
// The rendered fsps-serve Deployment, Service, HPA and NetworkPolicy against
// the scenario's "serve": {source, replicas, port, modelName, maxBatch,
// maxDelayUs, threads, metrics, hpa: {min, max, cpu} | null, from (peers
// of the serving port, 0: any), claim, subPath, mountPath, serviceType}.
const serveSvcs = (byKind.Service || []).filter((x) => x !== headless);
const hpas = byKind.HorizontalPodAutoscaler || [];
check(serveSvcs.length === (sc.serve ? 1 : 0), `${serveSvcs.length} Services beside the headless one, expected ${sc.serve ? 1 : 0}`);
check(hpas.length === (sc.serve?.hpa ? 1 : 0), `${hpas.length} HorizontalPodAutoscalers, expected ${sc.serve?.hpa ? 1 : 0}`);
let serve, serveEnv, servePort, serveMetricsPort;
if (dep) {
  const v = sc.serve, ds = dep.spec, tpl = ds.template;
  serve = tpl.spec.containers.find((c) => binOf(c.command) === "fsps-serve");
  check(serve && tpl.spec.containers.length === 1, "the serving Deployment does not run fsps-serve alone");
  serve ??= tpl.spec.containers[0];
  serveEnv = env(serve);
  // The command line as flag -> value (each flag once, each with a value).
  const argv = serve.command.slice(1).concat(serve.args || []);
  const flags = {};
  for (let i = 0; i < argv.length; i += 2) {
    check(argv[i].startsWith("--") && !argv[i].includes("=") && i + 1 < argv.length && !argv[i + 1].startsWith("--"),
          `fsps-serve's command is not "--flag value" pairs at ${argv[i]}`);
    check(!(argv[i] in flags), `fsps-serve gets ${argv[i]} twice`);
    flags[argv[i]] = argv[i + 1];
  }
  servePort = (serve.ports || []).find((p) => p.name === "grpc")?.containerPort;
  check(servePort === v.port, `fsps-serve's grpc container port ${servePort}, expected ${v.port}`);
  check(flags["--listen"] === `0.0.0.0:${servePort}`, `fsps-serve --listen ${flags["--listen"]}, expected 0.0.0.0:${servePort}`);
  for (const [f, want] of [["--model-name", v.modelName], ["--max-batch", v.maxBatch], ["--max-delay-us", v.maxDelayUs], ["--threads", v.threads]])
    check(flags[f] === String(want), `fsps-serve ${f} ${flags[f]}, expected ${want}`);
  // Where the model comes from.
  if (v.source === "servers") {
    const got = (flags["--servers"] || "").split(",");
    check(JSON.stringify(got) === JSON.stringify(expected),
          `fsps-serve --servers is ${got.join(",")}\n      expected exactly the server pods' ${expected.join(",")}`);
    check(!("--checkpoint-dir" in flags), "fsps-serve gets --checkpoint-dir beside --servers");
    check(!(tpl.spec.volumes || []).some((x) => x.persistentVolumeClaim), "fsps-serve from the servers mounts a claim");
  } else {
    check(!("--servers" in flags), "fsps-serve from a checkpoint dials servers");
    const m = (serve.volumeMounts || []).find((x) => x.mountPath === flags["--checkpoint-dir"]);
    const vol = (tpl.spec.volumes || []).find((x) => x.name === m?.name);
    check(m && flags["--checkpoint-dir"] === v.mountPath, `fsps-serve --checkpoint-dir ${flags["--checkpoint-dir"]} is not the mount ${v.mountPath}`);
    check(vol?.persistentVolumeClaim?.claimName === v.claim, `the checkpoint folder is not on claim ${v.claim} (${JSON.stringify(vol)})`);
    check(m?.readOnly === true && vol?.persistentVolumeClaim?.readOnly === true, "the checkpoint claim is not mounted read-only");
    check((m?.subPath ?? "") === (v.subPath ?? ""), `the checkpoint mount's subPath ${m?.subPath}, expected ${v.subPath}`);
  }
  // Readiness from the health service of the serving port (SERVING once a
  // model is loaded); a startup probe for the first model; liveness more
  // tolerant than readiness.
  for (const p of ["startupProbe", "readinessProbe", "livenessProbe"])
    check(serve[p]?.grpc?.port === servePort && !serve[p]?.grpc?.service, `fsps-serve's ${p} is not a gRPC probe of the health service on ${servePort}`);
  const span = (p) => (p?.periodSeconds ?? 10) * (p?.failureThreshold ?? 3);
  check(span(serve.livenessProbe) > span(serve.readinessProbe),
        `fsps-serve's liveness (${span(serve.livenessProbe)} s) is not more tolerant than its readiness (${span(serve.readinessProbe)} s)`);
  // Replicas: the HPA's, or serve.replicas.
  check(matches(ds.selector.matchLabels, tpl.metadata.labels), "the serving Deployment's selector does not match its pods");
  for (const [what, labels] of [["server", sc_.template.metadata.labels], ["worker", js.template.metadata.labels], ["helm test", testPod.metadata.labels]]) {
    check(!matches(ds.selector.matchLabels, labels), `the serving Deployment's selector picks ${what} pods`);
  }
  check(!matches(sc_.selector.matchLabels, tpl.metadata.labels), "the StatefulSet's selector picks serving pods");
  check(!matches(headless.spec.selector, tpl.metadata.labels), "the servers' headless Service selects serving pods");
  for (const p of byKind.PodDisruptionBudget || []) check(!matches(p.spec.selector.matchLabels, tpl.metadata.labels), "the servers' PDB selects serving pods");
  if (v.hpa) {
    check(ds.replicas === undefined, `the Deployment sets replicas ${ds.replicas} beside its HPA`);
    const h = hpas[0]?.spec || {};
    check(h.scaleTargetRef?.apiVersion === "apps/v1" && h.scaleTargetRef?.kind === "Deployment" && h.scaleTargetRef?.name === dep.metadata.name,
          `the HPA scales ${JSON.stringify(h.scaleTargetRef)}, not Deployment ${dep.metadata.name}`);
    check(h.minReplicas === v.hpa.min && h.maxReplicas === v.hpa.max, `the HPA's replicas ${h.minReplicas}..${h.maxReplicas}, expected ${v.hpa.min}..${v.hpa.max}`);
    const ms = h.metrics || [];
    check(ms.length === 1 && ms[0].type === "Resource" && ms[0].resource?.name === "cpu" &&
          ms[0].resource.target?.type === "Utilization" && ms[0].resource.target.averageUtilization === v.hpa.cpu,
          `the HPA does not aim at ${v.hpa.cpu}% CPU: ${JSON.stringify(ms)}`);
    check(serve.resources?.requests?.cpu, "fsps-serve has no CPU request for the HPA to measure against");
  } else {
    check(ds.replicas === v.replicas, `the Deployment's replicas ${ds.replicas}, expected ${v.replicas}`);
  }
  // The Service: the serving port, named grpc, to the serving pods alone.
  const svc = serveSvcs[0];
  if (check(svc, "no Service in front of the serving pods")) {
    check((svc.spec.type ?? "ClusterIP") === (v.serviceType ?? "ClusterIP"), `the serving Service's type ${svc.spec.type}, expected ${v.serviceType ?? "ClusterIP"}`);
    check(svc.spec.clusterIP !== "None", "the serving Service is headless");
    check(matches(svc.spec.selector, tpl.metadata.labels), "the serving Service does not select the serving pods");
    for (const [what, labels] of [["server", sc_.template.metadata.labels], ["worker", js.template.metadata.labels], ["helm test", testPod.metadata.labels]])
      check(!matches(svc.spec.selector, labels), `the serving Service selects ${what} pods`);
    const sp = svc.spec.ports.find((p) => p.name === "grpc");
    check(sp && sp.port === servePort && sp.targetPort === "grpc" && sp.appProtocol === "grpc",
          `the serving Service's grpc port ${JSON.stringify(sp)} does not lead to the container's grpc port ${servePort}`);
    for (const m of byKind.ServiceMonitor || []) check(!matches(m.spec.selector.matchLabels, svc.metadata.labels), "the ServiceMonitor selects the serving Service");
  }
  for (const m of byKind.PodMonitor || []) check(!matches(m.spec.selector.matchLabels, tpl.metadata.labels), "the PodMonitor selects the serving pods");
  // Metrics: only with serve.metrics (and metrics.enabled), as the others.
  serveMetricsPort = (serve.ports || []).find((p) => p.name === "metrics");
  if (v.metrics) {
    check(serveMetricsPort?.containerPort === metricsPort?.containerPort, "fsps-serve's metrics port is not the servers'");
    check(val(serveEnv, "FSPS_METRICS_LISTEN") === `0.0.0.0:${serveMetricsPort?.containerPort}`,
          `fsps-serve's FSPS_METRICS_LISTEN ${val(serveEnv, "FSPS_METRICS_LISTEN")}, expected 0.0.0.0:${serveMetricsPort?.containerPort}`);
    const mp = svc?.spec.ports.find((p) => p.name === "metrics");
    check(mp && mp.targetPort === "metrics" && mp.port === serveMetricsPort?.containerPort, "the serving Service's metrics port does not lead to fsps-serve's");
  } else {
    check(!serveMetricsPort && serveEnv.FSPS_METRICS_LISTEN === undefined, "fsps-serve serves metrics without serve.metrics");
  }
  check(!argv.some((a) => /metrics/.test(a)), "fsps-serve: a metrics flag on the command line (the chart sets FSPS_METRICS_LISTEN)");
  check(val(serveEnv, "OPENBLAS_NUM_THREADS") !== undefined, "fsps-serve's OpenBLAS threads are not set");
  // NetworkPolicy: the serving port (and metrics) open, nothing else; the
  // servers' gRPC port admits the serving pods.
  if (sc.networkPolicy) {
    const pol = nps.filter((n) => matches(n.spec.podSelector.matchLabels, tpl.metadata.labels));
    if (check(pol.length === 1, `${pol.length} NetworkPolicies select the serving pods, expected 1`)) {
      const n = pol[0].spec;
      check(n.policyTypes?.includes("Ingress"), "the serving NetworkPolicy does not police ingress");
      const ports = n.ingress.flatMap((x) => (x.ports || []).map((p) => p.port)).sort();
      const want = (v.metrics ? [servePort, serveMetricsPort?.containerPort] : [servePort]).sort();
      check(!n.ingress.some((x) => !(x.ports || []).length) && JSON.stringify(ports) === JSON.stringify(want),
            `the serving pods accept connections on ports [${ports}], expected [${want}]`);
      const rule = n.ingress.find((x) => x.ports?.some((p) => p.port === servePort)) || {};
      check((rule.from || []).length === (v.from ?? 0), `the serving port admits ${(rule.from || []).length} peer(s), expected ${v.from ?? 0} (0: any)`);
    }
    if (v.source === "servers") {
      const snp = nps.find((n) => matches(n.spec.podSelector.matchLabels, sc_.template.metadata.labels));
      const r = (snp?.spec.ingress || []).find((x) => x.ports?.some((p) => p.port === grpcPort));
      check((r?.from || []).some((p) => matches(p.podSelector?.matchLabels, tpl.metadata.labels)), "the servers' NetworkPolicy keeps the serving pods from the gRPC port");
    }
  }
  if (!failed) ok(`serving: Deployment ${dep.metadata.name} (${v.hpa ? `HPA ${v.hpa.min}..${v.hpa.max} at ${v.hpa.cpu}% CPU` : `${v.replicas} replicas`}) from ${v.source === "servers" ? flags["--servers"] : `claim ${v.claim} at ${flags["--checkpoint-dir"]}`}, gRPC and probes on ${servePort}`);
}

// ---- 3c. TLS and tokens ----------------------------------------------------
// Each process's files from Secrets: [{path, secret, key, mode}], with
// subPathExpr resolved from the container's variables (fields: what the
// downward API would give). Mounts of Secrets must be read-only, list
// their items (so the test knows each file), and be unreadable by others.
function secretFiles(podSpec, c, fields) {
  const vols = Object.fromEntries((podSpec.volumes || []).map((v) => [v.name, v]));
  const vars = {};
  for (const e of c.env || [])
    vars[e.name] = e.value ?? fields[e.valueFrom?.fieldRef?.fieldPath];
  const out = [];
  for (const m of c.volumeMounts || []) {
    const sec = vols[m.name]?.secret;
    if (!sec) continue;
    const where = `${c.name}: Secret ${sec.secretName} at ${m.mountPath}`;
    check(m.readOnly === true, `${where} is not mounted read-only`);
    if (!check(Array.isArray(sec.items) && sec.items.length, `${where} lists no items`)) continue;
    const file = (it, p) => {
      const mode = it.mode ?? sec.defaultMode;
      check(Number.isInteger(mode) && (mode & 0o007) === 0 && (mode & 0o040) !== 0,
            `${where}: ${it.key} has mode ${mode?.toString(8)}: others may read it, or the group (fsGroup) may not`);
      out.push({ path: p, secret: sec.secretName, key: it.key, mode });
    };
    if (m.subPathExpr !== undefined || m.subPath !== undefined) {
      const sub = m.subPath ?? m.subPathExpr.replace(/\$\((\w+)\)/g, (_, v) => vars[v] ?? `$(${v})`);
      const it = sec.items.find((i) => i.path === sub);
      if (check(it, `${where}: subpath ${sub} is none of its items`)) file(it, m.mountPath);
    } else {
      for (const it of sec.items) file(it, `${m.mountPath}/${it.path}`);
    }
  }
  return out;
}
const fileOf = (files, e, n) => files.find((f) => f.path === val(e, n));
const rankFields = (r) => ({ "metadata.annotations['batch.kubernetes.io/job-completion-index']": String(r) });
const procs = [
  ...[...Array(S).keys()].map((i) => ({ name: `server-${i}`, kind: "server", spec: sc_.template.spec, c: server,
    fields: { "metadata.labels['apps.kubernetes.io/pod-index']": String(i) } })),
  ...[...Array(W).keys()].map((r) => ({ name: `worker-${r}`, kind: "worker", rank: r, spec: js.template.spec, c: worker, fields: rankFields(r) })),
  ...(init ? [{ name: "init", kind: "client", spec: js.template.spec, c: init, fields: rankFields(0) }] : []),
  { name: "test", kind: "client", spec: testPod.spec, c: testPod.spec.containers[0], fields: {} },
  // fsps-serve: a client of the servers with source servers; with source
  // checkpoint it talks to no server and holds no TLS file or token.
  ...(dep ? [{ name: "serve", kind: sc.serve.source === "servers" ? "serve" : "offline", spec: dep.spec.template.spec, c: serve, fields: {} }] : []),
];
for (const p of procs) {
  p.env = env(p.c);
  p.files = secretFiles(p.spec, p.c, p.fields);
}
const srv0 = procs[0];
const serverCert = fileOf(srv0.files, srv0.env, "FSPS_TLS_CERT");
const serverSecret = serverCert?.secret;
const content = new Map(); // "secret key" -> what the smoke run puts there
const what = (f, w) => f && content.set(`${f.secret} ${f.key}`, w);
const tlsVars = ["FSPS_TLS_CA", "FSPS_TLS_CERT", "FSPS_TLS_KEY", "FSPS_TLS_SERVER_NAME", "FSPS_TLS_CLIENT_CA", "FSPS_HEALTH_LISTEN"];
if (sc.tls) {
  for (const p of procs.filter((x) => x.kind === "server")) {
    const cert = fileOf(p.files, p.env, "FSPS_TLS_CERT"), key = fileOf(p.files, p.env, "FSPS_TLS_KEY");
    const ca = fileOf(p.files, p.env, "FSPS_TLS_CLIENT_CA");
    check(cert?.key === "tls.crt" && key?.key === "tls.key" && cert.secret === key.secret,
          `${p.name}: FSPS_TLS_CERT/FSPS_TLS_KEY are not tls.crt and tls.key of one mounted Secret`);
    if (sc.tls.mutual) check(ca?.key === "ca.crt" && ca.secret === cert?.secret, `${p.name}: mutual TLS without FSPS_TLS_CLIENT_CA = its Secret's ca.crt`);
    else check(p.env.FSPS_TLS_CLIENT_CA === undefined, `${p.name}: FSPS_TLS_CLIENT_CA without mutual TLS`);
    what(cert, "server.crt"); what(key, "server.key"); what(ca, "ca.crt");
    for (const f of p.files) if (f.secret === serverSecret && !content.has(`${f.secret} ${f.key}`))
      what(f, { "tls.crt": "server.crt", "tls.key": "server.key", "ca.crt": "ca.crt" }[f.key]);
  }
  for (const p of procs.filter((x) => x.kind === "offline"))
    for (const n of tlsVars) check(p.env[n] === undefined && !p.files.length, `${p.name}: TLS files (${n}) without servers to dial`);
  for (const p of procs.filter((x) => x.kind !== "server" && x.kind !== "offline")) {
    const ca = fileOf(p.files, p.env, "FSPS_TLS_CA");
    check(ca?.key === "ca.crt", `${p.name}: FSPS_TLS_CA is not a mounted ca.crt`);
    what(ca, "ca.crt");
    check(!p.files.some((f) => f.secret === serverSecret && f.key === "tls.key"), `${p.name}: mounts the servers' private key`);
    const cert = fileOf(p.files, p.env, "FSPS_TLS_CERT"), key = fileOf(p.files, p.env, "FSPS_TLS_KEY");
    if (sc.tls.mutual) {
      check(cert?.key === "tls.crt" && key?.key === "tls.key" && cert.secret === key.secret && cert.secret !== serverSecret,
            `${p.name}: mutual TLS without its own client Secret's tls.crt and tls.key`);
      what(cert, "client.crt"); what(key, "client.key");
    } else {
      check(!cert && !key, `${p.name}: a client certificate without mutual TLS`);
    }
    check(val(p.env, "FSPS_TLS_SERVER_NAME") === sc.tls.serverName,
          `${p.name}: FSPS_TLS_SERVER_NAME ${val(p.env, "FSPS_TLS_SERVER_NAME")}, expected ${sc.tls.serverName}`);
  }
  if (!failed) ok(`TLS${sc.tls.mutual ? " (mutual)" : ""}: servers serve Secret ${serverSecret}'s certificate, every client checks it with ca.crt`);
} else {
  for (const p of procs)
    for (const n of tlsVars) check(p.env[n] === undefined, `${p.name}: ${n} without TLS`);
}
if (sc.auth) {
  for (const p of procs) {
    if (p.kind === "server") {
      const t = fileOf(p.files, p.env, "FSPS_AUTH_TOKENS");
      check(t, `${p.name}: FSPS_AUTH_TOKENS is not a file of a mounted Secret`);
      check(!p.files.some((f) => f.secret === t?.secret && f !== t), `${p.name}: mounts other files of the tokens' Secret`);
      what(t, "tokens");
    } else if (p.kind === "worker") {
      const t = fileOf(p.files, p.env, "FSPS_TOKEN_FILE");
      const want = p.rank === 0 || sc.auth.workerRole === "admin" ? "admin.token" : "worker.token";
      check(t, `${p.name}: FSPS_TOKEN_FILE is not a file of a mounted Secret`);
      check(!p.files.some((f) => f.secret === t?.secret && f !== t), `${p.name}: sees other ranks' token files`);
      if (t) {
        const prev = content.get(`${t.secret} ${t.key}`);
        check(!prev || prev === want, `${p.name}: its token ${t.key} serves as ${prev} and ${want}`);
        what(t, want);
      }
    } else if (p.kind === "serve") {
      // Serving reads the model: the worker token (serve.tokenKey), never
      // the admin one rank 0 declares the model with.
      const t = fileOf(p.files, p.env, "FSPS_TOKEN_FILE");
      const want = sc.serve.tokenKey ?? "worker.token";
      const rank0 = procs.find((x) => x.kind === "worker" && x.rank === 0);
      const adminKey = fileOf(rank0.files, rank0.env, "FSPS_TOKEN_FILE")?.key;
      check(t?.key === want, `${p.name}: FSPS_TOKEN_FILE is ${t ? `key ${t.key}` : "not a file of a mounted Secret"}, expected the worker token ${want}`);
      check(t && t.key !== adminKey, `${p.name}: mounts the admin token (${adminKey}) rank 0 declares the model with`);
      check(!p.files.some((f) => f.secret === t?.secret && f !== t), `${p.name}: sees other token files`);
      if (t) {
        const prev = content.get(`${t.secret} ${t.key}`);
        check(!prev || prev === "worker.token", `${p.name}: its token ${t.key} serves as ${prev} and worker.token`);
        what(t, "worker.token");
      }
    } else if (p.kind === "offline") {
      check(p.env.FSPS_TOKEN_FILE === undefined && p.env.FSPS_TOKEN === undefined, `${p.name}: a token without servers to dial`);
    } else {
      check(p.env.FSPS_TOKEN_FILE === undefined, `${p.name}: a token for a health check`);
    }
  }
  const roles = procs.filter((p) => p.kind === "worker").map((p) => content.get(`${fileOf(p.files, p.env, "FSPS_TOKEN_FILE")?.secret} ${fileOf(p.files, p.env, "FSPS_TOKEN_FILE")?.key}`));
  if (!failed) ok(`tokens: servers read their tokens file, workers ${roles.join(", ")}${dep ? `, fsps-serve ${sc.serve.source === "servers" ? "worker.token" : "none"}` : ""}`);
} else {
  for (const p of procs)
    for (const n of ["FSPS_AUTH_TOKENS", "FSPS_TOKEN_FILE", "FSPS_TOKEN"]) check(p.env[n] === undefined, `${p.name}: ${n} without auth`);
}
for (const p of procs)
  for (const f of p.files) check(content.has(`${f.secret} ${f.key}`), `${p.name}: ${f.path} (${f.secret} ${f.key}) is used by nothing`);

// cert-manager Certificates: the servers' with every name the workers dial.
const certs = byKind.Certificate || [];
const wantCerts = sc.tls?.certManager ? (sc.tls.mutual ? 2 : 1) : 0;
check(certs.length === wantCerts, `${certs.length} Certificates, expected ${wantCerts}`);
const certFields = new Set(["secretName", "commonName", "dnsNames", "duration", "renewBefore", "privateKey", "usages", "issuerRef"]);
const covers = (names, h) => names.includes(h) || names.includes(`*.${h.split(".").slice(1).join(".")}`);
for (const c of certs) {
  const id = `Certificate/${c.metadata.name}`;
  const extra = Object.keys(c.spec || {}).filter((k) => !certFields.has(k));
  check(!extra.length, `${id}: fields the chart does not mean to set: ${extra}`);
  check(c.spec.issuerRef?.name && ["Issuer", "ClusterIssuer"].includes(c.spec.issuerRef.kind), `${id}: no issuerRef`);
  if (c.spec.secretName === serverSecret) {
    check(c.spec.usages?.includes("server auth"), `${id}: no server auth usage`);
    for (const h of dnsNames) check(covers(c.spec.dnsNames || [], h), `${id}: does not name ${h}`);
    if (sc.tls.serverName) check(c.spec.dnsNames.includes(sc.tls.serverName), `${id}: does not name ${sc.tls.serverName}`);
  } else {
    const cl = procs.find((p) => p.kind === "worker");
    check(c.spec.secretName === fileOf(cl.files, cl.env, "FSPS_TLS_CERT")?.secret, `${id}: its Secret ${c.spec.secretName} is neither the servers' nor the workers'`);
    check(c.spec.usages?.includes("client auth"), `${id}: no client auth usage`);
  }
}
if (certs.length && !failed) ok(`cert-manager: ${certs.map((c) => c.spec.secretName).join(", ")}`);

// ---- 4. emit what smoke.sh runs ------------------------------------------
function resolveEnv(c, fields) {
  const out = [];
  for (const e of c.env || []) {
    if (e.value !== undefined) out.push(`${e.name}=${e.value}`);
    else if (e.valueFrom?.fieldRef && fields[e.valueFrom.fieldRef.fieldPath] !== undefined)
      out.push(`${e.name}=${fields[e.valueFrom.fieldRef.fieldPath]}`);
    else fail(`cannot resolve ${e.name} outside a cluster: ${JSON.stringify(e.valueFrom)}`);
  }
  return out;
}
if (args.emit && !failed) {
  const dir = args.emit;
  fs.mkdirSync(dir, { recursive: true });
  const lines = (l) => (l.length ? l.join("\n") + "\n" : "");
  // Server i answers on 127.0.1.(i+1); the hosts file gives it its DNS name.
  fs.writeFileSync(path.join(dir, "hosts"),
    lines(["127.0.0.1 localhost", ...dnsNames.map((h, i) => `127.0.1.${i + 1} ${h}`)]));
  for (let i = 0; i < S; i++)
    fs.writeFileSync(path.join(dir, `server-${i}.env`), lines(resolveEnv(server, {
      "metadata.labels['apps.kubernetes.io/pod-index']": String(i) })));
  for (let r = 0; r < W; r++)
    fs.writeFileSync(path.join(dir, `worker-${r}.env`), lines(resolveEnv(worker, {
      "metadata.annotations['batch.kubernetes.io/job-completion-index']": String(r) })));
  if (init) fs.writeFileSync(path.join(dir, "init.cmd"), lines(init.command));
  fs.writeFileSync(path.join(dir, "test.cmd"), lines(testCmd));
  fs.writeFileSync(path.join(dir, "init.env"), lines(init ? resolveEnv(init, {}) : []));
  fs.writeFileSync(path.join(dir, "test.env"), lines(resolveEnv(testPod.spec.containers[0], {})));
  // The files each process finds in its Secrets, and what each holds.
  for (const p of procs)
    fs.writeFileSync(path.join(dir, `${p.name}.files`), lines(p.files.map((f) => `${f.path} ${f.secret} ${f.key} ${f.mode.toString(8)}`)));
  fs.writeFileSync(path.join(dir, "probe"), `${probePort}\n`);
  fs.writeFileSync(path.join(dir, "secrets"), lines([...content].map(([k, w]) => `${k} ${w}`)));
  fs.writeFileSync(path.join(dir, "counts"), `${S} ${W} ${grpcPort} ${sc.metrics ? metricsPort.containerPort : 0}\n`);
  // fsps-serve: its rendered command and variables, and what smoke.sh must
  // know: the source, the serving (= probe) port, its metrics port (0:
  // none) and where it reads checkpoints ("-": from the servers).
  if (dep) {
    fs.writeFileSync(path.join(dir, "serve.cmd"), lines([...serve.command, ...(serve.args || [])]));
    fs.writeFileSync(path.join(dir, "serve.env"), lines(resolveEnv(serve, {})));
    fs.writeFileSync(path.join(dir, "serve.info"),
      `${sc.serve.source} ${serve.readinessProbe.grpc.port} ${serveMetricsPort?.containerPort ?? 0} ${sc.serve.source === "servers" ? "-" : sc.serve.mountPath}\n`);
  }
}

console.log(failed ? `validate.mjs ${tag}: ${failed} failed` : `validate.mjs ${tag}: ${objs.length} objects, all checks passed`);
process.exit(failed ? 1 : 0);
