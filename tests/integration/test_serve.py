#!/usr/bin/python3
"""fsps-serve (batch) and fsps-export end to end, on a model trained by a
real 2-server, 2-worker run on Fashion-MNIST with checkpoints.

- fsps-serve --checkpoint-dir scores the test set (CSV and JSON lines), with
  the accuracy from --labels; the same from the files re-sliced for S'=3.
- fsps-export writes safetensors; PyTorch's nn.Sequential loads it (through
  fsps.safetensors) and predicts the same classes, probabilities within
  1e-5 of fsps-serve's.
- Live --servers while training continues: versions non-decreasing and real.
- Online (no --input): SERVING on the gRPC health check; SIGTERM exits 0.
- Bad input: a missing file, a corrupt and an incomplete checkpoint folder,
  a spec fsps-serve cannot compute, a wrong-width and a NaN input: a clear
  error, exit 1, no output file left.

Usage: test_serve.py --bin BUILD_DIR (PYTHONPATH holding python/ and
FSPS_LIBRARY naming libfsps.so, for fsps.Spec)
"""
import argparse
import glob
import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

ARGS = None
DATA = "/usr/share/datasets/fashion-mnist"
IMAGES = os.path.join(DATA, "t10k-images-idx3-ubyte.gz")
LABELS = os.path.join(DATA, "t10k-labels-idx1-ubyte.gz")
MODEL = [784, 64, 10]
STEPS = 300

# Every child goes through setpriv(1) with PDEATHSIG (never a preexec_fn:
# it makes subprocess fork this threaded process), so none outlives the
# test.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]


def binary(*parts):
    return os.path.join(ARGS.bin, *parts)


class Servers:
    """S real fsps-servers on ephemeral loopback ports."""

    def __init__(self, tmp, S, W, *flags):
        self.procs, ports = [], []
        for s in range(S):
            pf = os.path.join(tmp, "port-%d-%d" % (s, time.monotonic_ns()))
            self.procs.append(subprocess.Popen(DIE_WITH_PARENT + [
                binary("server", "fsps-server"), "--listen", "127.0.0.1:0",
                "--index", str(s), "--num-servers", str(S), "--workers",
                str(W), "--port-file", pf, "--log-level", "warn"] +
                list(flags)))
            ports.append(pf)
        self.addrs = ",".join("127.0.0.1:%d" % self.wait_port(p, i)
                              for i, p in enumerate(ports))

    def wait_port(self, path, i):
        deadline = time.monotonic() + 60
        while not os.path.exists(path) or not os.path.getsize(path):
            if self.procs[i].poll() is not None or \
                    time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fsps-server %d did not start" % i)
            time.sleep(0.02)
        with open(path) as f:
            return int(f.read())

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        return [p.wait(timeout=60) for p in self.procs]


def workers(addrs, W, steps, extra=(), logdir=None):
    """W fsps-workers training; their output goes to pipes, or to
    worker<r>.log files in logdir (for runs that are killed, not
    finished)."""
    def out(r):
        if logdir is None:
            return subprocess.PIPE
        return open(os.path.join(logdir, "worker%d.log" % r), "w")
    return [subprocess.Popen(DIE_WITH_PARENT + [
        binary("worker", "fsps-worker"), "--servers", addrs, "--rank",
        str(r), "--world", str(W), "--model",
        "mlp:" + ",".join(map(str, MODEL)), "--batch", "32", "--lr", "0.002",
        "--max-steps", str(steps), "--no-eval", "--progress-secs", "1000"] +
        list(extra), stdout=out(r), stderr=subprocess.STDOUT if logdir else
        subprocess.PIPE, text=True)
        for r in range(W)]


def tails(logdir, W):
    text = ""
    for r in range(W):
        with open(os.path.join(logdir, "worker%d.log" % r)) as f:
            text += "--- worker %d:\n%s" % (r, "".join(f.readlines()[-10:]))
    return text


def finish(procs, timeout=600):
    for r, p in enumerate(procs):
        out, err = p.communicate(timeout=timeout)
        if p.returncode != 0:
            raise AssertionError("worker %d exited %d: %s" %
                                 (r, p.returncode, err))


def run(tool, *argv, timeout=300):
    """(exit status, stderr) of fsps-serve or fsps-export."""
    p = subprocess.run(DIE_WITH_PARENT + [binary("serve", tool)] +
                       list(argv), capture_output=True, text=True,
                       timeout=timeout)
    return p.returncode, p.stderr


