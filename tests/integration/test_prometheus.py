#!/usr/bin/python3
"""A real Prometheus (Debian's prometheus) scraping a live 2-server,
2-worker training run every second, checked through its HTTP API:

- /api/v1/targets lists the 4 processes, every one healthy, and the query
  `up` is 1 for each;
- the layer versions (fsps_layer_version), the workers' steps and sample
  counters (fsps_worker_samples_total) rise over the samples Prometheus
  stored, and increase()/delta() over them are positive;
- every PromQL query of the Helm chart's Grafana dashboard (each panel
  target's expr, and the variables' queries; promql.dashboard_queries, as
  test_dashboard.py lists them) evaluates through /api/v1/query without
  error and with a non-empty result. Each target carries the labels
  namespace, release and pod, as the chart's ServiceMonitor and PodMonitor
  give them, and $namespace and $release are filled in with those values;
  Grafana's $__rate_interval, $__interval and $__range become 10s (ten 1 s
  scrapes). The run causes what some series wait for: the servers have
  --checkpoint-dir and write one checkpoint on `fsps-ctl checkpoint` (the
  checkpoint age and duration panels keep only servers that wrote one),
  and a worker with another model is refused (fsps_rejected_requests_total
  has a series only once a request was refused). The other counters
  (rollbacks, checkpoint failures, duplicate pushes, failed steps,
  recoveries) are served at 0 from the start, so their queries are
  non-empty without the event: no query may be empty.

`promtool check metrics` on every process's output is test_metrics.py's
(ClusterMetricsTest, on the same kind of run); the processes are started
by the harness both share (metrics_harness.py).

Usage: test_prometheus.py --bin BUILD_DIR [--prometheus PATH] [--dashboard FILE]
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from metrics_harness import DIE_WITH_PARENT, Cluster  # noqa: E402
import promql  # noqa: E402

ARGS = None
WAIT_S = 180  # for each thing Prometheus must come to see, under load
SCRAPES = 5   # samples each rising series must have
# The target labels that the chart's monitors attach (the operator's
# namespace and pod, the chart's release), and so the dashboard's
# $namespace and $release.
NAMESPACE, RELEASE = "fsps-ci", "fsps"
# Grafana's windows for a 1 s scrape interval: a rate needs >= 2 samples in
# its window, and 10 s holds 10 when the machine keeps up.
WINDOWS = {"__rate_interval": "10s", "__interval": "10s", "__range": "10s"}


def free_port():
    """A loopback port free now; Prometheus cannot be told to pick one and
    say which, so another process may take it first (Prometheus.start
    tries again then)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusFailed(AssertionError):
    pass


