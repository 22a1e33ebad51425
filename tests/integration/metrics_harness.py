"""What the /metrics integration tests (test_metrics.py, test_prometheus.py,
test_dashboard.py, test_status_page.py) share: fsps-server and fsps-worker
processes started with --metrics-listen 127.0.0.1:0, a 2-server, 2-worker
training run (and the events some series wait for: a checkpoint, a refused
worker), scraping and parsing the text exposition format.

Every wait polls against a generous deadline (the tests run on a loaded
2-core CI machine, also under the sanitizers), never a fixed sleep.
"""
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$')
META = re.compile(r'^# (HELP|TYPE) [a-zA-Z_:][a-zA-Z0-9_:]* .+$')

# Every child is started through setpriv(1) with PDEATHSIG set, so that no
# server or worker outlives its test. Not with a preexec_fn doing prctl:
# that makes subprocess fork() the test process and run Python in the
# child, which hung a launch for good now and then under load.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]

START_S = 60  # a process's port file, under load and the sanitizers


def wait_file(path, proc, what, timeout=START_S):
    """The integer a process writes to path once listening."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path) or not os.path.getsize(path):
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
    """The text of one 200 answer of /metrics; raises on anything else."""
    status, ctype, body = fetch(port, "/metrics", timeout)
    assert status == 200, status
    assert ctype.startswith("text/plain; version=0.0.4"), ctype
    return body.decode()


def parse(text):
    """{(name, labels): value} of every sample line; every other line must
    be HELP or TYPE metadata, and the text must end with a newline."""
    assert text.endswith("\n"), "answer cut short: %r" % text[-80:]
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert META.match(line), "malformed line: %r" % line
            continue
        m = SAMPLE.match(line)
        assert m, "malformed line: %r" % line
        out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def families(text):
    """The metric names a scrape declares with # TYPE."""
    return {line.split()[2] for line in text.splitlines()
            if line.startswith("# TYPE ")}


def promtool(text):
    p = subprocess.run(["promtool", "check", "metrics"], input=text.encode(),
                       capture_output=True, timeout=60)
    return p.returncode, (p.stdout + p.stderr).decode()


def total(samples, name):
    return sum(v for (n, _), v in samples.items() if n == name)