def read_idx_images(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    n, rows, cols = (int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big")
                     for i in range(3))
    return np.frombuffer(data[16:], dtype=np.uint8).reshape(n, rows * cols)


def read_csv(path):
    with open(path) as f:
        head = f.readline().strip().split(",")
        rows = [line.strip().split(",") for line in f]
    idx = np.array([int(r[0]) for r in rows])
    cls = np.array([int(r[1]) for r in rows])
    probs = np.array([[float(v) for v in r[2:]] for r in rows])
    return head, idx, cls, probs


class ServeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        """Trains once: 2 servers checkpointing every 100 steps, 2 workers
        for STEPS steps; the servers stop (writing their final
        checkpoint)."""
        cls.tmp = tempfile.TemporaryDirectory()
        cls.ckpt = os.path.join(cls.tmp.name, "ckpt")
        os.mkdir(cls.ckpt)
        srv = Servers(cls.tmp.name, 2, 2, "--checkpoint-dir", cls.ckpt,
                      "--checkpoint-every", "100", "--keep", "3")
        try:
            finish(workers(srv.addrs, 2, STEPS))
        finally:
            codes = srv.stop()
        assert codes == [0, 0], codes
        cls.pixels = read_idx_images(IMAGES)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def path(self, name):
        return os.path.join(self.tmp.name, name)

    def leftovers(self, out):
        """Files named like out (its temporary name included)."""
        return glob.glob(out + "*")

    def serve_ok(self, *argv):
        rc, err = run("fsps-serve", *argv)
        self.assertEqual(rc, 0, err)
        return err

    def refused(self, tool, out, *argv, want):
        rc, err = run(tool, "--output", out, *argv)
        self.assertEqual(rc, 1, err)
        self.assertIn(want, err)
        self.assertEqual(self.leftovers(out), [], "output left behind")
        return err

    # ---- (a) batch scoring ----

    def test_batch_csv_and_jsonl_with_accuracy(self):
        out = self.path("a.csv")
        err = self.serve_ok("--checkpoint-dir", self.ckpt, "--input",
                            IMAGES, "--output", out, "--labels", LABELS,
                            "--max-batch", "100")
        self.assertIn("10000/10000 rows (100%)", err)
        self.assertIn("model version %d" % STEPS, err)
        acc = float(err.split("accuracy ")[1].split()[0])
        self.assertGreater(acc, 0.6, err)  # chance is 0.1
        head, idx, cls, probs = read_csv(out)
        self.assertEqual(head, ["index", "class"] +
                         ["p%d" % k for k in range(10)])
        self.assertEqual(list(idx), list(range(10000)))
        np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
        self.assertEqual(list(cls), list(probs.argmax(axis=1)))
        labels = np.frombuffer(gzip.open(LABELS).read()[8:], dtype=np.uint8)
        self.assertAlmostEqual((cls == labels).mean(), acc, places=4)
        # JSON lines, by extension, name the version; same predictions.
        outj = self.path("a.jsonl")
        self.serve_ok("--checkpoint-dir", self.ckpt, "--input", IMAGES,
                      "--output", outj, "--max-batch", "7")
        rows = [json.loads(line) for line in open(outj)]
        self.assertEqual(len(rows), 10000)
        self.assertEqual({r["version"] for r in rows}, {STEPS})
        self.assertEqual([r["class"] for r in rows], list(cls))
        np.testing.assert_allclose([r["probs"] for r in rows], probs,
                                   atol=1e-6)

    def test_older_version_and_any_S(self):
        """--checkpoint-version 100 differs from the newest; the files
        re-sliced for S'=3 score exactly as the S=2 ones."""
        out2, out3 = self.path("s2.csv"), self.path("s3.csv")
        old = self.path("v100.jsonl")
        self.serve_ok("--checkpoint-dir", self.ckpt, "--checkpoint-version",
                      "100", "--input", IMAGES, "--output", old)
        self.assertEqual({json.loads(line)["version"] for line in open(old)},
                         {100})
        to = self.path("ckpt3")
        p = subprocess.run(DIE_WITH_PARENT + [
            binary("server", "fsps-reslice"), "--from", self.ckpt, "--to", to,
            "--num-servers", "3"], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.serve_ok("--checkpoint-dir", self.ckpt, "--input", IMAGES,
                      "--output", out2)
        self.serve_ok("--checkpoint-dir", to, "--input", IMAGES, "--output",
                      out3)
        with open(out2) as a, open(out3) as b:
            self.assertEqual(a.read(), b.read())

    # ---- (b, c) export, and PyTorch on the exported file ----

    def test_export_loads_in_torch_with_the_same_predictions(self):
        import torch
        import fsps.safetensors
        st = self.path("model.safetensors")
        rc, err = run("fsps-export", "--checkpoint-dir", self.ckpt,
                      "--output", st)
        self.assertEqual(rc, 0, err)
        meta = fsps.safetensors.metadata(st)
        self.assertEqual(meta["model_version"], str(STEPS))
        self.assertEqual(meta["widths"], ",".join(map(str, MODEL)))
        state = fsps.safetensors.load(st)
        self.assertEqual({k: tuple(v.shape) for k, v in state.items()},
                         {"0.weight": (64, 784), "0.bias": (64,),
                          "2.weight": (10, 64), "2.bias": (10,)})
        net = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.ReLU(),
                                  torch.nn.Linear(64, 10))
        net.load_state_dict(state)
        x = torch.from_numpy(self.pixels.astype(np.float32) *
                             np.float32(1.0 / 255.0))
        with torch.no_grad():
            p = torch.softmax(net(x), dim=1).numpy()
        out = self.path("torch.csv")
        self.serve_ok("--checkpoint-dir", self.ckpt, "--input", IMAGES,
                      "--output", out)
        _, _, cls, probs = read_csv(out)
        self.assertEqual(list(cls), list(p.argmax(axis=1)))
        self.assertLess(np.abs(probs - p).max(), 1e-5)

    def test_f32_input_scores_as_the_idx_file(self):
        f32 = self.path("rows.f32")
        (self.pixels[:300].astype(np.float32) * np.float32(1 / 255.0)) \
            .tofile(f32)
        a, b = self.path("f32.csv"), self.path("idx.csv")
        self.serve_ok("--checkpoint-dir", self.ckpt, "--input", f32,
                      "--output", a)
        self.serve_ok("--checkpoint-dir", self.ckpt, "--input", IMAGES,
                      "--output", b)
        # The same rows; the last chunk holds 44 rows here, 64 there, and
        # BLAS may round a batch of another size differently.
        _, ia, ca, pa = read_csv(a)
        _, ib, cb, pb = read_csv(b)
        self.assertEqual(list(ia), list(ib[:300]))
        self.assertEqual(list(ca), list(cb[:300]))
        self.assertLess(np.abs(pa - pb[:300]).max(), 1e-6)
        with open(a) as fa, open(b) as fb:  # whole chunks: bit for bit
            self.assertEqual(fa.read().splitlines()[:257],
                             fb.read().splitlines()[:257])

    # ---- (d) live servers while training goes on ----

    def open_pipe(self, fifo, reader):
        """The fifo's writing end, once reader has opened it (failing, not
        hanging, if reader exits first)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                break
            except OSError:
                if reader.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("fsps-serve did not open its input "
                                         "(exit %s): %s" % (reader.poll(),
                                         reader.stderr.read()))
                time.sleep(0.02)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "wb")

    def test_live_servers_follow_training_and_survive_their_loss(self):
        """fsps-serve --servers scores rows fed through a pipe while two
        workers train 1500 steps: every row names a version, non-decreasing,
        none past the servers' last; after the servers are killed it goes on
        with the last version it had, says so, and finishes."""
        srv = Servers(self.tmp.name, 2, 2)
        ws = workers(srv.addrs, 2, 1500, ["--epochs", "100"],
                     logdir=self.tmp.name)
        fifo = self.path("rows.fifo")
        os.mkfifo(fifo)
        out = self.path("live.jsonl")
        try:
            # Once the workers declared the model (fsps-export waits for
            # it), fsps-serve may have a short deadline, so that it sees
            # the servers' loss quickly.
            rc, err = run("fsps-export", "--servers", srv.addrs, "--output",
                          self.path("first.safetensors"))
            self.assertEqual(rc, 0, err + tails(self.tmp.name, 2))
            serve = subprocess.Popen(DIE_WITH_PARENT + [
                binary("serve", "fsps-serve"), "--servers", srv.addrs,
                "--input", fifo, "--input-format", "f32", "--output", out,
                "--poll-ms", "20", "--max-batch", "16", "--timeout-ms",
                "2000", "--progress-secs", "0"],
                stderr=subprocess.PIPE, text=True)
            rows = (self.pixels.astype(np.float32) * np.float32(1 / 255.0))
            with self.open_pipe(fifo, serve) as pipe:
                for i in range(0, 6000, 500):  # while training goes on
                    pipe.write(rows[i:i + 500].tobytes())
                    pipe.flush()
                    time.sleep(0.05)
                # Training ends at a step boundary (a worker killed
                # mid-step would leave the layers at two versions, and no
                # snapshot of one version to take).
                for p in ws:
                    self.assertEqual(p.wait(timeout=600), 0,
                                     tails(self.tmp.name, 2))
                rc, err = run("fsps-export", "--servers", srv.addrs,
                              "--output", self.path("live.safetensors"))
                self.assertEqual(rc, 0, err + tails(self.tmp.name, 2))
                import fsps.safetensors
                last = int(fsps.safetensors.metadata(
                    self.path("live.safetensors"))["model_version"])
                for p in srv.procs:
                    p.kill()
                    p.wait()
                err_lines = []
                for line in serve.stderr:  # the outage is noticed
                    err_lines.append(line)
                    if "the servers do not answer" in line:
                        break
                self.assertTrue(err_lines and "still serving version" in
                                err_lines[-1], "".join(err_lines))
                pipe.write(rows[6000:].tobytes())
            rest = serve.stderr.read()
            serve.stderr.close()
            self.assertEqual(serve.wait(timeout=120), 0,
                             "".join(err_lines) + rest)
        finally:
            for p in ws + srv.procs + [locals().get("serve")]:
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
        got = [json.loads(line) for line in open(out)]
        self.assertEqual([r["index"] for r in got], list(range(10000)))
        versions = [r["version"] for r in got]
        self.assertEqual(versions, sorted(versions))
        self.assertGreater(len(set(versions)), 1, "did not follow training")
        self.assertEqual(last, 1500)
        self.assertLessEqual(versions[-1], last)
        # after the loss: the last version it had, to the end
        self.assertEqual(set(versions[6000:]), {versions[-1]})
        self.assertIn("wrote 10000 predictions", rest)

    # ---- online: fsps-serve's main hosts serve/online ----

    def test_online_mode_serves_and_stops_on_sigterm(self):
        """fsps-serve without --input: the gRPC health check of its port
        says SERVING once the checkpoint is loaded, /metrics (as the chart
        asks for it, FSPS_METRICS_LISTEN) the version; SIGTERM stops it,
        0."""
        pf = self.path("serve-port")
        p = subprocess.Popen(DIE_WITH_PARENT + [
            binary("serve", "fsps-serve"), "--checkpoint-dir", self.ckpt,
            "--listen", "127.0.0.1:0", "--port-file", pf],
            stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, FSPS_METRICS_LISTEN="127.0.0.1:0",
                     FSPS_METRICS_PORT_FILE=pf + ".metrics"))
        try:
            deadline = time.monotonic() + 60
            while not (os.path.exists(pf) and os.path.getsize(pf)):
                self.assertIsNone(p.poll(), "fsps-serve exited")
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.02)
            port = int(open(pf).read())
            h = subprocess.run(DIE_WITH_PARENT + [
                binary("tests", "fsps-health"), "127.0.0.1:%d" % port],
                capture_output=True, text=True, timeout=60)
            self.assertEqual(h.returncode, 0, h.stdout + h.stderr)
            self.assertIn("SERVING", h.stdout + h.stderr)
            mport = int(open(pf + ".metrics").read())
            import urllib.request
            with urllib.request.urlopen("http://127.0.0.1:%d/metrics" %
                                        mport, timeout=30) as r:
                text = r.read().decode()
            self.assertIn("\nfsps_serve_ready 1\n", text)
            self.assertIn("\nfsps_serve_model_version %d\n" % STEPS, text)
            self.assertIn("\nfsps_serve_requests_total 0\n", text)
        finally:
            p.send_signal(signal.SIGTERM)
            err = p.communicate(timeout=60)[1]
        self.assertEqual(p.returncode, 0, err)
        self.assertIn("serving 'fsps-mlp' on port %d" % port, err)

    # ---- (e) bad input ----

    def copy_ckpt(self, name, versions=None):
        to = self.path(name)
        os.mkdir(to)
        for f in os.listdir(self.ckpt):
            if versions is None or any(f.endswith("-v%020d.fsps" % v)
                                       for v in versions):
                shutil.copy(os.path.join(self.ckpt, f), to)
        return to

    def test_bad_input_files(self):
        out = self.path("bad.csv")
        self.refused("fsps-serve", out, "--checkpoint-dir", self.ckpt,
                     "--input", self.path("nope.idx"),
                     want="nope.idx: cannot be opened")
        wide = self.path("wide.f32")
        np.zeros(100 * 3, dtype=np.float32).tofile(wide)
        self.refused("fsps-serve", out, "--checkpoint-dir", self.ckpt,
                     "--input", wide, want="the model takes 784 inputs")
        nan = self.path("nan.f32")
        rows = np.zeros((200, 784), dtype=np.float32)
        rows[150, 3] = np.nan
        rows.tofile(nan)
        self.refused("fsps-serve", out, "--checkpoint-dir", self.ckpt,
                     "--input", nan, "--max-batch", "64",
                     want="row 150 holds NaN at column 3: the file is refused")
        rc, err = run("fsps-serve", "--input", IMAGES, "--output", out)
        self.assertEqual(rc, 2, err)
        self.assertIn("give one of --checkpoint-dir", err)
        rc, err = run("fsps-export", "--checkpoint-dir", self.ckpt,
                      "--output", out, "--timeout-ms", "1e3")
        self.assertEqual(rc, 2, err)
        self.assertIn("bad value '1e3' for --timeout-ms: not a whole number; "
                      "want a whole number from 1 to 1000000000", err)
        # a flag of fsps-serve only is unknown to fsps-export
        rc, err = run("fsps-export", "--checkpoint-dir", self.ckpt,
                      "--output", out, "--input", IMAGES)
        self.assertEqual(rc, 2, err)
        self.assertIn("unknown or incomplete option '--input'", err)
        self.assertEqual(self.leftovers(out), [], "output left behind")

    def test_corrupt_checkpoint(self):
        """A flipped byte: refused by its CRC; with an older complete
        version in the folder, that one is served and stderr says why."""
        only = self.copy_ckpt("corrupt1", [STEPS])
        f = os.path.join(only, "ckpt-s1of2-v%020d.fsps" % STEPS)
        data = bytearray(open(f, "rb").read())
        data[len(data) // 2] ^= 0x40
        open(f, "wb").write(data)
        out = self.path("c.csv")
        self.refused("fsps-serve", out, "--checkpoint-dir", only, "--input",
                     IMAGES, want=f + " fails its CRC32C check (corrupt)")
        self.refused("fsps-export", self.path("c.safetensors"),
                     "--checkpoint-dir", only,
                     want=f + " fails its CRC32C check (corrupt)")
        both = self.copy_ckpt("corrupt2", [STEPS - 100, STEPS])
        shutil.copy(f, both)
        err = self.serve_ok("--checkpoint-dir", both, "--input", IMAGES,
                            "--output", self.path("c.jsonl"))
        self.assertIn("newer checkpoints refused", err)
        self.assertIn("fails its CRC32C check", err)
        self.assertEqual({json.loads(line)["version"] for line in
                          open(self.path("c.jsonl"))}, {STEPS - 100})

    def test_incomplete_checkpoint(self):
        part = self.copy_ckpt("incomplete", [STEPS])
        os.remove(os.path.join(part, "ckpt-s1of2-v%020d.fsps" % STEPS))
        self.refused("fsps-serve", self.path("inc.csv"), "--checkpoint-dir",
                     part, "--input", IMAGES,
                     want="ckpt-s1of2-v%020d.fsps is missing" % STEPS)
        self.refused("fsps-serve", self.path("inc.csv"), "--checkpoint-dir",
                     self.path("empty-nothing"), "--input", IMAGES,
                     want="cannot read the folder")

    def test_spec_it_cannot_compute(self):
        """A model declared with fsps.Spec whose layer is a 4-D kernel,
        checkpointed by real servers: refused by name and shape."""
        import fsps
        d = self.path("conv")
        os.mkdir(d)
        srv = Servers(self.tmp.name, 2, 1, "--checkpoint-dir", d)
        try:
            spec = (fsps.Spec(seed=1)
                    .add_layer("conv1", {"weight": (8, 1, 3, 3), "bias": 8},
                               init="uniform", a=-0.1, b=0.1)
                    .set_optimizer("sgd", lr=0.1))
            c = fsps.Client(srv.addrs)
            c.declare(spec)
            c.checkpoint()
            c.close()
        finally:
            self.assertEqual(srv.stop(), [0, 0])
        want = ("cannot serve: layer 'conv1' has tensors weight [8,1,3,3], "
                "bias [8]; fsps-serve computes MLPs made of weight [out,in] "
                "+ bias [out] layers")
        self.refused("fsps-serve", self.path("k.csv"), "--checkpoint-dir", d,
                     "--input", IMAGES, want=want)
        self.refused("fsps-export", self.path("k.safetensors"),
                     "--checkpoint-dir", d, want=want)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ARGS, rest = ap.parse_known_args()
    prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    r = prog.result
    failed = len(r.failures) + len(r.errors)
    print("%d passed, %d failed" % (r.testsRun - failed, failed))
    sys.exit(0 if r.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