class Prometheus:
    """Debian's prometheus on a free loopback port, scraping each job's
    targets ({job: {pod: port}}) every second, each with the labels
    namespace, release and pod; its storage and log in tmp."""

    def __init__(self, tmp, jobs):
        self.tmp = tmp
        self.config = os.path.join(tmp, "prometheus.yml")
        self.tsdb = os.path.join(tmp, "tsdb")
        self.log_path = os.path.join(tmp, "prometheus.log")
        self.proc = None
        with open(self.config, "w") as f:  # JSON is YAML
            json.dump({
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {"job_name": job, "static_configs": [
                        {"targets": ["127.0.0.1:%d" % port],
                         "labels": {"namespace": NAMESPACE,
                                    "release": RELEASE, "pod": pod}}
                        for pod, port in pods.items()]}
                    for job, pods in jobs.items()]}, f)
        p = subprocess.run(["promtool", "check", "config", self.config],
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            raise PrometheusFailed("promtool check config:\n" + p.stdout +
                                   p.stderr)

    def start(self, attempts=5):
        for _ in range(attempts):
            self.port = free_port()
            self.log = open(self.log_path, "w")
            self.proc = subprocess.Popen(
                DIE_WITH_PARENT +
                [ARGS.prometheus, "--config.file=" + self.config,
                 "--storage.tsdb.path=" + self.tsdb,
                 "--web.listen-address=127.0.0.1:%d" % self.port],
                cwd=self.tmp, stdout=self.log, stderr=subprocess.STDOUT)
            if self.wait_ready():
                return
            self.stop()
            if "address already in use" not in self.tail():
                raise PrometheusFailed("prometheus exited with %s:\n%s" %
                                       (self.proc.returncode, self.tail()))
        raise PrometheusFailed("prometheus found no free port in %d tries"
                               % attempts)

    def wait_ready(self):
        """True once this Prometheus answers /-/ready (another process
        that took the port does not count); False if it exited."""
        deadline = time.monotonic() + WAIT_S
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise PrometheusFailed("prometheus not ready in %d s:\n%s" %
                                       (WAIT_S, self.tail()))
            try:
                # a short timeout: a process that took the port may never
                # answer
                if (self.get("/-/ready", raw=True, timeout=5) and
                        self.api("status/flags")["storage.tsdb.path"] ==
                        self.tsdb):
                    return True
            except (OSError, ValueError, KeyError, PrometheusFailed):
                pass
            time.sleep(0.2)
        return False

    def get(self, path, raw=False, timeout=60, **params):
        url = "http://127.0.0.1:%d%s" % (self.port, path)
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=timeout) as r:
            body = r.read().decode()
        return body if raw else json.loads(body)

    def call(self, what, **params):
        """The JSON answer of /api/v1/WHAT, an error's too (Prometheus
        answers 400 or 422 to a query it cannot run); fails clearly if
        Prometheus exited."""
        if self.proc.poll() is not None:
            raise PrometheusFailed("prometheus exited with %s:\n%s" %
                                   (self.proc.returncode, self.tail()))
        try:
            return self.get("/api/v1/" + what, **params)
        except urllib.error.HTTPError as e:
            return json.loads(e.read().decode() or "{}")

    def api(self, what, **params):
        """The data of /api/v1/WHAT; fails if Prometheus refused the call."""
        doc = self.call(what, **params)
        if doc.get("status") != "success":
            raise PrometheusFailed("/api/v1/%s %s: %s" % (what, params, doc))
        return doc["data"]

    def evaluate(self, q):
        """(error, series) of the instant query q: Prometheus's error
        message (None if it ran) and the number of series (or 1 for a
        scalar or string) it returned."""
        doc = self.call("query", query=q)
        if doc.get("status") != "success":
            return "%s: %s" % (doc.get("errorType"), doc.get("error")), 0
        data = doc["data"]
        return None, (len(data["result"]) if data["resultType"] in
                      ("vector", "matrix") else 1)

    def query(self, q):
        """{(name, instance, layer): value or [values]} of an instant query."""
        out = {}
        for r in self.api("query", query=q)["result"]:
            m = r["metric"]
            key = (m.get("__name__"), m.get("instance"), m.get("layer"))
            out[key] = (float(r["value"][1]) if "value" in r else
                        [float(v) for _, v in r["values"]])
        return out

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def tail(self, lines=40):
        with open(self.log_path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])


def dashboard_queries():
    """[(where, expr)] of the dashboard's queries (promql.py lists them as
    test_dashboard.py does), Grafana's variables filled in for this run."""
    with open(ARGS.dashboard) as f:
        return [(where, promql.substitute(
            expr, value=None, ranges=WINDOWS,
            variables={"namespace": NAMESPACE, "release": RELEASE}))
            for where, expr in promql.dashboard_queries(json.load(f))]


