#!/usr/bin/python3
"""Logs and pictures end to end: real fsps-server and fsps-worker processes
on loopback, on Fashion-MNIST.

- With --log-format json every line either process writes on stderr is one
  JSON object with time (RFC 3339, UTC, milliseconds), level, process,
  index or rank, message and fields; awkward text (quotes, backslashes,
  control characters, UTF-8, bytes that are not UTF-8) stays valid JSON.
- fsps-worker --log-jsonl writes a progress line per tick and an epoch line
  per epoch, and scripts/plot.py draws them into a PNG.
- Text logs keep their format; bad --log-format values and bad plot.py
  input give clear errors.

Usage: test_logs.py --bin BUILD_DIR --src SOURCE_DIR
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LEVELS = {"error", "warn", "info", "debug"}


# Every child is started through setpriv(1) with PDEATHSIG set, so that no
# server or worker outlives its test. Not with a preexec_fn doing prctl:
# that makes subprocess fork() the test process and run Python in the
# child, which hung a launch for good now and then under load.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]


def binary(name):
    sub = "server" if name == "fsps-server" else "worker"
    return os.path.join(ARGS.bin, sub, name)


def start_server(tmp, s, S, W, *flags, env=None):
    pf = os.path.join(tmp, "port-%d-%d" % (s, time.monotonic_ns()))
    err = open(os.path.join(tmp, "server-%d-%d.err" % (s, time.monotonic_ns())),
               "w+b")
    p = subprocess.Popen(
        DIE_WITH_PARENT +
        [binary("fsps-server"), "--listen", "127.0.0.1:0", "--index", str(s),
         "--num-servers", str(S), "--workers", str(W), "--port-file", pf]
        + list(flags), stderr=err, env=env)
    deadline = time.monotonic() + 30
    while not os.path.exists(pf):
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            raise RuntimeError("fsps-server %d did not start" % s)
        time.sleep(0.02)
    with open(pf) as f:
        return p, err, int(f.read())


def stop_server(p, err):
    """SIGTERM, exit 0 expected; returns its stderr as bytes."""
    p.send_signal(signal.SIGTERM)
    code = p.wait(timeout=60)
    err.seek(0)
    data = err.read()
    err.close()
    return code, data


def json_lines(data, who):
    """Each stderr line as a dict, checked for the keys every line has;
    strict UTF-8, as a log stack reads them."""
    recs = []
    for n, raw in enumerate(data.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw.decode("utf-8"))
        except ValueError as e:
            raise AssertionError("%s line %d is not JSON: %r (%s)" %
                                 (who, n, raw, e))
        for key in ("time", "level", "process", "message", "fields"):
            if key not in rec:
                raise AssertionError("%s line %d lacks %s: %r" %
                                     (who, n, key, raw))
        assert TIME.match(rec["time"]), rec["time"]
        assert rec["level"] in LEVELS, rec["level"]
        assert isinstance(rec["message"], str) and rec["message"], raw
        assert isinstance(rec["fields"], dict), raw
        recs.append(rec)
    return recs


def run_plot(*args):
    return subprocess.run(
        ["/usr/bin/python3", os.path.join(ARGS.src, "scripts", "plot.py")]
        + list(args), capture_output=True, text=True, timeout=120)


def check_png(test, path):
    with open(path, "rb") as f:
        data = f.read()
    test.assertEqual(data[:8], b"\x89PNG\r\n\x1a\n")
    test.assertGreater(len(data), 10000)  # three panels drawn, not blank
    test.assertLess(len(data), 500000)


class JsonTrainingTest(unittest.TestCase):
    """A short real run, servers and workers in JSON, drawn by plot.py."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def start_cluster(self, S, W):
        servers = [start_server(self.tmp.name, s, S, W, "--log-format", "json")
                   for s in range(S)]
        return servers, ",".join("127.0.0.1:%d" % p for _, _, p in servers)

    def run_workers(self, addrs, W):
        procs = []
        for r in range(W):
            env = dict(os.environ, FSPS_LOG_FORMAT="json")  # the variable too
            procs.append(subprocess.Popen(
                DIE_WITH_PARENT +
                [binary("fsps-worker"), "--servers", addrs, "--rank", str(r),
                 "--world", str(W), "--model", "mlp:784,64,10",
                 "--train-limit", "2560", "--batch", "32", "--epochs", "2",
                 "--normalize", "--progress-secs", "0.05", "--log-jsonl",
                 os.path.join(self.tmp.name, "rank%d.jsonl" % r)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env))
        outs = []
        try:
            for r, p in enumerate(procs):
                out, err = p.communicate(timeout=300)
                self.assertEqual(p.returncode, 0, err)
                outs.append((json.loads(out.splitlines()[-1]), err))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
        return outs

    def check_jsonl(self, path, rank, steps_per_epoch):
        with open(path, encoding="utf-8") as f:
            lines = [json.loads(line) for line in f]
        progress = [x for x in lines if x["event"] == "progress"]
        epochs = [x for x in lines if x["event"] == "epoch"]
        self.assertEqual(len(lines), len(progress) + len(epochs))
        self.assertGreaterEqual(len(progress), 2)
        self.assertEqual([e["epoch"] for e in epochs], [1, 2])
        self.assertEqual([e["step"] for e in epochs],
                         [steps_per_epoch, 2 * steps_per_epoch])
        for x in lines:
            self.assertTrue(TIME.match(x["time"]), x)
            self.assertEqual(x["rank"], rank)
            for key in ("step", "epoch", "loss", "samples_per_s",
                        "wait_fraction"):
                self.assertIsInstance(x[key], (int, float), (key, x))
            self.assertGreater(x["samples_per_s"], 0)
            self.assertTrue(0 <= x["wait_fraction"] <= 1, x)
        steps = [x["step"] for x in lines]
        self.assertEqual(steps, sorted(steps))
        for e in epochs:  # only rank 0 evaluates
            if rank == 0:
                self.assertGreater(e["test_accuracy"], 0.5)
            else:
                self.assertIsNone(e["test_accuracy"])
        self.assertLess(epochs[-1]["loss"], progress[0]["loss"])

    def test_json_logs_and_picture(self):
        servers, addrs = self.start_cluster(2, 2)
        try:
            outs = self.run_workers(addrs, 2)
        finally:
            stopped = [stop_server(p, e) for p, e, _ in servers]
        for s, (code, data) in enumerate(stopped):
            self.assertEqual(code, 0)
            recs = json_lines(data, "server %d" % s)
            self.assertTrue(all(r["process"] == "fsps-server" and
                                r["index"] == s and r["num_servers"] == 2
                                for r in recs))
            up = [r for r in recs if r["message"].startswith("serving on")]
            self.assertEqual(len(up), 1)
            self.assertEqual(up[0]["fields"]["port"], servers[s][2])
            self.assertIn(up[0]["fields"]["optim_isa"],
                          ("portable", "avx2", "avx512"))
            self.assertEqual(recs[-1]["message"], "stopped")
        for r, (done, err) in enumerate(outs):
            recs = json_lines(err, "worker %d" % r)
            self.assertTrue(all(x["process"] == "fsps-worker" and
                                x["rank"] == r for x in recs))
            ticks = [x for x in recs if "eta_s" in x["fields"]]
            self.assertGreaterEqual(len(ticks), 2)
            self.assertEqual(ticks[-1]["fields"]["step"], done["steps"])
        acc = [x for x in json_lines(outs[0][1], "worker 0")
               if "test_accuracy" in x["fields"]]
        self.assertEqual([x["fields"]["epoch"] for x in acc], [1, 2])
        self.assertAlmostEqual(acc[-1]["fields"]["test_accuracy"],
                               outs[0][0]["test_accuracy"], places=4)
        steps_per_epoch = 2560 // 64
        paths = [os.path.join(self.tmp.name, "rank%d.jsonl" % r)
                 for r in range(2)]
        for r, path in enumerate(paths):
            self.check_jsonl(path, r, steps_per_epoch)
        png = os.path.join(self.tmp.name, "run.png")
        p = run_plot(*paths, "-o", png)
        self.assertEqual(p.returncode, 0, p.stderr)
        check_png(self, png)


class AwkwardTextTest(unittest.TestCase):
    """Messages holding what JSON must escape, and bytes that are not
    UTF-8, stay one valid JSON object per line."""

    def test_awkward_checkpoint_dir(self):
        with tempfile.TemporaryDirectory() as tmp:
            name = b'ck "q" \\b\\\\s\tt\x01\nn \xc3\xa9\xe6\x97\xa5\xf0\x9f\x98\x80 \xff end'
            path = os.path.join(tmp.encode(), name)
            os.mkdir(path)
            p, err, _ = start_server(tmp, 0, 1, 1, "--checkpoint-dir", path,
                                     "--log-format", "json")
            code, data = stop_server(p, err)
        self.assertEqual(code, 0)
        recs = json_lines(data, "server")
        want = name.decode("utf-8", errors="replace")  # \xff -> U+FFFD
        self.assertTrue(any(want in r["message"] for r in recs),
                        [r["message"] for r in recs])
        self.assertEqual(len(data.splitlines()), len(recs))  # no line split


class TextAndFlagsTest(unittest.TestCase):

    def test_text_stays_the_default(self):
        with tempfile.TemporaryDirectory() as tmp:
            p, err, port = start_server(tmp, 0, 1, 1)
            code, data = stop_server(p, err)
        self.assertEqual(code, 0)
        first = data.decode().splitlines()[0]
        self.assertRegex(first, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
                         r"INFO  \[server 0/1\] serving on 127\.0\.0\.1:0 "
                         r"\(port %d\)" % port)

    def test_bad_values(self):
        for cmd, env in (
                ([binary("fsps-server"), "--log-format", "xml"], None),
                ([binary("fsps-server")], {"FSPS_LOG_FORMAT": "yaml"}),
                ([binary("fsps-worker"), "--servers", "x", "--log-format",
                  "xml"], None),
                ([binary("fsps-worker"), "--servers", "x"],
                 {"FSPS_LOG_FORMAT": "JSON"})):
            p = subprocess.run(cmd, capture_output=True, text=True,
                               env=dict(os.environ, **(env or {})),
                               timeout=60)
            self.assertEqual(p.returncode, 2, (cmd, p.stderr))
            self.assertRegex(p.stderr, r"FSPS_LOG_FORMAT|--log-format")

    def test_unwritable_jsonl(self):
        p = subprocess.run(
            [binary("fsps-worker"), "--servers", "127.0.0.1:1",
             "--synthetic", "256", "--log-jsonl", "/nonexistent/dir/x.jsonl"],
            capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 2)
        self.assertIn("cannot write --log-jsonl /nonexistent/dir/x.jsonl",
                      p.stderr)


class PlotBadInputTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()

    def tearDown(self):
        self.tmp.cleanup()

    def file(self, name, text):
        path = os.path.join(self.tmp.name, name)
        with open(path, "wb") as f:
            f.write(text.encode() if isinstance(text, str) else text)
        return path

    def fails(self, path, why):
        out = os.path.join(self.tmp.name, "x.png")
        p = run_plot(path, "-o", out)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(path, p.stderr)
        self.assertRegex(p.stderr, why)
        self.assertNotIn("Traceback", p.stderr)
        self.assertFalse(os.path.exists(out))

    def test_bad_files(self):
        good = '{"event":"progress","step":1,"loss":2.0,"samples_per_s":5}\n'
        self.fails(os.path.join(self.tmp.name, "missing.jsonl"),
                   "cannot read")
        self.fails(self.file("empty.jsonl", ""), "is empty")
        self.fails(self.file("blank.jsonl", "\n \n"), "is empty")
        self.fails(self.file("junk.jsonl", good + "{not json\n"),
                   "line 2 is not JSON")
        self.fails(self.file("cut.jsonl", good + '{"event":"progress","st'),
                   "line 2 is not JSON")
        self.fails(self.file("list.jsonl", "[1,2]\n"), "line 1 is not a JSON "
                   "object")
        self.fails(self.file("noloss.jsonl",
                             '{"event":"epoch","step":3,"samples_per_s":1}\n'),
                   "line 1 .*'loss'")
        self.fails(self.file("strloss.jsonl", '{"event":"progress","step":3,'
                             '"loss":"x","samples_per_s":1}\n'), "'loss'")
        self.fails(self.file("other.jsonl", '{"event":"done","steps":4}\n'),
                   "no progress or epoch lines")
        self.fails(self.file("binary.jsonl", b"\xff\xfe\x00"), "not UTF-8")

    def test_usage(self):
        p = run_plot("--help")
        self.assertEqual(p.returncode, 0)
        self.assertIn("-o", p.stdout)
        p = run_plot(self.file("a.jsonl", "{}\n"))  # no -o
        self.assertEqual(p.returncode, 2)
        p = run_plot("-o", os.path.join(self.tmp.name, "x.png"))  # no file
        self.assertEqual(p.returncode, 2)

    def test_unwritable_output(self):
        good = self.file("g.jsonl", '{"event":"progress","step":1,"loss":2,'
                         '"samples_per_s":5}\n')
        p = run_plot(good, "-o", "/nonexistent/dir/x.png")
        self.assertEqual(p.returncode, 1)
        self.assertIn("cannot write /nonexistent/dir/x.png", p.stderr)

    def test_two_runs_same_name(self):
        a = os.path.join(self.tmp.name, "a")
        b = os.path.join(self.tmp.name, "b")
        os.mkdir(a)
        os.mkdir(b)
        files = []
        for d, k in ((a, 1.0), (b, 2.0)):
            path = os.path.join(d, "worker0.jsonl")
            with open(path, "w") as f:
                for s in range(1, 6):
                    f.write(json.dumps({"event": "progress", "step": s * 10,
                                        "loss": k / s, "samples_per_s": 100 * s,
                                        "epoch": 1}) + "\n")
                f.write(json.dumps({"event": "epoch", "step": 50, "loss": 0.1,
                                    "samples_per_s": 500, "epoch": 1,
                                    "test_accuracy": 0.8}) + "\n")
            files.append(path)
        png = os.path.join(self.tmp.name, "two.png")
        p = run_plot(*files, "-o", png)
        self.assertEqual(p.returncode, 0, p.stderr)
        check_png(self, png)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--src", required=True)
    ARGS, rest = ap.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
