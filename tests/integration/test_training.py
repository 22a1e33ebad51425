#!/usr/bin/python3
"""Training end to end: real fsps-server and fsps-worker processes on
loopback, on Fashion-MNIST.

- W=2 workers of batch b reach the parameters of W=1 of batch 2b (same data,
  same seed) within 1e-5 relative after a few steps.
- A short run on a subset lowers the loss and beats chance by a wide margin.
- With --wire-dtype bf16: deterministic servers give the same bits for S =
  1, 2, 3 (whole layers and layers in pieces), a short run learns as well
  as fp32's, half the bytes travel, and a worker of the other dtype is
  refused.
- Bad flags and missing data give clear errors.

Usage: test_training.py --bin BUILD_DIR
"""
import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None


# Every child is started through setpriv(1) with PDEATHSIG set, so that no
# server or worker outlives its test (and holds ctest's output pipe). Not
# with a preexec_fn doing prctl: that makes subprocess fork() this threaded
# process (gRPC's threads) and run Python in the child, which hung a launch
# for good now and then under load; without it subprocess uses vfork.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]


class Cluster:
    """S real fsps-servers on ephemeral loopback ports."""

    def __init__(self, tmp, S, W, *flags):
        self.procs, ports = [], []
        for s in range(S):
            pf = os.path.join(tmp, "port-%d-%d" % (s, time.monotonic_ns()))
            self.procs.append(subprocess.Popen(
                DIE_WITH_PARENT +
                [os.path.join(ARGS.bin, "server", "fsps-server"),
                 "--listen", "127.0.0.1:0", "--index", str(s),
                 "--num-servers", str(S), "--workers", str(W),
                 "--port-file", pf, "--log-level", "warn"] + list(flags)))
            ports.append(pf)
        self.servers = ",".join("127.0.0.1:%d" % self.wait_port(p, i)
                                for i, p in enumerate(ports))

    def wait_port(self, path, i):
        deadline = time.monotonic() + 20
        while not os.path.exists(path):
            if self.procs[i].poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("fsps-server %d did not start" % i)
            time.sleep(0.02)
        with open(path) as f:
            return int(f.read())

    def stop(self):
        codes = []
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            codes.append(p.wait(timeout=30))
        return codes