def poll(what, check, c, timeout=WAIT_S):
    """check() until its first value is true (returned); fails naming what
    and check's last answer, or at once if a process of cluster c exited."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got[0]:
            return got[0]
        for p in c.procs:
            if p.proc.poll() is not None:
                raise AssertionError("%s exited (%s) before Prometheus saw %s"
                                     % (p.tag, p.proc.poll(), what))
        if time.monotonic() > deadline:
            raise AssertionError("Prometheus did not see %s in %d s; last: %s"
                                 % (what, timeout, got[1]))
        time.sleep(0.5)


class PrometheusTest(unittest.TestCase):
    def test_prometheus_scrapes_a_training_run(self):
        self.queries = dashboard_queries()  # a bad variable fails first
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = os.path.join(tmp, "ckpt")
            with Cluster(ARGS.bin, tmp,
                         server_extra=["--checkpoint-dir", ckpt]) as c:
                prom = Prometheus(tmp, {
                    "fsps-server": {p.tag: p.port for p in c.servers},
                    "fsps-worker": {p.tag: p.port for p in c.workers}})
                try:
                    prom.start()
                    self.check(c, prom)
                except BaseException:
                    self.explain(prom)
                    raise
                finally:
                    prom.stop()

    def explain(self, prom):
        """What Prometheus said, for a failure's log."""
        if prom.proc is None:
            return
        sys.stderr.write("--- prometheus (exit %s), last lines:\n%s" %
                         (prom.proc.poll(), prom.tail()))
        try:
            for t in prom.api("targets")["activeTargets"]:
                sys.stderr.write("target %s: %s %s\n" % (
                    t["scrapeUrl"], t["health"], t["lastError"]))
        except Exception as e:  # Prometheus gone: its log says why
            sys.stderr.write("no targets from prometheus: %r\n" % e)

    def check(self, c, prom):
        urls = {"http://127.0.0.1:%d/metrics" % p.port: job
                for job, ps in (("fsps-server", c.servers),
                                ("fsps-worker", c.workers)) for p in ps}
        self.check_targets(prom, c, urls)
        self.check_up(prom, c)
        self.check_rising(prom, c)
        # What the dashboard's checkpoint and rejected-request series wait
        # for; the refused worker only once training runs.
        c.wait_steps(6)
        c.checkpoint()
        c.refused_worker()
        self.check_dashboard(prom, c)

    def check_targets(self, prom, c, urls):
        def healthy():
            got = {t["scrapeUrl"]: (t["labels"]["job"], t["health"],
                                    t["lastError"])
                   for t in prom.api("targets", state="active")
                   ["activeTargets"]}
            return all(got.get(u, ("", ""))[:2] == (job, "up")
                       for u, job in urls.items()) and len(got) == 4, got
        poll("all 4 targets healthy", healthy, c)

    def check_up(self, prom, c):
        want = {("up", "127.0.0.1:%d" % p.port, None): 1.0 for p in c.procs}

        def up():
            got = prom.query("up")
            return got == want, got
        poll("up == 1 for all 4", up, c)

    def check_rising(self, prom, c):
        names = "fsps_layer_version|fsps_worker_samples_total|fsps_worker_step"
        want = ({("fsps_layer_version", "127.0.0.1:%d" % p.port, layer)
                 for p in c.servers for layer in ("0", "1")} |
                {(n, "127.0.0.1:%d" % p.port, None) for p in c.workers
                 for n in ("fsps_worker_samples_total", "fsps_worker_step")})

        def rising():
            got = prom.query('{__name__=~"%s"}[5m]' % names)
            for k, vs in got.items():  # versions and counters never fall
                self.assertEqual(vs, sorted(vs), k)
            return (set(got) == want and
                    all(len(vs) >= SCRAPES and vs[-1] > vs[0]
                        for vs in got.values()),
                    {k: (len(vs), vs[0], vs[-1]) for k, vs in got.items()})
        poll("versions, steps and samples rise over %d scrapes" % SCRAPES,
             rising, c)
        # the same through PromQL's functions
        inc = prom.query("increase(fsps_worker_samples_total[5m]) > 0")
        self.assertEqual(len(inc), 2, inc)
        delta = prom.query("delta(fsps_layer_version[5m]) > 0")
        self.assertEqual(len(delta), 4, delta)

    def check_dashboard(self, prom, c):
        """Every query of the dashboard runs, and each returns a series at
        least once in WAIT_S (a scrape that a loaded process answers late
        leaves a gap, which can empty a 10 s window for a moment). An error
        fails at once: it does not go away."""
        queries = self.queries
        self.assertGreater(len(queries), 0, "the dashboard has no queries")
        last = [None] * len(queries)  # (error, series) of each, last asked

        def table():
            """Each query without a series: where, what ran, and what
            Prometheus said."""
            bad = ["\n  %s\n    %s\n    -> %s" % (
                where, expr, "error: " + got[0] if got[0] else "empty")
                for (where, expr), got in zip(queries, last) if not got[1]]
            return "".join(bad) + "\n  (%d other queries returned series)" % (
                len(queries) - len(bad))

        def evaluate():
            for i, (_, expr) in enumerate(queries):
                if last[i] is None or not last[i][1]:
                    last[i] = prom.evaluate(expr)
            if any(err for err, _ in last):
                raise AssertionError("dashboard queries Prometheus could "
                                     "not run (and those still empty "
                                     "then):" + table())
            return all(n for _, n in last), table()
        poll("a series for each of the dashboard's %d queries" % len(queries),
             evaluate, c)
        sys.stderr.write("\n%d dashboard queries, each non-empty\n" %
                         len(queries))


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--prometheus", default="/usr/bin/prometheus")
    ap.add_argument("--dashboard", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "..", "deploy",
        "helm", "fsps", "dashboards", "fsps.json"))
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
