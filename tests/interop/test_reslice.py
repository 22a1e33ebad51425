#!/usr/bin/python3
"""fsps-reslice end to end, with real servers: a cluster of S=2
(--deterministic, Adam, layers of odd sizes) trains a few steps and
checkpoints; its files are re-sliced for S'=3 and S'=1; clusters started
on those folders must serve bit-identical parameters, and stay identical
to the S=2 cluster through one more step (so optimizer state and versions
came across). Then every refusal: each names the file and the reason, and
leaves --to empty. A bf16 model (ModelSpec.wire_dtype) re-slices alike: its
float32 checkpoints keep the dtype, the S'=3 cluster sends the same bf16
bytes and refuses an fp32 Init.

Usage: test_reslice.py --server PATH/fsps-server --reslice PATH/fsps-reslice
                       --proto PATH/fsps.proto
"""
import argparse
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_python as tp  # noqa: E402  (Server, generate_pb, pack)

ARGS = None
W = 2  # workers


def PB():
    return tp.PB


def stride(n, S):
    c = -(-n // S)
    return -(-c // 16) * 16


def slice_of(n, S, s):
    """Server s's slice of a layer of n elements over S (shard_slice)."""
    c = stride(n, S)
    lo, hi = min(n, s * c), min(n, (s + 1) * c)
    return lo, hi - lo


def name(s, S, v):
    return "ckpt-s%dof%d-v%020d.fsps" % (s, S, v)


def model_spec(lr=0.01):
    pb = PB()
    T = pb.TensorSpec

    def layer(lname, *tensors):
        return pb.LayerSpec(name=lname, tensors=list(tensors))
    layers = [
        layer("fc1", T(name="weight", dims=[9, 11],
                       init=pb.INIT_XAVIER_UNIFORM),
              T(name="bias", dims=[9], init=pb.INIT_UNIFORM, init_a=-0.1,
                init_b=0.1)),                                     # 108
        layer("fc2", T(name="weight", dims=[7, 143],
                       init=pb.INIT_NORMAL, init_b=0.05),
              T(name="bias", dims=[6], init=pb.INIT_ZEROS)),      # 1007
        layer("scale", T(name="gamma", dims=[5], init=pb.INIT_CONSTANT,
                         init_a=1.0)),                            # 5
        layer("fc3", T(name="weight", dims=[3, 11], init=pb.INIT_HE_UNIFORM),
              T(name="bias", dims=[4], init=pb.INIT_ZEROS)),      # 37
    ]
    opt = pb.OptimizerSpec(name="adam", lr=lr, beta1=0.9, beta2=0.999,
                           eps=1e-8, weight_decay=0.01, gamma=0.1,
                           warmup_start_factor=1.0)
    return pb.ModelSpec(layers=layers, optimizer=opt, seed=11)


SIZES = [108, 1007, 5, 37]


def gradient(step, layer, worker):
    rng = random.Random("%d-%d-%d" % (step, layer, worker))
    n = SIZES[layer]
    return struct.pack("<%df" % n, *(rng.uniform(-1, 1) for _ in range(n)))


class Cluster:
    """S real fsps-servers over one checkpoint folder."""

    def __init__(self, tmp, S, ckpt_dir, tag, workers=W, bf16=False):
        self.S = S
        self.bf16 = bf16  # the model's wire dtype: pushes and pulls in bf16
        self.servers = []
        for s in range(S):
            self.servers.append(tp.Server(
                tmp, "--index", str(s), "--num-servers", str(S),
                "--workers", str(workers), "--deterministic",
                "--checkpoint-dir", ckpt_dir,
                log=os.path.join(tmp, "%s-%d.log" % (tag, s))))

    def stop(self):
        for srv in self.servers:
            srv.stop(signal.SIGKILL)

    def init(self, spec):
        return [srv.unary("Init", PB().InitRequest(
            spec=spec, num_servers=self.S, server_index=s), PB().InitReply)
            for s, srv in enumerate(self.servers)]

    def push(self, step, layers=None, servers=None, workers=W):
        for l in layers if layers is not None else range(len(SIZES)):
            for s in servers if servers is not None else range(self.S):
                off, cnt = slice_of(SIZES[l], self.S, s)
                if cnt == 0:
                    continue
                for w in range(workers):
                    g = gradient(step, l, w)[4 * off:4 * (off + cnt)]
                    if self.bf16:
                        g = {"data_bf16": tp.pack_bf16(
                            struct.unpack("<%df" % cnt, g))}
                    else:
                        g = {"data": g}
                    self.servers[s].push([PB().PushChunk(
                        layer=l, step=step, worker=w, offset=off, **g)])

    def pull(self, min_version):
        """Every layer whole, as the bytes the servers send."""
        out = []
        for l, n in enumerate(SIZES):
            data = b""
            for s, srv in enumerate(self.servers):
                if slice_of(n, self.S, s)[1] == 0:
                    continue
                call = srv.channel.unary_stream(
                    tp.SVC + "Pull",
                    request_serializer=lambda m: m.SerializeToString(),
                    response_deserializer=PB().PullChunk.FromString)
                req = PB().PullRequest(layer=l, min_version=min_version)
                data += b"".join(c.data_bf16 if self.bf16 else c.data
                                 for c in call(req, timeout=10))
            assert len(data) == (2 if self.bf16 else 4) * n, (l, len(data))
            out.append(data)
        return out

    def checkpoint(self):
        return [srv.unary("Checkpoint", PB().CheckpointRequest(),
                          PB().CheckpointReply) for srv in self.servers]

    def versions(self):
        """Per server, the versions of its non-empty slices."""
        out = []
        for s, srv in enumerate(self.servers):
            st = srv.status()
            out.append([st.layers[l].version for l, n in enumerate(SIZES)
                        if slice_of(n, self.S, s)[1]])
        return out


def reslice(*args):
    return subprocess.run([ARGS.reslice] + [str(a) for a in args],
                          capture_output=True, text=True, timeout=120)


class ResliceTest(unittest.TestCase):
    """One S=2 cluster trains and checkpoints at versions 0, 2 and 3; the
    tests re-slice copies of its files."""

    @classmethod
    def setUpClass(cls):
        cls.tmpdir = tempfile.TemporaryDirectory()
        cls.tmp = cls.tmpdir.name
        cls.src = os.path.join(cls.tmp, "s2")
        cls.a = Cluster(cls.tmp, 2, cls.src, "a")
        cls.a.init(model_spec())
        cls.a.checkpoint()
        cls.a.push(0)
        cls.a.push(1)
        cls.a.checkpoint()
        cls.ref2 = cls.a.pull(2)
        cls.a.push(2)
        replies = cls.a.checkpoint()
        assert [r.min_version for r in replies] == [3, 3], replies
        cls.ref3 = cls.a.pull(3)

    @classmethod
    def tearDownClass(cls):
        cls.a.stop()
        cls.tmpdir.cleanup()

    def setUp(self):
        self.work = tempfile.mkdtemp(dir=self.tmp)
        self.clusters = []

    def tearDown(self):
        for c in self.clusters:
            c.stop()

    def cluster(self, S, ckpt_dir, workers=W):
        c = Cluster(self.tmp, S, ckpt_dir, "c%d" % len(self.clusters),
                    workers)
        self.clusters.append(c)
        return c

    def folder(self, label, *files):
        """A new folder holding copies of files of the S=2 run, each given
        as (s, version) or (s, version, name to give it)."""
        d = os.path.join(self.work, label)
        os.makedirs(d)
        for f in files:
            s, v = f[0], f[1]
            dst = f[2] if len(f) > 2 else name(s, 2, v)
            shutil.copy(os.path.join(self.src, name(s, 2, v)),
                        os.path.join(d, dst))
        return d

    def empty(self, label="to"):
        d = os.path.join(self.work, label)
        os.makedirs(d)
        return d

    def ok(self, frm, to, S, *extra):
        r = reslice("--from", frm, "--to", to, "--num-servers", S, *extra)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return r

    def refused(self, frm, to, S, *wants, extra=(), code=1):
        """Runs the tool, which must fail with `code`, say every string of
        wants, and leave `to` empty (or absent)."""
        r = reslice("--from", frm, "--to", to, "--num-servers", S, *extra)
        self.assertEqual(r.returncode, code, r.stdout + r.stderr)
        for w in wants:
            self.assertIn(w, r.stderr)
        if os.path.exists(to):
            self.assertEqual(os.listdir(to), [])
        return r.stderr

    # ---- re-slicing and resuming ----

    def test_resume_on_three_and_on_one(self):
        frm = self.folder("from", (0, 3), (1, 3))
        to3, to1 = os.path.join(self.work, "s3"), os.path.join(self.work, "s1")
        out = self.ok(frm, to3, 3).stdout
        self.assertIn("version 3 of 2 servers", out)
        self.ok(frm, to1, 1)
        self.assertEqual(sorted(os.listdir(to3)),
                         [name(s, 3, 3) for s in range(3)])
        self.assertEqual(os.listdir(to1), [name(0, 1, 3)])
        b3, b1 = self.cluster(3, to3), self.cluster(1, to1)
        for c in (b3, b1):
            self.assertEqual(c.versions(), [[3] * len(v) for v in
                                            c.versions()])
            self.assertEqual(c.pull(3), self.ref3)
            # The spec came across: the same Init is accepted, not created.
            self.assertFalse(any(r.created for r in c.init(model_spec())))
        for c in (self.a, b3, b1):
            c.push(3)
        after = self.a.pull(4)
        self.assertNotEqual(after, self.ref3)
        self.assertEqual(b3.pull(4), after)
        self.assertEqual(b1.pull(4), after)

    def test_checkpoint_version_picks_an_older_set(self):
        to = os.path.join(self.work, "to")
        self.ok(self.src, to, 1, "--checkpoint-version", 2)
        self.assertEqual(os.listdir(to), [name(0, 1, 2)])
        self.assertEqual(self.cluster(1, to).pull(2), self.ref2)

    def test_newest_set_refused_falls_back_with_a_warning(self):
        frm = self.folder("from", (0, 3), (1, 3), (0, 2), (1, 2))
        bad = os.path.join(frm, name(1, 2, 3))
        with open(bad, "r+b") as f:
            f.seek(os.path.getsize(bad) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x10]))
        to = os.path.join(self.work, "to")
        r = self.ok(frm, to, 3)
        self.assertIn(bad + " fails its CRC32C check", r.stderr)
        self.assertEqual(sorted(os.listdir(to)),
                         [name(s, 3, 2) for s in range(3)])

    def test_to_may_hold_older_files_of_the_same_s(self):
        to = os.path.join(self.work, "to")
        self.ok(self.src, to, 3, "--checkpoint-version", 2)
        self.ok(self.src, to, 3)
        self.assertEqual(len(os.listdir(to)), 6)

    # ---- refusals ----

    def test_refuses_a_missing_member(self):
        frm = self.folder("from", (0, 3))
        self.refused(frm, self.empty(), 3,
                     os.path.join(frm, name(1, 2, 3)) + " is missing",
                     "nothing was written")

    def test_refuses_mixed_versions(self):
        frm = self.folder("from", (0, 3), (1, 2))
        self.refused(frm, self.empty(), 3, name(1, 2, 3) + " is missing",
                     "server 1 of 2 has a file at version 2 instead",
                     name(0, 2, 2) + " is missing")
        # A file renamed to another version is caught by its header.
        frm = self.folder("renamed", (0, 3), (1, 2, name(1, 2, 3)))
        self.refused(frm, self.empty("to2"), 3, name(1, 2, 3) +
                     " says it is server 1 of 2 at version 2, which its name "
                     "does not")

    def test_refuses_mixed_spec_hashes(self):
        other = os.path.join(self.work, "other")
        b = self.cluster(2, other)
        b.init(model_spec(lr=0.02))
        b.checkpoint()
        frm = self.folder("from", (0, 0))
        shutil.copy(os.path.join(other, name(1, 2, 0)), frm)
        err = self.refused(frm, self.empty(), 3, name(1, 2, 0) +
                           " holds a model with spec hash",
                           "the files come from different models")
        self.assertIn(os.path.join(frm, name(0, 2, 0)), err)

    def test_refuses_corrupt_and_truncated_files(self):
        frm = self.folder("corrupt", (0, 3), (1, 3))
        path = os.path.join(frm, name(0, 2, 3))
        with open(path, "r+b") as f:
            f.seek(100)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x01]))
        self.refused(frm, self.empty(), 3,
                     path + " fails its CRC32C check (corrupt)")
        frm = self.folder("truncated", (0, 3), (1, 3))
        path = os.path.join(frm, name(1, 2, 3))
        os.truncate(path, os.path.getsize(path) - 5)
        self.refused(frm, self.empty("to2"), 1, path + " is truncated")

    def test_refuses_bad_num_servers(self):
        frm = self.folder("from", (0, 3), (1, 3))
        to = self.empty()
        self.refused(frm, to, 0, "--num-servers must be 1..65536", code=2)
        self.refused(frm, to, 70000, "not 70000", code=2)
        self.refused(frm, to, "two", "bad --num-servers two", code=2)

    def test_refuses_a_to_holding_other_checkpoints(self):
        frm = self.folder("from", (0, 3), (1, 3))
        to = os.path.join(self.work, "to")
        self.ok(frm, to, 3)
        before = sorted(os.listdir(to))
        r = reslice("--from", frm, "--to", to, "--num-servers", 1)
        self.assertEqual(r.returncode, 1)
        self.assertIn(os.path.join(to, name(0, 3, 3)) + " already exists, a "
                      "checkpoint for 3 servers, not 1", r.stderr)
        r = reslice("--from", frm, "--to", to, "--num-servers", 3)
        self.assertEqual(r.returncode, 1)
        self.assertIn("already exists, at version 3, not older than the "
                      "version 3 to write", r.stderr)
        self.assertEqual(sorted(os.listdir(to)), before)
        r = reslice("--from", frm, "--to", frm, "--num-servers", 3)
        self.assertEqual(r.returncode, 1)
        self.assertIn("is the --from folder", r.stderr)
        self.assertEqual(sorted(os.listdir(frm)),
                         [name(0, 2, 3), name(1, 2, 3)])

    def test_refuses_layers_at_different_versions(self):
        # Server 0 applies a step of fc1 that server 1 never sees: both
        # files are at version 0 (their lowest layer), but fc1 is not.
        d = os.path.join(self.work, "skewed")
        c = self.cluster(2, d, workers=1)
        c.init(model_spec())
        c.push(0, layers=[0], servers=[0], workers=1)
        c.checkpoint()
        to = os.path.join(self.work, "to-new")
        self.refused(d, to, 3, "layer 0 ('fc1') is at version 1 in " +
                     os.path.join(d, name(0, 2, 0)) + " but at 0 in " +
                     os.path.join(d, name(1, 2, 0)),
                     "not written at one step boundary")
        self.assertFalse(os.path.exists(to))

    def test_refuses_when_there_is_nothing_to_reslice(self):
        self.refused(self.empty("from"), self.empty(), 2,
                     "no checkpoint files (ckpt-s<s>of<S>-v<version>.fsps) in")
        self.refused(self.src, self.empty("to2"), 2,
                     "no checkpoint files (ckpt-s<s>of<S>-v<version>.fsps) at "
                     "version 7 in", extra=("--checkpoint-version", 7))
        self.refused(os.path.join(self.work, "nope"), self.empty("to3"), 2,
                     "cannot read the folder")

    def test_help_version_and_usage_errors(self):
        r = reslice("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("--num-servers S'", r.stdout)
        r = reslice("--version")
        self.assertEqual(r.returncode, 0)
        self.assertTrue(r.stdout.startswith("fsps-reslice "))
        r = reslice("--from", self.src, "--num-servers", 2)
        self.assertEqual(r.returncode, 2)
        self.assertIn("needs --from DIR, --to DIR and --num-servers", r.stderr)
        r = reslice("--from", self.src, "--to", self.empty(), "--num-servers",
                    2, "--version", 3)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--checkpoint-version V", r.stderr)


class Bf16ResliceTest(unittest.TestCase):
    """A bf16 model's float32 checkpoints re-slice as a float32 model's:
    the S'=3 cluster restores the dtype with the spec, sends the S=2
    cluster's bf16 bytes, refuses an fp32 Init, and trains on alike."""

    def test_bf16_model_resumes_on_three(self):
        with tempfile.TemporaryDirectory() as tmp:
            spec = model_spec()
            spec.wire_dtype = PB().WIRE_DTYPE_BF16
            src, to3 = os.path.join(tmp, "s2"), os.path.join(tmp, "s3")
            a = Cluster(tmp, 2, src, "a", bf16=True)
            try:
                a.init(spec)
                a.push(0)
                a.push(1)
                a.checkpoint()
                ref = a.pull(2)
                r = reslice("--from", src, "--to", to3, "--num-servers", 3)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                b = Cluster(tmp, 3, to3, "b", bf16=True)
                try:
                    self.assertEqual(b.pull(2), ref)
                    self.assertFalse(any(x.created for x in b.init(spec)))
                    with self.assertRaises(tp.grpc.RpcError) as cm:
                        b.init(model_spec())
                    self.assertIn("its wire dtype is bf16",
                                  cm.exception.details())
                    a.push(2)
                    b.push(2)
                    self.assertEqual(b.pull(3), a.pull(3))
                finally:
                    b.stop()
            finally:
                a.stop()


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--reslice", required=True)
    ap.add_argument("--proto", required=True)
    ARGS, rest = ap.parse_known_args()
    tp.ARGS = ARGS
    with tempfile.TemporaryDirectory() as tmp:
        tp.PB = tp.generate_pb(tmp)
        prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False,
                             verbosity=2)
    r = prog.result
    failed = len(r.failures) + len(r.errors)
    print("%d passed, %d failed" % (r.testsRun - failed, failed))
    sys.exit(0 if r.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
