#!/usr/bin/python3
"""The Helm chart's Grafana dashboard (deploy/helm/fsps/dashboards/fsps.json)
against a live scrape: every metric that any of its PromQL expressions
reads (panels, variables, annotations) must be in the /metrics of a real
2-server, 2-worker training run, as a sample and not only declared.

The run is metrics_harness.py's cluster (its processes, scrape and parser,
and its exit-status check: servers 0 on SIGTERM, so a sanitizer's report
fails the test): servers with --checkpoint-dir, each writing one checkpoint
on `fsps-ctl checkpoint` (so the checkpoint series are real), and once
training runs, one more worker with another model, which the servers refuse
(so fsps_rejected_requests_total has a series). The dashboard must hold
queries (no vacuous pass), each reading at least one metric, each selector
picking $namespace and $release, and every expression, with Grafana's
variables filled in, must parse with promtool (Debian's prometheus).
promql.py's tokenizer is checked on its own first.

Usage: test_dashboard.py --bin BUILD_DIR --dashboard FILE
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import metrics_harness as harness  # noqa: E402
import promql  # noqa: E402

ARGS = None


class TokenizerTest(unittest.TestCase):
    """promql.metric_names on what dashboards write."""

    CASES = [
        ('histogram_quantile(0.99, sum by (le) (rate(a_bucket{x="1"}[5m] offset 1h)))', {"a_bucket"}),
        ('sum(rate(h_sum[$__rate_interval])) / sum(rate(h_count[${__rate_interval}]))', {"h_sum", "h_count"}),
        ("a and on (job, instance) group_left (c) (b or d)", {"a", "b", "d"}),
        ("sum(x) by (y) / ignoring (z) without_me", {"x", "without_me"}),
        ('{__name__=~"a|b", job="j"} unless {__name__="c"}', {"a", "b", "c"}),
        ('topk(5, foo) > bool 1e3', {"foo"}),
        ('count_values("by", m{by="sum"})', {"m"}),
        ("sum_over_time(m[1h:5m]) @ start()", {"m"}),
        ('label_replace(m, "dst", "$1", "src", "(.*)") * -Inf', {"m"}),
        ("time() - (t{a=~\"$v\"} > 0)", {"t"}),
        ("sum # a comment\n (by_metric)", {"by_metric"}),
    ]

    def test_names(self):
        for expr, names in self.CASES:
            self.assertEqual(promql.metric_names(expr), names, expr)

    def test_refuses(self):
        for expr in ("rat(m[5m])", "m{a=b}", "sum(m", "sum(m])", '{job="x"}',
                     '{__name__=~"fsps_.*"}', 'rate(m[5m]){a="b"}', "a b",
                     "sum by (x) 5 m", 'm{a="b"} offset 5m n'):
            with self.assertRaises(promql.PromQLError, msg=expr):
                promql.metric_names(expr)

    def test_grafana(self):
        d = {"panels": [{"title": "r", "type": "row", "panels": [
                 {"title": "p", "targets": [{"refId": "A", "expr": "a"}]}]}],
             "templating": {"list": [
                 {"type": "query", "name": "ns", "query": "label_values(b{x=\"1\"}, ns)"},
                 {"type": "query", "name": "j", "query": {"query": "label_values(job)"}},
                 {"type": "query", "name": "q", "definition": "query_result(sum(c))"}]},
             "annotations": {"list": [{"name": "n", "expr": "changes(d[5m])"}]}}
        got = {e for _, e in promql.dashboard_queries(d)}
        self.assertEqual(got, {"a", 'b{x="1"}', "sum(c)", "changes(d[5m])"})
        self.assertEqual(promql.substitute('rate(m{n=~"$ns"}[$__rate_interval])'),
                         'rate(m{n=~".*"}[1m])')
        self.assertEqual(promql.substitute(
            'increase(m{n=~"${ns:regex}", r=~"[[r]]"}[${__range}]) + label_replace(m, "d", "$1", "s", "(.*)")',
            value=None, variables={"ns": "a", "r": "b"}, ranges={"__range": "10s"}),
            'increase(m{n=~"a", r=~"b"}[10s]) + label_replace(m, "d", "$1", "s", "(.*)")')
        with self.assertRaises(promql.PromQLError):
            promql.substitute('m{n=~"$other"}', value=None, variables={"ns": "a"})


def load_dashboard():
    with open(ARGS.dashboard) as f:
        return json.load(f)


class LiveScrapeTest(unittest.TestCase):
    """The dashboard's queries against the /metrics of a real run."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = cls.enterClassContext(tempfile.TemporaryDirectory())
        ckpt = os.path.join(cls.tmp, "ckpt")  # files carry the server's index
        with harness.Cluster(ARGS.bin, cls.tmp, server_extra=["--checkpoint-dir", ckpt]) as c:
            # Steps first: a worker refused before rank 0's Init would have
            # declared its own model instead.
            c.wait_steps(6)
            c.checkpoint()
            c.refused_worker()
            cls.wait_until(lambda t: t["fsps_checkpoints_total"] >= 1,
                           "every server counted its checkpoint", c.servers)
            cls.wait_until(lambda t: t["fsps_rejected_requests_total"] >= 1,
                           "the servers counted the refused worker", c.servers, every=False)
            texts = {p.tag: harness.scrape(p.port) for p in c.procs}
        cls.samples = {tag: {n for n, _ in harness.parse(t)} for tag, t in texts.items()}
        cls.declared = {tag: harness.families(t) for tag, t in texts.items()}

    @classmethod
    def wait_until(cls, cond, what, procs, every=True, timeout=300):
        """Polls the procs' scrapes (totals by name) until cond holds for
        every one (or, every=False, for one); generous for a loaded CI."""
        deadline = time.monotonic() + timeout
        while True:
            held = []
            for p in procs:
                assert p.proc.poll() is None, "%s exited (%s)" % (p.tag, p.proc.poll())
                samples = harness.parse(harness.scrape(p.port))
                held.append(cond(Totals(samples)))
            if all(held) if every else any(held):
                return
            assert time.monotonic() < deadline, "not in %d s: %s" % (timeout, what)
            time.sleep(0.2)

    def all_samples(self):
        return set().union(*self.samples.values())

    def test_every_query_reads_live_metrics(self):
        queries = promql.dashboard_queries(load_dashboard())
        self.assertGreater(len(queries), 0, "the dashboard has no queries")
        live, declared = self.all_samples(), set().union(*self.declared.values())
        self.assertIn("fsps_layer_version", live)  # the scrape itself is live
        missing, read = [], set()
        for where, expr in queries:
            try:
                names = promql.metric_names(expr)
            except promql.PromQLError as e:
                missing.append("%s: not PromQL: %s" % (where, e))
                continue
            if not names:
                missing.append("%s reads no metric: %s" % (where, expr))
            read |= names
            for n in sorted(names - live):
                why = "declared, but no series" if n in declared else "in no scrape"
                missing.append("%s: %s (%s)\n    %s" % (where, n, why, expr))
        if missing:
            self.fail("queries of the dashboard that read metrics no fsps "
                      "process serves:\n  " + "\n  ".join(missing))
        print("\n%d queries read %d metrics, all in the live scrape of %s"
              % (len(queries), len(read), ", ".join(sorted(self.samples))), file=sys.stderr)

    def test_every_selector_picks_namespace_and_release(self):
        want = {("namespace", "=~", "$namespace"), ("release", "=~", "$release")}
        bad, queries = [], promql.dashboard_queries(load_dashboard())
        self.assertGreater(len(queries), 0, "the dashboard has no queries")
        for where, expr in queries:
            if where.startswith("variable"):
                continue  # $namespace's own query cannot pick $namespace
            try:
                sels = promql.selectors(expr)
            except promql.PromQLError as e:
                bad.append("%s: not PromQL: %s" % (where, e))
                continue
            for s in sels:
                if not want <= set(s.matchers):
                    bad.append("%s: %s%s" % (where, s.name, s.matchers))
        if bad:
            self.fail("selectors that do not pick $namespace and $release:\n  "
                      + "\n  ".join(bad))

    def test_promtool_parses_every_query(self):
        queries = promql.dashboard_queries(load_dashboard())
        self.assertGreater(len(queries), 0, "the dashboard has no queries")
        path = os.path.join(self.tmp, "dashboard-rules.yml")
        with open(path, "w") as f:
            f.write("groups:\n  - name: dashboard\n    rules:\n")
            for i, (where, expr) in enumerate(queries):
                # A JSON string is a YAML double-quoted scalar.
                f.write("      - record: dashboard:query_%d\n        expr: %s\n"
                        % (i, json.dumps(promql.substitute(expr))))
        p = subprocess.run(["promtool", "check", "rules", path], capture_output=True,
                           timeout=120)
        out = (p.stdout + p.stderr).decode()
        index = "\n".join("  query_%d: %s" % (i, w) for i, (w, _) in enumerate(queries))
        self.assertEqual(p.returncode, 0, "promtool check rules:\n%s\n%s" % (out, index))
        self.assertIn("SUCCESS: %d rules found" % len(queries), out)


class Totals:
    """A scrape's samples summed by metric name (0 when absent)."""

    def __init__(self, samples):
        self.samples = samples

    def __getitem__(self, name):
        return harness.total(self.samples, name)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--dashboard", required=True)
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