class Proc:
    """One fsps process with --metrics-listen 127.0.0.1:0; its output goes
    to TAG.log in tmp."""

    def __init__(self, tmp, tag, argv, timeout=START_S):
        self.mport_file = os.path.join(tmp, "mport-" + tag)
        self.log_path = os.path.join(tmp, tag + ".log")
        self.log = open(self.log_path, "w+")
        self.proc = subprocess.Popen(
            DIE_WITH_PARENT + argv + ["--metrics-listen", "127.0.0.1:0",
                                      "--metrics-port-file", self.mport_file],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.tag = tag
        self.port = None
        try:
            self.port = wait_file(self.mport_file, self.proc, tag, timeout)
        except RuntimeError as e:
            self.stop()
            raise RuntimeError("%s; its output:\n%s" % (e, self.tail())) \
                from None

    def pause(self):
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        """SIGTERM (and SIGCONT, in case it was paused); SIGKILL after 60 s.
        Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.send_signal(signal.SIGCONT)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.log.close()

    def tail(self, lines=30):
        return "".join(self.logged().splitlines(True)[-lines:])

    def logged(self):
        if not self.log.closed:
            self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def sanitizer_report(self):
        """The first line of a sanitizer's report in the log, or None (a
        sanitized build reports races and memory errors there)."""
        for line in self.logged().splitlines():
            if "Sanitizer" in line or "runtime error:" in line:
                return line
        return None


def server_argv(bindir, tmp, s, S, W, extra=()):
    return [os.path.join(bindir, "server", "fsps-server"),
            "--listen", "127.0.0.1:0", "--index", str(s), "--num-servers",
            str(S), "--workers", str(W), "--log-level", "warn",
            "--port-file", os.path.join(tmp, "port-%d" % s)] + list(extra)


def worker_argv(bindir, servers, r, W, model="mlp:784,128,10"):
    """A worker that trains until stopped (a small model on synthetic data)."""
    return [os.path.join(bindir, "worker", "fsps-worker"),
            "--servers", servers, "--rank", str(r), "--world", str(W),
            "--model", model, "--synthetic", "4096",
            "--epochs", "100000", "--batch", "32", "--no-eval",
            "--progress-secs", "1000"]


class Cluster:
    """S servers and W workers training, each with /metrics; a context
    manager that stops them all (workers first) however the block ends,
    prints the tail of every log when it ends with an exception, and fails
    if a process did not stop as it should."""

    def __init__(self, bindir, tmp, S=2, W=2, server_extra=(),
                 model="mlp:784,128,10"):
        self.bindir, self.tmp, self.S, self.W = bindir, tmp, S, W
        self.server_extra, self.model = server_extra, model
        self.servers, self.workers = [], []

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.__exit__(*sys.exc_info())
            raise
        return self

    def start(self):
        for s in range(self.S):
            self.servers.append(Proc(self.tmp, "server%d" % s, server_argv(
                self.bindir, self.tmp, s, self.S, self.W, self.server_extra)))
        self.addrs = ",".join("127.0.0.1:%d" % wait_file(
            os.path.join(self.tmp, "port-%d" % s), p.proc, "server%d" % s)
            for s, p in enumerate(self.servers))
        for r in range(self.W):
            self.workers.append(Proc(self.tmp, "worker%d" % r, worker_argv(
                self.bindir, self.addrs, r, self.W, self.model)))

    @property
    def procs(self):
        return self.servers + self.workers

    def __exit__(self, etype, value, tb):
        if etype is not None:
            self.explain()
        codes = {p.tag: p.stop() for p in reversed(self.procs)}
        # A server stops cleanly on SIGTERM (0; a sanitizer's report at exit
        # makes it 1); a worker has no handler for it.
        want = dict({p.tag: 0 for p in self.servers},
                    **{p.tag: -signal.SIGTERM for p in self.workers})
        if etype is None and codes != want:
            self.explain()
            raise AssertionError("exit statuses %s, not %s" % (codes, want))
        return False

    def explain(self):
        for p in self.procs:
            sys.stderr.write("--- %s (exit %s), last lines:\n%s" %
                             (p.tag, p.proc.poll(), p.tail()))

    def checkpoint(self):
        """fsps-ctl checkpoint: every server writes one checkpoint file
        (the servers need --checkpoint-dir)."""
        p = subprocess.run(DIE_WITH_PARENT + [
            os.path.join(self.bindir, "ctl", "fsps-ctl"), "checkpoint",
            "--servers", self.addrs, "--timeout", "120"],
            capture_output=True, timeout=300)
        assert p.returncode == 0, "fsps-ctl checkpoint: exit %d: %s" % (
            p.returncode, (p.stdout + p.stderr).decode(errors="replace"))

    def refused_worker(self):
        """A rank-0 worker with another model: its Init is refused
        (FAILED_PRECONDITION, counted in fsps_rejected_requests_total), and
        it must exit non-zero. Only once training runs (wait_steps): before
        rank 0's Init it would declare its own model instead."""
        argv = worker_argv(self.bindir, self.addrs, 0, self.W,
                           model="mlp:784,16,10")
        p = subprocess.run(DIE_WITH_PARENT + argv, capture_output=True,
                           timeout=300)
        err = p.stderr.decode(errors="replace")
        assert p.returncode != 0 and "FAILED_PRECONDITION" in err, \
            "a worker with another model was not refused (exit %d): %s" % (
                p.returncode, err)

    def wait_steps(self, n, timeout=180):
        """Polls every worker's /metrics until each has made n steps."""
        deadline = time.monotonic() + timeout
        for w in self.workers:
            while parse(scrape(w.port)).get(("fsps_worker_step", ""), 0) < n:
                if w.proc.poll() is not None:
                    raise AssertionError("%s stopped (exit %s)" %
                                         (w.tag, w.proc.poll()))
                if time.monotonic() > deadline:
                    raise AssertionError("%s made no %d steps in %d s" %
                                         (w.tag, n, timeout))
                time.sleep(0.1)
