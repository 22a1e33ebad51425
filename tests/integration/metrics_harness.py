"""What the tests of the metrics address share (test_metrics.py,
test_status_page.py): real fsps-server and fsps-worker processes started
with --metrics-listen 127.0.0.1:0, their ports read from the port files,
and scrapes of /metrics parsed.

Every child is started through setpriv(1) with PDEATHSIG set, so that no
server or worker outlives its test. Not with a preexec_fn doing prctl:
that makes subprocess fork() the test process and run Python in the
child, which hung a launch for good now and then under load.
"""
import os
import re
import signal
import subprocess
import time
import urllib.request

DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')


def wait_file(path, proc, what, timeout=30):
    """The integer in path once the file exists; fails if proc stops or
    the file does not appear within timeout seconds."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("%s did not start (exit %s)" % (what, proc.poll()))
        time.sleep(0.02)
    with open(path) as f:
        return int(f.read())


def fetch(port, path, timeout=10):
    """(status, Content-Type, body as bytes) of GET path."""
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path),
                                timeout=timeout) as r:
        return r.status, r.headers["Content-Type"], r.read()


def scrape(port, timeout=10):
    status, ctype, body = fetch(port, "/metrics", timeout)
    assert status == 200, status
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return body.decode()


def parse(text):
    """{(name, labels): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "malformed line: %r" % line
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


class Proc:
    """One fsps process with --metrics-listen 127.0.0.1:0; its output goes
    to tmp/TAG.log."""

    def __init__(self, tmp, tag, argv, timeout=30):
        self.mport_file = os.path.join(tmp, "mport-" + tag)
        self.log = open(os.path.join(tmp, tag + ".log"), "w+")
        self.proc = subprocess.Popen(
            DIE_WITH_PARENT + argv + ["--metrics-listen", "127.0.0.1:0",
                                      "--metrics-port-file", self.mport_file],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.tag = tag
        self.port = wait_file(self.mport_file, self.proc, tag, timeout)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.log.close()

    def logged(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def sanitizer_report(self):
        """The first line of a sanitizer's report in the log, or None (a
        sanitized build reports races and memory errors there)."""
        for line in self.logged().splitlines():
            if "Sanitizer" in line or "runtime error:" in line:
                return line
        return None


def server_argv(bin_dir, tmp, s, S, W):
    return [os.path.join(bin_dir, "server", "fsps-server"),
            "--listen", "127.0.0.1:0", "--index", str(s), "--num-servers",
            str(S), "--workers", str(W), "--log-level", "warn",
            "--port-file", os.path.join(tmp, "port-%d" % s)]


def worker_argv(bin_dir, servers, r, W):
    """A worker that trains until it is stopped."""
    return [os.path.join(bin_dir, "worker", "fsps-worker"),
            "--servers", servers, "--rank", str(r), "--world", str(W),
            "--model", "mlp:784,128,10", "--synthetic", "4096",
            "--epochs", "100000", "--batch", "32", "--no-eval",
            "--progress-secs", "1000"]


def start_cluster(bin_dir, tmp, procs, S=2, W=2, timeout=30):
    """Starts S servers and W workers that train until stopped, each with
    --metrics-listen, appended to procs as they start (the caller stops
    them, in reverse). Returns (servers, workers)."""
    servers = []
    for s in range(S):
        servers.append(Proc(tmp, "server%d" % s,
                            server_argv(bin_dir, tmp, s, S, W), timeout))
        procs.append(servers[-1])
    addrs = ",".join("127.0.0.1:%d" % wait_file(
        os.path.join(tmp, "port-%d" % s), servers[s].proc, "server", timeout)
        for s in range(S))
    workers = []
    for r in range(W):
        workers.append(Proc(tmp, "worker%d" % r,
                            worker_argv(bin_dir, addrs, r, W), timeout))
        procs.append(workers[-1])
    return servers, workers


def stop_all(procs):
    """Stops procs, last first; returns {tag: exit status}."""
    return {p.tag: p.stop() for p in reversed(procs)}