def run_workers(servers, W, flags, timeout=600):
    """Runs W fsps-workers to completion; returns their JSON summaries."""
    procs = [subprocess.Popen(
        DIE_WITH_PARENT +
        [os.path.join(ARGS.bin, "worker", "fsps-worker"), "--servers",
         servers, "--rank", str(r), "--world", str(W),
         "--progress-secs", "1000"] + flags,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in range(W)]
    out = []
    try:
        for r, p in enumerate(procs):
            stdout, stderr = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise AssertionError("worker %d exited %d: %s" %
                                     (r, p.returncode, stderr))
            out.append(json.loads(stdout.strip().splitlines()[-1]))
    finally:  # a failed worker leaves the others waiting: stop them
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return out


def read_floats(path):
    with open(path, "rb") as f:
        data = f.read()
    return struct.unpack("<%df" % (len(data) // 4), data)


class TrainingTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.clusters = []

    def tearDown(self):
        for c in self.clusters:
            codes = c.stop()
            self.assertEqual(codes, [0] * len(codes))
        self.tmp.cleanup()

    def cluster(self, S, W, *flags):
        c = Cluster(self.tmp.name, S, W, *flags)
        self.clusters.append(c)
        return c

    def dump_after(self, W, batch):
        c = self.cluster(2, W, "--deterministic")
        dump = os.path.join(self.tmp.name, "w%d.bin" % W)
        run_workers(c.servers, W, [
            "--model", "mlp:784,32,10", "--optimizer", "sgd", "--lr", "0.05",
            "--batch", str(batch), "--train-limit", "2000", "--max-steps",
            "6", "--seed", "3", "--no-eval", "--dump", dump])
        return read_floats(dump)

    def test_two_workers_equal_one_with_double_batch(self):
        two = self.dump_after(2, 16)
        one = self.dump_after(1, 32)
        self.assertEqual(len(one), len(two))
        self.assertEqual(len(one), 784 * 32 + 32 + 32 * 10 + 10)
        worst = max(abs(a - b) - 1e-5 * abs(b) for a, b in zip(two, one))
        self.assertLessEqual(worst, 1e-7)
        # The comparison is not vacuous: training moved the parameters.
        init = self.dump_after_steps0()
        moved = sum(1 for a, b in zip(one, init) if a != b)
        self.assertGreater(moved, len(one) // 2)

    def dump_pieces(self, W, batch, piece_mb):
        """6 SGD steps of a model whose first layer (12.9 MB, seven 1 MiB
        chunks per server) goes in row blocks of piece_mb that straddle
        chunk and slice boundaries; returns the dump and rank 0's summary."""
        c = self.cluster(2, W, "--deterministic")
        dump = os.path.join(self.tmp.name, "p%s-w%d.bin" % (piece_mb, W))
        done = run_workers(c.servers, W, [
            "--model", "mlp:784,4096,10", "--optimizer", "sgd", "--lr",
            "0.05", "--batch", str(batch), "--train-limit", "2000",
            "--max-steps", "6", "--seed", "3", "--no-eval", "--dump", dump,
            "--piece-mb", str(piece_mb), "--reshard-after-forward"])
        return read_floats(dump), done[0]

    def test_pieces_equal_whole_layers(self):
        whole, done_w = self.dump_pieces(1, 32, 0)
        one, done_1 = self.dump_pieces(1, 32, 0.5)
        two, _ = self.dump_pieces(2, 16, 0.5)
        self.assertEqual(len(one), 784 * 4096 + 4096 + 4096 * 10 + 10)
        # Row blocks add bias after the product and sum dX block by block:
        # equal up to float rounding, to whole layers and across W.
        for got, want in ((one, whole), (two, one)):
            worst = max(abs(a - b) - 1e-5 * abs(b) for a, b in zip(got, want))
            self.assertLessEqual(worst, 1e-7)
        self.assertNotEqual(one, whole)  # the pieces did run
        # Never a whole 12.9 MB layer: 0.5 MB pieces (a few held at a
        # time) and at most 4 staged 1 MiB chunks of gradient.
        layer0 = 4 * (784 * 4096 + 4096)
        self.assertGreaterEqual(done_w["peak_buffer_bytes"], layer0)
        self.assertLess(done_1["peak_buffer_bytes"], layer0 / 2)

    def dump_after_steps0(self):
        c = self.cluster(1, 1)
        dump = os.path.join(self.tmp.name, "init.bin")
        # One step with lr 0 leaves the initial values.
        run_workers(c.servers, 1, [
            "--model", "mlp:784,32,10", "--optimizer", "sgd", "--lr", "0",
            "--batch", "32", "--train-limit", "2000", "--max-steps", "1",
            "--seed", "3", "--no-eval", "--dump", dump])
        return read_floats(dump)

    def test_short_run_learns(self):
        c = self.cluster(2, 2)
        first = run_workers(c.servers, 2, [
            "--train-limit", "6000", "--batch", "32", "--max-steps", "1",
            "--no-eval", "--normalize"])
        c2 = self.cluster(2, 2)
        done = run_workers(c2.servers, 2, [
            "--train-limit", "6000", "--batch", "32", "--epochs", "2",
            "--normalize"])
        self.assertGreater(first[0]["final_loss"], 1.5)  # ~ln(10) at start
        self.assertLess(done[0]["final_loss"], 0.75)
        self.assertGreater(done[0]["test_accuracy"], 0.70)  # chance: 0.10
        self.assertIsNone(done[1]["test_accuracy"])  # only rank 0 evaluates
        self.assertEqual(done[0]["steps"], 2 * (6000 // 64))
        # The same run with layers in pieces, evaluation included (it
        # gathers the model piece by piece): the same accuracy, but for
        # float rounding's effect.
        c3 = self.cluster(2, 2)
        cut = run_workers(c3.servers, 2, [
            "--train-limit", "6000", "--batch", "32", "--epochs", "2",
            "--normalize", "--piece-mb", "0.25", "--reshard-after-forward"])
        self.assertAlmostEqual(cut[0]["test_accuracy"],
                               done[0]["test_accuracy"], delta=0.02)

    def bf16_dump(self, S, piece_mb=0):
        """6 deterministic Adam steps of W = 2 bf16 workers on S servers;
        returns the dump (what a gather gives: bf16 values) and rank 0's
        summary."""
        c = self.cluster(S, 2, "--deterministic")
        dump = os.path.join(self.tmp.name, "bf16-s%d-p%s.bin" % (S, piece_mb))
        done = run_workers(c.servers, 2, [
            "--model", "mlp:784,300,10", "--batch", "16", "--train-limit",
            "2000", "--max-steps", "6", "--seed", "3", "--no-eval", "--dump",
            dump, "--wire-dtype", "bf16", "--piece-mb", str(piece_mb),
            "--reshard-after-forward"])
        return read_floats(dump), done[0]

    def test_bf16_deterministic_for_any_S(self):
        one, done = self.bf16_dump(1)
        self.assertEqual(done["wire_dtype"], "bf16")
        for S in (2, 3):
            self.assertEqual(self.bf16_dump(S)[0], one, "S=%d" % S)
        # The first layer (0.94 MB) in 0.25 MB pieces: streamed pushes,
        # encoded piece by piece, give the same bits for any S too.
        cut = self.bf16_dump(2, 0.25)[0]
        self.assertEqual(self.bf16_dump(3, 0.25)[0], cut)
        for x in one[:1000] + cut[:1000]:  # gathered: bf16 values
            self.assertEqual(struct.pack("<f", x)[:2], b"\0\0")

    def test_bf16_learns_and_halves_the_bytes(self):
        flags = ["--train-limit", "6000", "--batch", "32", "--epochs", "2",
                 "--normalize"]
        fp32 = run_workers(self.cluster(2, 2).servers, 2, flags)
        bf16 = run_workers(self.cluster(2, 2).servers, 2,
                           flags + ["--wire-dtype", "bf16"])
        self.assertGreater(bf16[0]["test_accuracy"], 0.70)
        self.assertAlmostEqual(bf16[0]["test_accuracy"],
                               fp32[0]["test_accuracy"], delta=0.02)
        for key in ("gathered_bytes", "pushed_bytes"):
            self.assertEqual(2 * bf16[0][key], fp32[0][key], key)

    def test_other_wire_dtype_refused(self):
        c = self.cluster(1, 2)
        first = subprocess.Popen(
            DIE_WITH_PARENT +
            [os.path.join(ARGS.bin, "worker", "fsps-worker"), "--servers",
             c.servers, "--rank", "0", "--world", "2", "--wire-dtype", "bf16",
             "--train-limit", "2000", "--max-steps", "2", "--no-eval"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            env = dict(os.environ, FSPS_WIRE_DTYPE="fp32")
            p = subprocess.run(
                DIE_WITH_PARENT +
                [os.path.join(ARGS.bin, "worker", "fsps-worker"),
                 "--servers", c.servers, "--rank", "1", "--world", "2",
                 "--train-limit", "2000", "--max-steps", "2", "--no-eval"],
                capture_output=True, text=True, timeout=120, env=env)
            self.assertNotEqual(p.returncode, 0)
            self.assertIn("wire dtype bf16, this worker asks for fp32",
                          p.stderr)
            # The right dtype joins, from the environment, and both finish.
            env["FSPS_WIRE_DTYPE"] = "bf16"
            p = subprocess.run(
                DIE_WITH_PARENT +
                [os.path.join(ARGS.bin, "worker", "fsps-worker"),
                 "--servers", c.servers, "--rank", "1", "--world", "2",
                 "--train-limit", "2000", "--max-steps", "2", "--no-eval"],
                capture_output=True, text=True, timeout=300, env=env)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(first.wait(timeout=300), 0)
        finally:
            if first.poll() is None:
                first.kill()
            first.communicate()

    def worker_fails(self, flags, env=None):
        p = subprocess.run(
            [os.path.join(ARGS.bin, "worker", "fsps-worker")] + flags,
            capture_output=True, text=True, timeout=60,
            env=dict(os.environ, **(env or {})))
        self.assertNotEqual(p.returncode, 0)
        return p.stderr

    def test_clear_errors(self):
        err = self.worker_fails(["--servers", "127.0.0.1:1", "--rank", "2",
                                 "--world", "2"])
        self.assertIn("--rank 2 is out of range", err)
        err = self.worker_fails(["--local", "--dump",
                                 os.path.join(self.tmp.name, "m.bin")])
        self.assertIn("--dump writes the model the servers hold", err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "m.bin")))
        err = self.worker_fails(["--servers", "127.0.0.1:1",
                                 "--data-dir", self.tmp.name])
        self.assertIn("dataset-fashion-mnist", err)
        err = self.worker_fails(["--servers", "127.0.0.1:1",
                                 "--model", "mlp:784"])
        self.assertIn("mlp", err)
        err = self.worker_fails(["--batch", "0", "--servers", "x:1"])
        self.assertIn("bad value '0' for --batch: out of range; want a whole "
                      "number from 1 to 1048576", err)
        err = self.worker_fails(["--servers", "x:1"], {"FSPS_LR": "fast"})
        self.assertIn("bad value 'fast' in FSPS_LR (--lr): not a number; "
                      "want a number from 0 to 100", err)
        err = self.worker_fails(["--wire-dtype", "fp16", "--servers", "x:1"])
        self.assertIn("--wire-dtype must be fp32 or bf16, not 'fp16'", err)


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
