#!/usr/bin/python3
"""/metrics end to end: real fsps-server and fsps-worker processes with
--metrics-listen 127.0.0.1:0, scraped over HTTP.

- On a 2-server, 2-worker run, every process's scrape passes
  `promtool check metrics`, and between two scrapes the layer versions,
  the servers' byte counters and the workers' steps, samples and bytes
  moved rise.
- A scrape as the server starts and while it shuts down answers or fails
  cleanly (never a malformed answer).
- Scrapes in a tight loop while fsps-ctl rolls a training cluster back:
  each answers whole or fails cleanly, never hangs, and the scrapes after
  the rollback show the rolled-back versions and fsps_rollbacks_total.
- A metrics port in use or an address not this machine's: a clear error,
  a non-zero exit, and the gRPC port is never opened (no half start).

Usage: test_metrics.py --bin BUILD_DIR
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from metrics_harness import (DIE_WITH_PARENT, Cluster, Proc,  # noqa: E402
                             families, parse, promtool, scrape, total,
                             wait_file)
import metrics_harness  # noqa: E402

ARGS = None


def server_argv(tmp, s, S, W, extra=()):
    return metrics_harness.server_argv(ARGS.bin, tmp, s, S, W, extra)


def worker_argv(servers, r, W):
    return metrics_harness.worker_argv(ARGS.bin, servers, r, W)


def ctl(*args):
    """Runs fsps-ctl; returns (exit code, stdout, stderr)."""
    r = subprocess.run([os.path.join(ARGS.bin, "ctl", "fsps-ctl")] +
                       list(args), capture_output=True, text=True,
                       timeout=120)
    return r.returncode, r.stdout, r.stderr


class ClusterMetricsTest(unittest.TestCase):
    def test_scrapes_rise_and_pass_promtool(self):
        with tempfile.TemporaryDirectory() as tmp:
            with Cluster(ARGS.bin, tmp) as c:
                self.run_cluster(c)

    def run_cluster(self, c):
        c.wait_steps(5)
        first = {p.tag: scrape(p.port) for p in c.procs}
        c.wait_steps(parse(first["worker0"])[("fsps_worker_step", "")] + 5)
        second = {p.tag: scrape(p.port) for p in c.procs}
        for tag, text in second.items():
            rc, out = promtool(text)
            self.assertEqual(rc, 0, "promtool on %s:\n%s" % (tag, out))
        for p in c.servers:
            self.check_server(parse(first[p.tag]), parse(second[p.tag]))
        for p in c.workers:
            self.check_worker(parse(first[p.tag]), parse(second[p.tag]))

    def check_server(self, a, b):
        versions = [(k, v) for k, v in b.items() if k[0] == "fsps_layer_version"]
        self.assertEqual(len(versions), 2, b)  # mlp:784,128,10: two layers
        for k, v in versions:
            self.assertGreater(v, a[k], "%s did not rise" % (k,))
        for name in ("fsps_received_bytes_total", "fsps_sent_bytes_total",
                     "fsps_push_duration_seconds_count",
                     "fsps_pull_duration_seconds_count",
                     "fsps_optimizer_seconds_total"):
            self.assertGreater(total(b, name), total(a, name), name)
        self.assertGreater(b[("fsps_pushes_total", '{result="counted"}')], 0)
        for name in ("process_cpu_seconds_total",
                     "process_resident_memory_bytes", "process_open_fds",
                     "process_start_time_seconds"):
            self.assertGreater(b[(name, "")], 0, name)

    def check_worker(self, a, b):
        for name in ("fsps_worker_step", "fsps_worker_samples_total",
                     "fsps_worker_network_wait_seconds_total"):
            self.assertGreater(b[(name, "")], a[(name, "")], name)
        for d in ("gathered", "pushed"):
            k = ("fsps_worker_moved_bytes_total", '{direction="%s"}' % d)
            self.assertGreater(b[k], a[k], d)
        self.assertGreater(b[("fsps_worker_samples_per_second", "")], 0)
        self.assertGreater(b[("fsps_worker_peak_buffer_bytes", "")], 0)
        frac = b[("fsps_worker_network_wait_ratio", "")]
        self.assertTrue(0 <= frac <= 1, frac)


class LifecycleTest(unittest.TestCase):
    def scrape_or_refused(self, port):
        """A scrape answers 200 with well-formed text, or the connection is
        refused or closed: never anything else. Returns whether it answered."""
        try:
            text = scrape(port, timeout=5)
        except (ConnectionError, urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            self.assertIsInstance(reason, (ConnectionError, OSError), repr(e))
            return False
        parse(text)
        return True

    def test_scrape_at_start_and_during_shutdown(self):
        with tempfile.TemporaryDirectory() as tmp:
            p = Proc(tmp, "server", server_argv(tmp, 0, 1, 1))
            try:
                # The metrics port is written before the gRPC one: this
                # scrape may come while the server is still starting.
                self.assertTrue(self.scrape_or_refused(p.port))
                wait_file(os.path.join(tmp, "port-0"), p.proc, "server")
                p.proc.send_signal(signal.SIGTERM)
                answered = 0
                while p.proc.poll() is None:
                    answered += self.scrape_or_refused(p.port)
                self.assertEqual(p.proc.wait(), 0)
                self.assertFalse(self.scrape_or_refused(p.port))
            finally:
                p.stop()


class Hammer(threading.Thread):
    """Scrapes the given ports in turn, as fast as they answer, until
    halted. Each scrape is answered (a complete, well-formed 200 answer:
    every line parses, it ends with a newline and it declares every metric
    family the port's previous answer did: a family, once shown, stays),
    refused (a clean connection error) or bad (anything else, a hang
    included: no answer within HANG_S)."""
    HANG_S = 30

    def __init__(self, ports):
        super().__init__(daemon=True)
        self.ports = ports
        self.halt = threading.Event()
        self.answered = []  # (port, start, end) of each answered scrape
        self.refused = 0
        self.bad = []  # (port, what went wrong)
        self.want = {}  # port -> the families of its last answer

    def run(self):
        while not self.halt.is_set():
            for port in self.ports:
                self.once(port)

    def once(self, port):
        start = time.monotonic()
        try:
            text = scrape(port, timeout=self.HANG_S)
        except (ConnectionError, urllib.error.URLError) as e:
            if isinstance(getattr(e, "reason", e), ConnectionError):
                self.refused += 1
            else:
                self.bad.append((port, repr(e)))
            return
        except Exception as e:  # a timeout, a cut answer, a bad header
            self.bad.append((port, repr(e)))
            return
        try:
            parse(text)
            got = families(text)
            lost = self.want.get(port, set()) - got
            assert not lost, "families missing: %s" % sorted(lost)
            self.want[port] = got
        except AssertionError as e:
            self.bad.append((port, str(e)))
            return
        self.answered.append((port, start, time.monotonic()))


class RollbackScrapeTest(unittest.TestCase):
    """Servers scraped in a tight loop while fsps-ctl rolls a training
    2-server, 2-worker cluster back three times: every scrape answers
    whole or fails cleanly, and the scrapes after each rollback show its
    versions and one more rollback. The workers are paused (SIGSTOP) for
    the rollbacks, so that the versions are exactly the rolled-back ones,
    and then recover and train on."""
    EVERY = 10  # --checkpoint-every

    def test_scrape_during_rollback(self):
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = os.path.join(tmp, "ckpt")
            os.mkdir(ckpt)
            extra = ["--checkpoint-dir", ckpt, "--checkpoint-every",
                     str(self.EVERY), "--keep", "1000"]
            with Cluster(ARGS.bin, tmp, server_extra=extra,
                         model="mlp:784,32,10") as c:
                hammer = Hammer([p.port for p in c.servers])
                hammer.start()
                try:
                    self.roll_back(c, hammer)
                finally:
                    hammer.halt.set()
                    hammer.join(Hammer.HANG_S + 30)
                self.assertFalse(hammer.is_alive(), "a scrape hangs")
                self.assertEqual(hammer.bad[:5], [], "%d bad scrapes of %d"
                                 % (len(hammer.bad), len(hammer.answered) +
                                    hammer.refused + len(hammer.bad)))

    def roll_back(self, c, hammer):
        targets = self.wait_checkpoints(c, 3)
        for w in c.workers:
            w.pause()
        start = time.monotonic()
        for n, version in enumerate(targets, 1):
            code, out, err = ctl("rollback", "--servers", c.addrs,
                                 "--version", str(version))
            self.assertEqual(code, 0, err)
            self.assertIn("rolled 2 server(s) back to version %d" % version,
                          out)
            for p in c.servers:
                self.check_rolled_back(parse(scrape(p.port)), version, n)
        end = time.monotonic()
        for p in c.servers:
            during = [a for a in hammer.answered
                      if a[0] == p.port and a[2] > start and a[1] < end]
            self.assertTrue(during, "no scrape of %s during the rollbacks"
                            % p.tag)
            sys.stderr.write("%s: %d scrapes answered during the rollbacks\n"
                             % (p.tag, len(during)))
        for w in c.workers:
            w.resume()
        self.wait_recovered(c, targets[-1])

    def check_rolled_back(self, m, version, n):
        versions = [v for (name, _), v in m.items()
                    if name == "fsps_layer_version"]
        self.assertEqual(versions, [version, version])
        self.assertEqual(m[("fsps_rollbacks_total", "")], n)
        # the step the rollback left waits for both workers, on both layers
        self.assertEqual(total(m, "fsps_layer_missing_workers"), 4)

    def status(self, c):
        code, out, err = ctl("status", "--servers", c.addrs, "--json")
        self.assertEqual(code, 0, err)
        return json.loads(out)["servers"]

    def wait_checkpoints(self, c, n, timeout=180):
        """The n newest versions of which both servers hold a checkpoint,
        all below every layer's version, newest first."""
        deadline = time.monotonic() + timeout
        while True:
            servers = self.status(c)
            # a server the workers have not initialised yet holds no layer
            versions = [l["version"] for s in servers for l in s["layers"]]
            lo = min(versions, default=0)
            held = set.intersection(*(set(s["checkpoints"]) for s in servers))
            below = sorted((v for v in held if 0 < v < lo), reverse=True)
            if len(below) >= n and all(s["layers"] for s in servers):
                return below[:n]
            for w in c.workers:
                self.assertIsNone(w.proc.poll(), "%s stopped" % w.tag)
            self.assertLess(time.monotonic(), deadline,
                            "no %d checkpoints in %d s: %s" % (n, timeout,
                                                               servers))
            time.sleep(0.2)

    def wait_recovered(self, c, version, timeout=180):
        """Polls until every worker recovered and the layers moved past
        version; the workers' recoveries made no rollback of their own."""
        deadline = time.monotonic() + timeout
        while True:
            ws = [parse(scrape(w.port)) for w in c.workers]
            ss = [parse(scrape(p.port)) for p in c.servers]
            lo = min(v for m in ss for (name, _), v in m.items()
                     if name == "fsps_layer_version")
            if (all(m[("fsps_worker_recoveries_total", "")] >= 1 for m in ws)
                    and lo > version + self.EVERY):
                break
            for w in c.workers:
                self.assertIsNone(w.proc.poll(), "%s stopped" % w.tag)
            self.assertLess(time.monotonic(), deadline,
                            "no recovery in %d s: layers at %d" % (timeout, lo))
            time.sleep(0.2)
        for m in ss:
            self.assertEqual(m[("fsps_rollbacks_total", "")], 3)


class BadAddressTest(unittest.TestCase):
    def refused(self, argv, addr, expect):
        with tempfile.TemporaryDirectory() as tmp:
            grpc_port = os.path.join(tmp, "port-0")
            p = subprocess.run(DIE_WITH_PARENT + argv(tmp) +
                               ["--metrics-listen", addr],
                               capture_output=True, timeout=60)
            err = p.stderr.decode()
            self.assertNotEqual(p.returncode, 0, err)
            self.assertIn(expect, err)
            self.assertIn(addr, err)
            self.assertFalse(os.path.exists(grpc_port), "half started")

    def test_port_in_use(self):
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        addr = "127.0.0.1:%d" % held.getsockname()[1]
        try:
            self.refused(lambda tmp: server_argv(tmp, 0, 1, 1), addr,
                         "Address already in use")
            self.refused(lambda tmp: worker_argv("127.0.0.1:1", 0, 1), addr,
                         "Address already in use")
        finally:
            held.close()

    def test_address_not_here(self):
        # 192.0.2.0/24 is TEST-NET-1: no machine of ours has it.
        self.refused(lambda tmp: server_argv(tmp, 0, 1, 1), "192.0.2.1:9100",
                     "Cannot assign requested address")
        self.refused(lambda tmp: server_argv(tmp, 0, 1, 1), "localhost",
                     "is not host:port")


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
