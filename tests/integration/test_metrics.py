#!/usr/bin/python3
"""/metrics end to end: real fsps-server and fsps-worker processes with
--metrics-listen 127.0.0.1:0, scraped over HTTP.

- On a 2-server, 2-worker run, every process's scrape passes
  `promtool check metrics`, and between two scrapes the layer versions,
  the servers' byte counters and the workers' steps, samples and bytes
  moved rise.
- A scrape as the server starts and while it shuts down answers or fails
  cleanly (never a malformed answer).
- A metrics port in use or an address not this machine's: a clear error,
  a non-zero exit, and the gRPC port is never opened (no half start).

Usage: test_metrics.py --bin BUILD_DIR
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error

from metrics_harness import (DIE_WITH_PARENT, Proc, parse, scrape,
                             start_cluster, stop_all, wait_file)
import metrics_harness

ARGS = None


def promtool(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).decode()


def total(samples, name):
    return sum(v for (n, _), v in samples.items() if n == name)


def server_argv(tmp, s, S, W):
    return metrics_harness.server_argv(ARGS.bin, tmp, s, S, W)


def worker_argv(servers, r, W):
    return metrics_harness.worker_argv(ARGS.bin, servers, r, W)


class ClusterMetricsTest(unittest.TestCase):
    def test_scrapes_rise_and_pass_promtool(self):
        with tempfile.TemporaryDirectory() as tmp:
            procs = []
            try:
                self.run_cluster(tmp, procs)
            finally:
                stop_all(procs)

    def run_cluster(self, tmp, procs):
        servers, workers = start_cluster(ARGS.bin, tmp, procs, S=2, W=2)
        self.wait_steps(workers[0], 5)
        first = {p.tag: scrape(p.port) for p in procs}
        time.sleep(1.5)
        second = {p.tag: scrape(p.port) for p in procs}
        for tag, text in second.items():
            rc, out = promtool(text)
            self.assertEqual(rc, 0, "promtool on %s:\n%s" % (tag, out))
        for p in servers:
            self.check_server(parse(first[p.tag]), parse(second[p.tag]))
        for p in workers:
            self.check_worker(parse(first[p.tag]), parse(second[p.tag]))

    def wait_steps(self, w, n):
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.assertIsNone(w.proc.poll(), "the worker stopped")
            if parse(scrape(w.port)).get(("fsps_worker_step", ""), 0) >= n:
                return
            time.sleep(0.1)
        self.fail("the worker made no %d steps in 120 s" % n)

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
