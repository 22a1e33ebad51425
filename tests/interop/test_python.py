#!/usr/bin/python3
"""Interoperability: a client on an independent gRPC stack (Python's grpcio
from Debian) drives a real fsps-server over loopback: health, Init, Pull,
Push, Status, Checkpoint, Rollback, SetValues, and the bad-input cases,
checking codes and server state.

Usage: test_python.py --server PATH/fsps-server --proto PATH/fsps.proto
"""
import argparse
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# grpcio's fork handlers (GRPC_ENABLE_FORK_SUPPORT, on in Debian's 1.51)
# run at every fork() and can deadlock joining one of its threads: a
# subprocess launch of a server or worker then hung for good (seen about
# once in ten runs under load, gdb: __run_prefork_handlers in cygrpc).
# No child here uses gRPC, so the handlers are switched off before import.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
import grpc  # noqa: E402

ARGS = None


# Every child is started through setpriv(1) with PDEATHSIG set, so that no
# server or worker outlives its test (and holds ctest's output pipe). Not
# with a preexec_fn doing prctl: that makes subprocess fork() this threaded
# process (gRPC's threads) and run Python in the child, which hung a launch
# for good now and then under load; without it subprocess uses vfork.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]
PB = None  # the generated fsps_pb2 module
SVC = "/fsps.v1.ParameterServer/"
CHUNK = 262144


def f32(x):
    """Rounds a Python float to float32."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def floats(data):
    return list(struct.unpack("<%df" % (len(data) // 4), data))


def pack(values):
    return struct.pack("<%df" % len(values), *values)


def generate_pb(tmp):
    subprocess.run(["/usr/bin/protoc", "--python_out=" + tmp,
                    "-I" + os.path.dirname(ARGS.proto), ARGS.proto],
                   check=True)
    sys.path.insert(0, tmp)
    import fsps_pb2
    return fsps_pb2


class Server:
    """A real fsps-server on an ephemeral loopback port."""

    def __init__(self, tmp, *flags, log=None):
        self.port_file = os.path.join(tmp, "port-%d" % time.monotonic_ns())
        self.log = log
        err = open(log, "w") if log else None
        self.proc = subprocess.Popen(
            DIE_WITH_PARENT +
            [ARGS.server, "--listen", "127.0.0.1:0", "--port-file",
             self.port_file, "--log-level", "info" if log else "warn"] +
            list(flags), stderr=err)
        if err:
            err.close()
        deadline = time.monotonic() + 20
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fsps-server did not start")
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.port = int(f.read())
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)

    def stop(self, sig=signal.SIGTERM):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def logged(self):
        with open(self.log) as f:
            return f.read()

    def unary(self, method, req, reply_cls, raw=False):
        call = self.channel.unary_unary(
            SVC + method if not method.startswith("/") else method,
            request_serializer=(lambda b: b) if raw else
            (lambda m: m.SerializeToString()),
            response_deserializer=reply_cls.FromString)
        return call(req, timeout=10)

    def pull(self, layer, min_version=0, offset=0, count=0, timeout=10):
        call = self.channel.unary_stream(
            SVC + "Pull", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=PB.PullChunk.FromString)
        req = PB.PullRequest(layer=layer, min_version=min_version,
                             offset=offset, count=count)
        chunks = list(call(req, timeout=timeout))
        data = b"".join(c.data for c in chunks)
        return floats(data), [c.version for c in chunks]

    def push(self, chunks, raw=False):
        call = self.channel.stream_unary(
            SVC + "Push", request_serializer=(lambda b: b) if raw else
            (lambda m: m.SerializeToString()),
            response_deserializer=PB.PushReply.FromString)
        return call(iter(chunks), timeout=10)

    def status(self):
        return self.unary("Status", PB.StatusRequest(), PB.StatusReply)


def model_spec(lr=0.1):
    layer = PB.LayerSpec(name="fc", tensors=[
        PB.TensorSpec(name="weight", dims=[3, 5], init=PB.INIT_CONSTANT,
                      init_a=0.5),
        PB.TensorSpec(name="bias", dims=[3], init=PB.INIT_ZEROS)])
    # Only what differs from PyTorch's defaults: sgd has no default lr.
    opt = PB.OptimizerSpec(name="sgd", lr=lr)
    return PB.ModelSpec(layers=[layer], optimizer=opt, seed=7)


class PythonClientTest(unittest.TestCase):
    """One server (S=1, W=2, BSP), exercised in order."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.srv = Server(cls.tmp.name, "--workers", "2")

    @classmethod
    def tearDownClass(cls):
        code = cls.srv.stop()
        cls.tmp.cleanup()
        assert code == 0, "fsps-server exited %d after SIGTERM" % code

    def assertCode(self, code, fn, *args):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception.details()

    def init(self, spec, s=0, S=1):
        return self.srv.unary("Init", PB.InitRequest(
            spec=spec, num_servers=S, server_index=s), PB.InitReply)

    def test_01_health_and_status_before_init(self):
        req = b""  # HealthCheckRequest{service=""} encodes to nothing
        reply = self.srv.channel.unary_unary(
            "/grpc.health.v1.Health/Check")(req, timeout=10)
        self.assertEqual(reply, b"\x08\x01")  # status = SERVING
        st = self.srv.status()
        self.assertFalse(st.initialized)
        self.assertEqual(st.num_workers, 2)
        self.assertEqual(st.mode, "bsp")
        self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.srv.pull, 0)

    def test_02_init_idempotent_and_mismatch(self):
        huge = model_spec()  # 2^39 floats: 2 TiB, more than any machine here
        huge.layers[0].tensors[0].dims[:] = [1 << 20, 1 << 19]
        msg = self.assertCode(grpc.StatusCode.RESOURCE_EXHAUSTED, self.init,
                              huge)
        self.assertIn("use more servers", msg)
        self.assertFalse(self.srv.status().initialized)
        r1 = self.init(model_spec())
        self.assertTrue(r1.created)
        self.assertNotEqual(r1.spec_hash, 0)
        self.assertEqual(list(r1.layer_versions), [0])
        r2 = self.init(model_spec())
        self.assertFalse(r2.created)
        self.assertEqual(r1.spec_hash, r2.spec_hash)
        msg = self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.init,
                              model_spec(lr=0.2))
        self.assertIn("%016x" % r1.spec_hash, msg)
        msg = self.assertCode(grpc.StatusCode.FAILED_PRECONDITION, self.init,
                              model_spec(), 1, 2)
        self.assertIn("server 0 of 1", msg)
        bad = model_spec()
        bad.optimizer.name = "adamx"
        msg = self.assertCode(grpc.StatusCode.INVALID_ARGUMENT, self.init, bad)
        self.assertIn("adamx", msg)

    def test_03_pull_initial_values(self):
        values, versions = self.srv.pull(0)
        self.assertEqual(values, [0.5] * 15 + [0.0] * 3)
        self.assertEqual(set(versions), {0})
        part, _ = self.srv.pull(0, offset=14, count=2)
        self.assertEqual(part, [0.5, 0.0])

    def test_04_push_two_workers_then_pull(self):
        r0 = self.srv.push([PB.PushChunk(layer=0, step=0, worker=0, offset=0,
                                         data=pack([1.0] * 18))])
        self.assertFalse(r0.applied)
        self.assertEqual(r0.version, 0)
        st = self.srv.status()
        self.assertEqual(list(st.layers[0].pushed), [0])
        self.assertEqual(list(st.layers[0].missing), [1])
        r1 = self.srv.push([PB.PushChunk(layer=0, step=0, worker=1, offset=0,
                                         data=pack([3.0] * 18))])
        self.assertTrue(r1.applied)
        self.assertEqual(r1.version, 1)
        values, versions = self.srv.pull(0, min_version=1)
        step = f32(f32(0.1) * 2.0)
        self.assertEqual(values[:15], [f32(0.5 - step)] * 15)
        self.assertEqual(values[15:], [f32(-step)] * 3)
        self.assertEqual(set(versions), {1})

    def state(self):
        st = self.srv.status()
        return st.layers[0].version, list(st.layers[0].pushed), \
            self.srv.pull(0)[0]

    def test_05_bad_input_changes_nothing(self):
        before = self.state()
        cases = [
            (grpc.StatusCode.NOT_FOUND, lambda: self.srv.pull(5)),
            (grpc.StatusCode.INVALID_ARGUMENT,
             lambda: self.srv.pull(0, offset=10, count=20)),
            (grpc.StatusCode.NOT_FOUND, lambda: self.srv.push(
                [PB.PushChunk(layer=9, step=1, data=pack([1.0] * 18))])),
            (grpc.StatusCode.INVALID_ARGUMENT, lambda: self.srv.push(
                [PB.PushChunk(layer=0, step=1, data=pack([1.0] * 17))])),
            (grpc.StatusCode.INVALID_ARGUMENT, lambda: self.srv.push(
                [PB.PushChunk(layer=0, step=1, offset=1,
                              data=pack([1.0] * 17))])),
            (grpc.StatusCode.INVALID_ARGUMENT, lambda: self.srv.push(
                [PB.PushChunk(layer=0, step=1, worker=2,
                              data=pack([1.0] * 18))])),
            (grpc.StatusCode.INVALID_ARGUMENT, lambda: self.srv.push(
                [PB.PushChunk(layer=0, step=1,
                              data=pack([1.0] * 5 + [float("nan")] * 13))])),
            (grpc.StatusCode.INVALID_ARGUMENT, lambda: self.srv.push(
                [PB.PushChunk(layer=0, step=1, data=pack([1.0] * 18)),
                 PB.PushChunk(layer=0, step=1, data=pack([1.0] * 18))])),
            (grpc.StatusCode.INVALID_ARGUMENT, lambda: self.srv.push([])),
            (grpc.StatusCode.FAILED_PRECONDITION, lambda: self.srv.push(
                [PB.PushChunk(layer=0, step=5, data=pack([1.0] * 18))])),
            (grpc.StatusCode.INVALID_ARGUMENT, lambda: self.srv.unary(
                "Init", b"\xff\xff\xff\x07garbage", PB.InitReply, raw=True)),
            (grpc.StatusCode.INVALID_ARGUMENT, lambda: self.srv.push(
                [b"\x42\xff"], raw=True)),
            # A whole chunk for step 1, but with layer (field 1) sent as
            # bytes, or the data (field 8) as a varint: wrong wire types,
            # never read as layer 0 or as no data.
            (grpc.StatusCode.INVALID_ARGUMENT, lambda: self.srv.push(
                [b"\x0a\x01\x00\x10\x01\x42\x48" + pack([1.0] * 18)],
                raw=True)),
            (grpc.StatusCode.INVALID_ARGUMENT, lambda: self.srv.push(
                [b"\x10\x01\x40\x05\x42\x48" + pack([1.0] * 18)],
                raw=True)),
            (grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: self.srv.unary(
                "Init", b"\x0a" + b"\x80\x80\xc0\x01" + b"x" * (3 << 20),
                PB.InitReply, raw=True)),
            (grpc.StatusCode.UNIMPLEMENTED, lambda: self.srv.unary(
                "/fsps.v1.ParameterServer/Nope", PB.StatusRequest(),
                PB.StatusReply)),
        ]
        for code, fn in cases:
            with self.subTest(code=code):
                self.assertCode(code, fn)
        self.assertEqual(self.state(), before)
        self.assertGreaterEqual(self.srv.status().rejected, len(cases) - 2)

    def test_06_duplicate_push_is_acknowledged_not_counted(self):
        before = self.state()
        r = self.srv.push([PB.PushChunk(layer=0, step=0, worker=1, offset=0,
                                        data=pack([100.0] * 18))])
        self.assertTrue(r.duplicate)
        self.assertEqual(r.version, 1)
        self.assertEqual(self.state(), before)
        # Worker 0's step-1 push counts once even when sent twice.
        chunk = PB.PushChunk(layer=0, step=1, worker=0, data=pack([1.0] * 18))
        self.assertFalse(self.srv.push([chunk]).duplicate)
        self.assertTrue(self.srv.push([chunk]).duplicate)
        self.assertEqual(list(self.srv.status().layers[0].pushed), [0])

    def test_07_pull_waits_for_version_until_deadline(self):
        t0 = time.monotonic()
        self.assertCode(grpc.StatusCode.DEADLINE_EXCEEDED,
                        lambda: self.srv.pull(0, min_version=2, timeout=0.3))
        self.assertGreaterEqual(time.monotonic() - t0, 0.25)
        self.assertEqual(self.srv.status().layers[0].version, 1)


def one_tensor_spec(n, **optimizer):
    """A model of one layer of n N(0, 1) values and the OptimizerSpec built
    from exactly the keywords given: the others are left unset."""
    layer = PB.LayerSpec(name="w", tensors=[
        PB.TensorSpec(name="w", dims=[n], init=PB.INIT_NORMAL, init_b=1.0)])
    return PB.ModelSpec(layers=[layer], seed=11,
                        optimizer=PB.OptimizerSpec(**optimizer))


class OptimizerDefaultsTest(unittest.TestCase):
    """An OptimizerSpec that leaves hyper-parameters unset gets PyTorch's
    defaults for its optimizer, not 0: a server (W=1) trains as
    torch.optim.Adam(params) with nothing but the params does, bit for bit,
    and the spec is the one with the defaults written out (same hash)."""

    N, STEPS = 1001, 6  # odd: vector bodies and tails

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.srv = Server(self.tmp.name, "--workers", "1")

    def tearDown(self):
        code = self.srv.stop()
        self.tmp.cleanup()
        self.assertEqual(code, 0, "fsps-server exited %d after SIGTERM" % code)

    def init(self, spec):
        return self.srv.unary("Init", PB.InitRequest(spec=spec, num_servers=1),
                              PB.InitReply)

    def test_sgd_without_lr_is_refused(self):
        """torch.optim.SGD (1.13) has no default learning rate."""
        with self.assertRaises(grpc.RpcError) as cm:
            self.init(one_tensor_spec(self.N, name="sgd", momentum=0.9))
        self.assertEqual(cm.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("lr is not set", cm.exception.details())
        self.assertFalse(self.srv.status().initialized)

    def test_unset_adam_fields_train_as_torch_defaults(self):
        spec = one_tensor_spec(self.N, name="adam")
        for field in ("lr", "beta1", "beta2", "eps", "weight_decay"):
            self.assertFalse(spec.optimizer.HasField(field), field)
        first = self.init(spec)
        self.assertTrue(first.created)
        explicit = one_tensor_spec(self.N, name="adam", lr=1e-3, beta1=0.9,
                                   beta2=0.999, eps=1e-8, weight_decay=0.0,
                                   gamma=0.1, warmup_start_factor=1 / 3)
        again = self.init(explicit)
        self.assertFalse(again.created)
        self.assertEqual(again.spec_hash, first.spec_hash)
        # beta1 set to 0 is 0, another spec than the default's.
        with self.assertRaises(grpc.RpcError) as cm:
            self.init(one_tensor_spec(self.N, name="adam", beta1=0.0))
        self.assertEqual(cm.exception.code(),
                         grpc.StatusCode.FAILED_PRECONDITION)
        try:
            import numpy as np
            import torch
        except ImportError as e:
            self.skipTest("%s: torch (python3-torch) is needed for the "
                          "reference update" % e)
        p0 = self.srv.pull(0)[0]
        rng = np.random.default_rng(13)
        grads = [rng.standard_normal(self.N).astype("<f4")
                 for _ in range(self.STEPS)]
        for t, g in enumerate(grads):
            self.srv.push([PB.PushChunk(layer=0, step=t, worker=0,
                                        data=g.tobytes())])
        got, _ = self.srv.pull(0, min_version=self.STEPS)
        p = torch.nn.Parameter(torch.tensor(p0, dtype=torch.float32))
        opt = torch.optim.Adam([p])
        for g in grads:
            p.grad = torch.from_numpy(g.astype(np.float32))
            opt.step()
        want = p.detach().numpy().astype("<f4").tobytes()
        diff = [i for i in range(self.N)
                if pack(got[i:i + 1]) != want[4 * i:4 * i + 4]]
        self.assertEqual(diff, [], "%d of %d differ; first: fsps %r, torch %r"
                         % (len(diff), self.N, got[diff[0]] if diff else 0,
                            floats(want)[diff[0]] if diff else 0))


def push_step(srv, step, value, workers=1):
    for w in range(workers):
        srv.push([PB.PushChunk(layer=0, step=step, worker=w,
                               data=pack([value] * 18))])


class CheckpointBase(unittest.TestCase):
    """Servers with a --checkpoint-dir in a temporary folder."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = os.path.join(self.tmp.name, "ckpt")
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.stop(signal.SIGKILL)
        self.tmp.cleanup()

    def start(self, *flags):
        log = os.path.join(self.tmp.name, "log%d" % len(self.servers))
        srv = Server(self.tmp.name, "--checkpoint-dir", self.dir, *flags,
                     log=log)
        self.servers.append(srv)
        return srv

    def checkpoint(self, srv):
        return srv.unary("Checkpoint", PB.CheckpointRequest(),
                         PB.CheckpointReply)

    def trained(self, steps, *flags):
        srv = self.start(*flags)
        srv.unary("Init", PB.InitRequest(spec=model_spec(), num_servers=1),
                  PB.InitReply)
        for t in range(steps):
            push_step(srv, t, 1.0 + t)
        return srv

    def files(self):
        return sorted(f for f in os.listdir(self.dir) if f.endswith(".fsps"))


class CheckpointTest(CheckpointBase):
    """Checkpoints: written on request, periodically and at SIGTERM;
    restored after kill -9; bad files refused with a reason."""

    def test_restore_after_kill_9(self):
        srv = self.trained(2)
        r = self.checkpoint(srv)
        self.assertEqual(r.min_version, 2)
        self.assertTrue(os.path.exists(r.path))
        self.assertGreater(r.bytes, 18 * 4)
        before, _ = srv.pull(0, min_version=2)
        srv.stop(signal.SIGKILL)
        srv = self.start()
        st = srv.status()
        self.assertTrue(st.initialized)
        self.assertEqual(st.layers[0].version, 2)
        self.assertEqual(srv.pull(0, min_version=2)[0], before)
        push_step(srv, 2, 1.0)  # training goes on from there
        self.assertEqual(srv.status().layers[0].version, 3)
        self.assertIn("restored", srv.logged())

    def test_corrupt_then_truncated_fall_back(self):
        srv = self.trained(1)
        old = self.checkpoint(srv).path
        push_step(srv, 1, 2.0)
        new = self.checkpoint(srv).path
        srv.stop(signal.SIGKILL)
        with open(new, "r+b") as f:  # flip one byte in the middle
            f.seek(os.path.getsize(new) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x40]))
        srv = self.start()
        self.assertEqual(srv.status().layers[0].version, 1)
        self.assertIn(os.path.basename(new), srv.logged())
        self.assertIn("CRC32C", srv.logged())
        srv.stop(signal.SIGKILL)
        os.truncate(old, os.path.getsize(old) - 7)
        srv = self.start()
        self.assertFalse(srv.status().initialized)
        self.assertIn("truncated", srv.logged())

    def test_other_server_refused(self):
        srv = self.trained(1)
        self.checkpoint(srv)
        srv.stop(signal.SIGKILL)
        other = self.start("--num-servers", "2", "--index", "1")
        self.assertFalse(other.status().initialized)
        self.assertIn("another server", other.logged())

    def test_periodic_keeps_newest(self):
        srv = self.trained(0, "--checkpoint-every", "2", "--keep", "2")
        for t in range(6):
            push_step(srv, t, 1.0)
            if t % 2 == 1:  # a checkpoint falls due at versions 2, 4, 6
                want = "ckpt-s0of1-v%020d.fsps" % (t + 1)
                deadline = time.monotonic() + 10
                while want not in self.files():
                    self.assertLess(time.monotonic(), deadline, self.files())
                    time.sleep(0.02)
        # Pruning follows the rename of the newest file: give it a moment.
        want = ["ckpt-s0of1-v%020d.fsps" % v for v in (4, 6)]
        deadline = time.monotonic() + 10
        while self.files() != want and time.monotonic() < deadline:
            time.sleep(0.02)
        self.assertEqual(self.files(), want)

    def test_sigterm_writes_final_checkpoint(self):
        srv = self.trained(3)
        self.assertEqual(srv.stop(), 0)
        self.assertEqual(self.files(), ["ckpt-s0of1-v%020d.fsps" % 3])

    def test_disk_full_keeps_old_checkpoint(self):
        os.makedirs(self.dir)
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k",
                                  "tmpfs", self.dir],
                                 capture_output=True).returncode == 0
        if not mounted:
            self.skipTest("cannot mount a small tmpfs (needs root)")
        try:
            srv = self.trained(1)
            old = self.checkpoint(srv).path
            with open(os.path.join(self.dir, "filler"), "wb",
                      buffering=0) as f:
                try:  # fill what is left of the 64 KiB
                    while True:
                        f.write(b"x" * 512)
                except OSError:
                    pass
            push_step(srv, 1, 2.0)
            with self.assertRaises(grpc.RpcError) as cm:
                self.checkpoint(srv)
            self.assertIn("No space left", cm.exception.details())
            self.assertEqual(self.files(), [os.path.basename(old)])
            srv.stop(signal.SIGKILL)
            srv = self.start()
            self.assertEqual(srv.status().layers[0].version, 1)
        finally:
            for s in self.servers:
                s.stop(signal.SIGKILL)
            subprocess.run(["umount", self.dir])

    def test_checkpoint_without_dir_is_refused(self):
        srv = Server(self.tmp.name)
        self.servers.append(srv)
        with self.assertRaises(grpc.RpcError) as cm:
            self.checkpoint(srv)
        self.assertEqual(cm.exception.code(),
                         grpc.StatusCode.FAILED_PRECONDITION)


class RollbackTest(CheckpointBase):
    """Rollback: back to a checkpointed step while serving; refusals change
    nothing."""

    def rollback(self, srv, version, spec_hash=None):
        if spec_hash is None:
            spec_hash = srv.status().spec_hash
        return srv.unary("Rollback", PB.RollbackRequest(
            version=version, spec_hash=spec_hash), PB.RollbackReply)

    def wait_files(self, n):
        deadline = time.monotonic() + 60
        while len(self.files()) < n and time.monotonic() < deadline:
            time.sleep(0.02)

    def refused(self, srv, version, text, spec_hash=None):
        before = srv.status()
        data, _ = srv.pull(0)
        with self.assertRaises(grpc.RpcError) as cm:
            self.rollback(srv, version, spec_hash)
        self.assertEqual(cm.exception.code(),
                         grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn(text, cm.exception.details())
        self.assertEqual(srv.status().layers[0].version,
                         before.layers[0].version)
        self.assertEqual(srv.pull(0)[0], data)

    def test_rollback_to_checkpoint_and_to_start(self):
        srv = self.trained(0, "--checkpoint-every", "2", "--keep", "5")
        inc = srv.status().incarnation
        self.assertNotEqual(inc, 0)
        init, _ = srv.pull(0)
        for t in range(2):
            push_step(srv, t, 1.0 + t)
        at2, _ = srv.pull(0, min_version=2)
        # Files are written in the background, and a copy that falls due
        # while the previous file is still being written is skipped: let
        # each be written before the next falls due.
        self.wait_files(1)
        for t in range(2, 5):
            push_step(srv, t, 1.0 + t)
            if t == 3:
                self.wait_files(2)
        self.assertEqual(len(self.files()), 2)
        r = self.rollback(srv, 2)
        self.assertEqual(r.layers_restored, 1)
        self.assertTrue(r.source.endswith("v00000000000000000002.fsps"))
        self.assertEqual(srv.status().layers[0].version, 2)
        self.assertEqual(srv.pull(0)[0], at2)
        self.assertEqual(len(self.files()), 1)  # the step-4 file is gone
        self.assertEqual(self.rollback(srv, 2).layers_restored, 0)
        # A pull for more than version + 1 cannot be this cluster's.
        with self.assertRaises(grpc.RpcError) as cm:
            srv.pull(0, min_version=4)
        self.assertEqual(cm.exception.code(),
                         grpc.StatusCode.FAILED_PRECONDITION)
        push_step(srv, 2, 3.0)  # training goes on from the rolled-back step
        self.assertEqual(srv.status().layers[0].version, 3)
        r = self.rollback(srv, 0)  # no file of version 0: initial values
        self.assertEqual(r.source, "initial values")
        self.assertEqual(srv.pull(0)[0], init)
        self.assertEqual(srv.status().incarnation, inc)

    def test_rollback_refusals_change_nothing(self):
        srv = self.trained(3)
        self.refused(srv, 1, "no checkpoint of version 1")
        self.refused(srv, 5, "cannot go forward")
        self.refused(srv, 1, "holds model", spec_hash=12345)
        srv2 = Server(self.tmp.name, "--mode", "asp")
        self.servers.append(srv2)
        srv2.unary("Init", PB.InitRequest(spec=model_spec(), num_servers=1),
                   PB.InitReply)
        self.refused(srv2, 0, "needs --mode bsp or ssp")
        with self.assertRaises(grpc.RpcError) as cm:  # garbage request
            srv.channel.unary_unary("/fsps.v1.ParameterServer/Rollback")(
                b"\xff\xff\xff", timeout=10)
        self.assertEqual(cm.exception.code(),
                         grpc.StatusCode.INVALID_ARGUMENT)

    def test_incarnation_changes_on_restart(self):
        srv = self.trained(1)
        inc = srv.status().incarnation
        srv.stop(signal.SIGKILL)
        srv = self.start()
        self.assertNotEqual(srv.status().incarnation, inc)


class SlowDiskTest(CheckpointBase):
    """No call thread waits for the disk: with one completion-queue thread
    and every checkpoint file 4 s slow to write, pushes and pulls are
    answered while a Checkpoint call and a periodic checkpoint are being
    written."""

    def test_pushes_and_pulls_go_on_during_a_slow_checkpoint(self):
        srv = self.start("--threads", "1", "--workers", "1",
                         "--checkpoint-every", "3",
                         "--inject-checkpoint-delay-ms", "4000")
        srv.unary("Init", PB.InitRequest(spec=model_spec(), num_servers=1),
                  PB.InitReply)
        write = srv.channel.unary_unary(
            SVC + "Checkpoint", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=PB.CheckpointReply.FromString)
        asked = write.future(PB.CheckpointRequest(), timeout=60)
        time.sleep(0.3)  # the file is being written now
        for t in range(6):  # version 3 starts a periodic checkpoint too
            push_step(srv, t, 1.0 + t)
            _, versions = srv.pull(0, min_version=t + 1)
            self.assertEqual(versions, [t + 1])
        self.assertFalse(asked.done(), "the pushes waited for the disk")
        self.assertEqual(srv.status().layers[0].version, 6)
        reply = asked.result()
        self.assertTrue(os.path.exists(reply.path))
        # The periodic file (version 3 or 6: a copy the busy disk could not
        # take in time is skipped) comes later; a rollback reads it on the
        # same thread.
        deadline = time.monotonic() + 30
        while not [v for v in srv.status().checkpoint_versions if v >= 3]:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.05)
        v = max(srv.status().checkpoint_versions)
        push_step(srv, 6, 7.0)
        r = srv.unary("Rollback", PB.RollbackRequest(
            version=v, spec_hash=srv.status().spec_hash), PB.RollbackReply)
        self.assertEqual(r.layers_restored, 1)
        self.assertEqual(srv.status().layers[0].version, v)


class EpochTest(CheckpointBase):
    """Epochs fence rollbacks (StatusReply.epoch): after a Rollback into a
    new epoch, what was computed in the old one is refused and counts for
    nothing, and the same rollback asked again changes nothing."""

    def rollback(self, srv, version, epoch):
        return srv.unary("Rollback", PB.RollbackRequest(
            version=version, spec_hash=srv.status().spec_hash, epoch=epoch),
            PB.RollbackReply)

    def push(self, srv, worker, epoch, step=0):
        return srv.push([PB.PushChunk(layer=0, step=step, worker=worker,
                                      epoch=epoch, data=pack([1.0] * 18))])

    def refused(self, fn, *args):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args)
        self.assertEqual(cm.exception.code(),
                         grpc.StatusCode.FAILED_PRECONDITION)
        self.assertIn("epoch", cm.exception.details())

    def test_new_epoch_refuses_the_old_one(self):
        srv = self.start("--workers", "2")
        srv.unary("Init", PB.InitRequest(spec=model_spec(), num_servers=1),
                  PB.InitReply)
        self.assertEqual(srv.status().epoch, 0)
        self.assertEqual(list(srv.status().checkpoint_versions), [])
        self.push(srv, 0, 0)
        self.assertEqual(list(srv.status().layers[0].pushed), [0])
        e = 0x1234567890ABCDEF
        self.assertEqual(self.rollback(srv, 0, e).layers_restored, 0)
        st = srv.status()
        self.assertEqual(st.epoch, e)
        self.assertEqual(list(st.layers[0].pushed), [])  # the old push: gone
        self.refused(self.push, srv, 1, 0)  # computed before the rollback
        self.refused(srv.pull, 0)            # a pull of the old epoch
        st = srv.status()
        self.assertEqual(list(st.layers[0].pushed), [])
        self.assertEqual(st.layers[0].version, 0)
        self.push(srv, 0, e)
        r = self.rollback(srv, 0, e)  # another worker's same rollback
        self.assertIn("already done", r.source)
        self.assertEqual(list(srv.status().layers[0].pushed), [0])  # kept
        self.push(srv, 1, e)
        self.assertEqual(srv.status().layers[0].version, 1)

    def test_rollback_fails_parked_pulls_of_the_old_epoch(self):
        srv = self.start("--workers", "2")
        srv.unary("Init", PB.InitRequest(spec=model_spec(), num_servers=1),
                  PB.InitReply)
        call = srv.channel.unary_stream(
            SVC + "Pull", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=PB.PullChunk.FromString)
        parked = call(PB.PullRequest(layer=0, min_version=1), timeout=20)
        time.sleep(0.2)  # the pull is parked: version 1 needs two pushes
        self.rollback(srv, 0, 99)
        with self.assertRaises(grpc.RpcError) as cm:
            list(parked)
        self.assertEqual(cm.exception.code(),
                         grpc.StatusCode.FAILED_PRECONDITION)
        req = PB.PullRequest(layer=0, epoch=99)  # the new epoch's pull
        self.assertEqual(len(list(call(req, timeout=10))), 1)


def values_spec(big=True):
    """Layer 0 "given" (client: 3x5 weight and bias, 18 values), layer 1
    "drawn" (constant 0.5, 4 values) and, with big, layer 2 "bigc" (client,
    524388 values: several chunks a slice for S <= 2)."""
    given = PB.LayerSpec(name="given", tensors=[
        PB.TensorSpec(name="weight", dims=[3, 5], init=PB.INIT_CLIENT),
        PB.TensorSpec(name="bias", dims=[3], init=PB.INIT_CLIENT)])
    drawn = PB.LayerSpec(name="drawn", tensors=[
        PB.TensorSpec(name="w", dims=[4], init=PB.INIT_CONSTANT, init_a=0.5)])
    bigc = PB.LayerSpec(name="bigc", tensors=[
        PB.TensorSpec(name="w", dims=[2 * CHUNK + 100], init=PB.INIT_CLIENT)])
    opt = PB.OptimizerSpec(name="sgd", lr=0.1, gamma=0.1,
                           warmup_start_factor=1.0)
    return PB.ModelSpec(layers=[given, drawn] + ([bigc] if big else []),
                        optimizer=opt, seed=3)


def slice_of(n, S, s):
    """Server s's slice [lo, hi) of a layer of n elements over S servers."""
    c = (n + S - 1) // S
    c = (c + 15) // 16 * 16
    return min(n, s * c), min(n, (s + 1) * c)


def set_values(srv, layer, values, lo=0, epoch=0, raw=None):
    """Gives values (the slice starting at element lo) in chunks cut as a
    push's; raw: a list of chunks to send instead."""
    chunks = raw if raw is not None else [
        PB.ValuesChunk(layer=layer, offset=lo + i, epoch=epoch,
                       data=pack(values[i:i + CHUNK]))
        for i in range(0, len(values), CHUNK)]
    call = srv.channel.stream_unary(
        SVC + "SetValues",
        request_serializer=lambda m: m if isinstance(m, bytes) else
        m.SerializeToString(),
        response_deserializer=PB.ValuesReply.FromString)
    return call(iter(chunks), timeout=30)


def ramp(n, base):
    return [f32(base + 0.001 * i) for i in range(n)]


class ValuesTest(CheckpointBase):
    """Explicit values (SetValues, INIT_CLIENT): a layer awaits them, its
    pulls wait until they arrive on that server, so that a gather (which
    needs every server) succeeds only once every server holds its slice;
    every bad stream is refused and changes nothing; the same values again
    are a duplicate, others and a layer that began training are refused;
    checkpoints and rollbacks never turn them into zeros."""

    def refused(self, code, fn, *args, text=None):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        if text:
            self.assertIn(text, cm.exception.details())

    def declared(self, S=1, W=1, big=True, *flags, ckpt=False):
        srvs = []
        for s in range(S):
            args = ["--num-servers", str(S), "--index", str(s), "--workers",
                    str(W)] + list(flags)
            if ckpt:
                srv = self.start(*args)
            else:
                srv = Server(self.tmp.name, *args)
                self.servers.append(srv)
            srv.unary("Init", PB.InitRequest(spec=values_spec(big),
                                             num_servers=S, server_index=s),
                      PB.InitReply)
            srvs.append(srv)
        return srvs

    def test_gather_waits_for_every_server(self):
        srvs = self.declared(S=2)
        for srv in srvs:
            st = srv.status()
            self.assertEqual([l.awaiting_values for l in st.layers],
                             [True, False, True])
            self.refused(grpc.StatusCode.DEADLINE_EXCEEDED, srv.pull, 0, 0,
                         0, 0, 0.3)
        self.assertEqual(srvs[0].pull(1)[0], [0.5] * 4)  # drawn: readable
        n, values = 18, ramp(18, 1.0)
        lo, hi = slice_of(n, 2, 0)
        r = set_values(srvs[0], 0, values[lo:hi], lo)
        self.assertFalse(r.duplicate)
        self.assertEqual(r.layers_awaiting, 1)  # bigc
        self.assertEqual(srvs[0].pull(0)[0], values[lo:hi])
        # Server 1 has not got its slice: its pull, and so any gather,
        # waits; it is answered as soon as the slice arrives.
        self.refused(grpc.StatusCode.DEADLINE_EXCEEDED, srvs[1].pull, 0, 0,
                     0, 0, 0.3)
        self.assertTrue(srvs[1].status().layers[0].awaiting_values)
        got = []
        t = threading.Thread(target=lambda: got.append(srvs[1].pull(0)[0]))
        t.start()
        time.sleep(0.3)
        self.assertEqual(got, [])
        lo, hi = slice_of(n, 2, 1)
        set_values(srvs[1], 0, values[lo:hi], lo)
        t.join(10)
        self.assertEqual(got, [values[lo:hi]])
        # A layer of several chunks a slice.
        n = 2 * CHUNK + 100
        big = ramp(n, -7.0)
        self.refused(grpc.StatusCode.FAILED_PRECONDITION, srvs[1].push,
                     [PB.PushChunk(layer=2, data=pack([1.0] * 16))],
                     text="awaits its values")
        whole = []
        for s, srv in enumerate(srvs):
            lo, hi = slice_of(n, 2, s)
            self.assertEqual(set_values(srv, 2, big[lo:hi], lo)
                             .layers_awaiting, 0)
            whole += srv.pull(2)[0]
        self.assertEqual(whole, big)

    def test_refusals_change_nothing(self):
        srv, = self.declared(W=2)
        v = ramp(18, 2.0)
        nan, inf = list(v), list(v)
        nan[5], inf[17] = float("nan"), float("-inf")
        ok = PB.ValuesChunk(layer=0, data=pack(v))
        C = grpc.StatusCode
        cases = [
            (C.INVALID_ARGUMENT, [PB.ValuesChunk(layer=0, data=pack(v[:17]))],
             "expected chunk 0 at offset 0 with 18 floats"),
            (C.INVALID_ARGUMENT,
             [PB.ValuesChunk(layer=0, offset=1, data=pack(v[:17]))], None),
            (C.INVALID_ARGUMENT, [PB.ValuesChunk(layer=0, data=pack(nan))],
             "hold NaN at element 5"),
            (C.INVALID_ARGUMENT, [PB.ValuesChunk(layer=0, data=pack(inf))],
             "Inf at element 17"),
            (C.FAILED_PRECONDITION, [PB.ValuesChunk(layer=1,
                                                    data=pack([1.0] * 4))],
             "'drawn' is initialised by the servers (init constant)"),
            (C.NOT_FOUND, [PB.ValuesChunk(layer=7, data=pack(v))], None),
            (C.INVALID_ARGUMENT, [], "carried no chunks"),
            (C.INVALID_ARGUMENT, [ok, ok], "sent twice"),
            (C.INVALID_ARGUMENT,
             [PB.ValuesChunk(layer=2, data=pack([1.0] * CHUNK))],
             "ended after 1 of 3 chunks"),
            (C.INVALID_ARGUMENT, [ok, PB.ValuesChunk(layer=2, offset=CHUNK,
                                                     data=pack([1.0] * 100))],
             "share layer and epoch"),
            (C.FAILED_PRECONDITION, [PB.ValuesChunk(layer=0, epoch=5,
                                                    data=pack(v))], "epoch"),
            (C.INVALID_ARGUMENT, [b"\x42\xff"], None),
            # layer (field 1) as bytes: a wrong wire type, not layer 0
            (C.INVALID_ARGUMENT, [b"\x0a\x01\x00\x42\x48" + pack(v)],
             None),
        ]
        for code, chunks, text in cases:
            with self.subTest(code=code, text=text):
                self.refused(code, set_values, srv, 0, None, 0, 0, chunks,
                             text=text)
        st = srv.status()
        self.assertEqual([l.awaiting_values for l in st.layers],
                         [True, False, True])
        self.refused(C.DEADLINE_EXCEEDED, srv.pull, 0, 0, 0, 0, 0.3)
        self.assertFalse(set_values(srv, 0, v).duplicate)
        self.assertTrue(set_values(srv, 0, v).duplicate)  # a retry
        other = list(v)
        other[4] += 1.0
        self.refused(C.ALREADY_EXISTS, set_values, srv, 0, other,
                     text="'given' holds other values already (element 4")
        self.assertEqual(srv.pull(0)[0], v)
        push = [PB.PushChunk(layer=0, step=0, worker=0, data=pack([1.0] * 18))]
        srv.push(push)  # counted: training has begun
        self.refused(C.FAILED_PRECONDITION, set_values, srv, 0, v,
                     text="a push of step 0 counted")
        push[0].worker = 1
        self.assertTrue(srv.push(push).applied)
        self.refused(C.FAILED_PRECONDITION, set_values, srv, 0, v,
                     text="'given' has begun training (version 1)")
        self.assertEqual(srv.pull(0, 1)[0], [f32(x - f32(0.1)) for x in v])

    def test_checkpoints_and_rollbacks_keep_the_values(self):
        # A checkpoint never holds a layer without its values.
        srv, = self.declared(big=False, ckpt=True)
        self.refused(grpc.StatusCode.FAILED_PRECONDITION, self.checkpoint,
                     srv, text="layer 0 'given' (and 0 more) awaits")
        self.assertEqual(srv.stop(), 0)
        self.assertIn("no final checkpoint", srv.logged())
        self.assertEqual(self.files(), [])
        srv, = self.declared(big=False, ckpt=True)
        v = ramp(18, 3.0)
        set_values(srv, 0, v)
        rollback = lambda version: srv.unary("Rollback", PB.RollbackRequest(
            version=version, spec_hash=srv.status().spec_hash),
            PB.RollbackReply)

        def train(t0, steps):
            for t in range(t0, t0 + steps):
                for layer, n in ((0, 18), (1, 4)):
                    srv.push([PB.PushChunk(layer=layer, step=t,
                                           data=pack([1.0] * n))])
        train(0, 2)
        self.assertNotEqual(srv.pull(0, 2)[0], v)
        r = rollback(0)  # no file of version 0: the values kept in memory
        self.assertEqual(r.source, "initial values")
        self.assertEqual(srv.pull(0)[0], v)
        self.assertEqual(srv.pull(1)[0], [0.5] * 4)
        v0 = self.checkpoint(srv).path
        train(0, 2)
        at2, _ = srv.pull(0, 2)
        self.checkpoint(srv)
        with open(v0, "rb") as f:
            saved = f.read()
        srv.stop(signal.SIGKILL)
        os.unlink(v0)
        # Restored from version 2, the server holds the values trained from
        # the given ones, but no copy of those: going back to version 0
        # without its file is refused and changes nothing.
        srv = self.start("--workers", "1")
        st = srv.status()
        self.assertEqual([l.version for l in st.layers], [2, 2])
        self.assertFalse(st.layers[0].awaiting_values)
        self.assertEqual(srv.pull(0, 2)[0], at2)
        self.refused(grpc.StatusCode.FAILED_PRECONDITION, rollback, 0,
                     text="layer 0 'given' took its values from a client")
        self.assertEqual(srv.status().layers[0].version, 2)
        self.assertEqual(srv.pull(0, 2)[0], at2)
        with open(v0, "wb") as f:  # with the file of version 0 it can
            f.write(saved)
        r = rollback(0)
        self.assertTrue(r.source.endswith("v00000000000000000000.fsps"))
        self.assertEqual(srv.pull(0)[0], v)
        train(0, 1)
        os.unlink(v0)
        self.assertEqual(rollback(0).source, "initial values")
        self.assertEqual(srv.pull(0)[0], v)  # the copy the file brought


def bf16_bits(x):
    """bfloat16 bits of x (through float32), rounded to nearest, ties to
    even; a NaN quiet: the encoding the server and libfsps must agree on."""
    u = struct.unpack("<I", struct.pack("<f", x))[0]
    if (u & 0x7fffffff) > 0x7f800000:
        return (u >> 16) | 0x40
    return ((u + 0x7fff + ((u >> 16) & 1)) >> 16) & 0xffff


def pack_bf16(values):
    return struct.pack("<%dH" % len(values), *[bf16_bits(v) for v in values])


def unpack_bf16(data):
    return [struct.unpack("<f", struct.pack("<I", h << 16))[0]
            for h in struct.unpack("<%dH" % (len(data) // 2), data)]


def bf16(x):
    return unpack_bf16(pack_bf16([x]))[0]


def bf16_spec(wire_dtype=None):
    """values_spec's "given" (client, 18 values) and "drawn" (0.5, 4
    values) layers, SGD with lr 1/8 (so updates are exact in float32), bf16
    on the wire."""
    spec = values_spec(big=False)
    spec.optimizer.lr = 0.125
    spec.wire_dtype = PB.WIRE_DTYPE_BF16 if wire_dtype is None else wire_dtype
    return spec


class Bf16Test(CheckpointBase):
    """A bf16 model (ModelSpec.wire_dtype) from a client on another gRPC
    stack: pulls answer data_bf16 of the float32 parameters; pushes are
    data_bf16, summed and applied in float32, so updates below bf16's
    resolution add up; SetValues and checkpoints stay float32; a spec of the
    other dtype and every malformed bf16 push are refused and change
    nothing."""

    def setUp(self):
        super().setUp()
        self.srv = self.start("--workers", "2")
        self.init(self.srv)

    @staticmethod
    def init(srv, spec=None):
        return srv.unary("Init", PB.InitRequest(
            spec=spec or bf16_spec(), num_servers=1), PB.InitReply)

    def pull_bf16(self, layer, min_version=0):
        call = self.srv.channel.unary_stream(
            SVC + "Pull", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=PB.PullChunk.FromString)
        chunks = list(call(PB.PullRequest(layer=layer,
                                          min_version=min_version),
                           timeout=10))
        self.assertTrue(all(c.data == b"" for c in chunks))
        return unpack_bf16(b"".join(c.data_bf16 for c in chunks))

    def push_drawn(self, step, g=2.0 ** -10):
        """Both workers push g for every element of "drawn"."""
        for w in range(2):
            r = self.srv.push([PB.PushChunk(layer=1, step=step, worker=w,
                                            data_bf16=pack_bf16([g] * 4))])
        return r

    def refused(self, code, fn, text=None):
        with self.assertRaises(grpc.RpcError) as cm:
            fn()
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        if text:
            self.assertIn(text, cm.exception.details())

    def test_other_dtype_refused(self):
        self.refused(grpc.StatusCode.FAILED_PRECONDITION,
                     lambda: self.init(self.srv, bf16_spec(
                         PB.WIRE_DTYPE_FP32)),
                     "its wire dtype is bf16, the request's fp32")
        self.refused(grpc.StatusCode.INVALID_ARGUMENT,
                     lambda: self.init(self.srv, bf16_spec(7)),
                     "unknown wire dtype 7")
        self.assertFalse(self.init(self.srv).created)

    def test_values_float32_pulls_bf16(self):
        v = ramp(18, 2.0)  # not bf16 values: 2.001, 2.002, ...
        raw = b"\x08\x00\x4a\x24" + pack_bf16(v)  # data_bf16: refused
        self.refused(grpc.StatusCode.INVALID_ARGUMENT,
                     lambda: set_values(self.srv, 0, None, raw=[raw]),
                     "float32 whatever the wire dtype")
        self.assertTrue(self.srv.status().layers[0].awaiting_values)
        set_values(self.srv, 0, v)
        got = self.pull_bf16(0)
        self.assertEqual(got, [bf16(x) for x in v])
        self.assertNotEqual(got, v)
        # The server holds them in float32: the same float32 values again
        # are a duplicate, their bf16 rounding is not.
        self.assertTrue(set_values(self.srv, 0, v).duplicate)
        self.refused(grpc.StatusCode.ALREADY_EXISTS,
                     lambda: set_values(self.srv, 0, got))

    def test_master_stays_float32_through_a_checkpoint(self):
        # Each step takes 2^-13 off 0.5 in float32. bf16 has 2^-9 between
        # 0.5 and the value below it: the pulls show 0.5 until the master
        # is past the midpoint (8 steps, a tie, to even: 0.5), then 0.5 -
        # 2^-9. A bf16 master would round every update away.
        set_values(self.srv, 0, ramp(18, 2.0))  # a checkpoint needs them
        for t in range(7):
            self.assertTrue(self.push_drawn(t).applied)
        self.assertEqual(self.pull_bf16(1, 7), [0.5] * 4)
        path = self.checkpoint(self.srv).path
        self.assertTrue(os.path.exists(path))
        self.srv.stop(signal.SIGKILL)
        self.srv = self.start("--workers", "2")
        self.assertEqual(self.srv.status().layers[1].version, 7)
        self.init(self.srv)
        self.push_drawn(7)
        self.assertEqual(self.pull_bf16(1, 8), [0.5] * 4)
        self.push_drawn(8)
        self.assertEqual(self.pull_bf16(1, 9), [0.5 - 2.0 ** -9] * 4)
        # Rolled back to the start (0.5), the pulls send the new values,
        # not the bf16 copy of the old ones.
        h = self.srv.status().spec_hash
        self.srv.unary("Rollback", PB.RollbackRequest(version=0, spec_hash=h),
                       PB.RollbackReply)
        self.assertEqual(self.pull_bf16(1), [0.5] * 4)
        self.assertEqual(self.srv.status().layers[1].version, 0)

    def state(self):
        st = self.srv.status()
        return st.layers[1].version, list(st.layers[1].pushed), \
            self.pull_bf16(1)

    def test_malformed_pushes_change_nothing(self):
        self.push_drawn(0)
        before = self.state()
        C = grpc.StatusCode
        ok = pack_bf16([1.0] * 4)
        nan, inf = pack_bf16([1.0, float("nan"), 1.0, 1.0]), \
            pack_bf16([1.0, 1.0, 1.0, float("-inf")])
        snan = ok[:6] + b"\x81\x7f"  # a signalling NaN, bits 0x7f81

        def push(**kw):
            return lambda: self.srv.push([PB.PushChunk(layer=1, step=1, **kw)])

        def raw(*msgs):
            return lambda: self.srv.push(list(msgs), raw=True)
        cases = [
            (C.INVALID_ARGUMENT, raw(b"\x08\x01\x10\x01\x4a\x07" + ok[:7]),
             "payload of 7 bytes is not whole bf16 elements"),
            (C.INVALID_ARGUMENT, push(data_bf16=ok[:6]),
             "3 floats, expected chunk 0 at offset 0 with 4"),
            (C.INVALID_ARGUMENT, push(data_bf16=ok + ok[:2]), None),
            (C.INVALID_ARGUMENT, push(data_bf16=nan), "holds NaN at element 1"),
            (C.INVALID_ARGUMENT, push(data_bf16=inf), "holds Inf at element 3"),
            (C.INVALID_ARGUMENT, push(data_bf16=snan), "holds NaN at element 3"),
            (C.INVALID_ARGUMENT, push(data=pack([1.0] * 4)),
             "payload in field 8, but this model takes bf16 in field 9"),
            (C.INVALID_ARGUMENT, push(data=pack([1.0] * 2), data_bf16=ok),
             "malformed tensor message"),
            # data_bf16 with another wire type: malformed, never "no data".
            (C.INVALID_ARGUMENT, raw(b"\x08\x01\x10\x01\x48\x04"), None),
            # A good chunk, then a bad one: the whole push counts nothing.
            (C.INVALID_ARGUMENT, raw(
                PB.PushChunk(layer=1, step=1, data_bf16=ok)
                .SerializeToString(),
                PB.PushChunk(layer=1, step=1, data_bf16=nan)
                .SerializeToString()), None),
        ]
        for code, fn, text in cases:
            with self.subTest(text=text):
                self.refused(code, fn, text)
        self.assertEqual(self.state(), before)
        # A good bf16 push still counts.
        self.assertTrue(self.push_drawn(1).applied)


class MemoryLimitTest(unittest.TestCase):
    """A server in a container sizes what it accepts by the container's
    memory limit (its cgroup's), not by the machine's memory."""

    LIMIT = 256 << 20

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.cg = None
        name = "fsps-test-%d" % os.getpid()
        v1 = "/sys/fs/cgroup/memory"
        try:
            if os.path.isdir(v1):
                self.cg = os.path.join(v1, name)
                os.mkdir(self.cg)
                with open(os.path.join(self.cg, "memory.limit_in_bytes"),
                          "w") as f:
                    f.write(str(self.LIMIT))
            elif "memory" in open("/sys/fs/cgroup/cgroup.controllers").read():
                self.cg = os.path.join("/sys/fs/cgroup", name)
                os.mkdir(self.cg)
                with open(os.path.join(self.cg, "memory.max"), "w") as f:
                    f.write(str(self.LIMIT))
            else:
                raise OSError("no memory controller")
        except OSError as e:
            self.tearDown()
            self.skipTest("cannot make a memory cgroup here (needs root and "
                          "the memory controller): %s" % e)

    def tearDown(self):
        if self.cg and os.path.isdir(self.cg):
            os.rmdir(self.cg)
        self.tmp.cleanup()

    def test_init_sized_by_the_cgroup_limit(self):
        procs = os.path.join(self.cg, "cgroup.procs")

        port_file = os.path.join(self.tmp.name, "port")
        # The shell joins the cgroup, then becomes the server.
        proc = subprocess.Popen(
            ["sh", "-c", 'echo $$ > "$0" && exec "$@"', procs] +
            DIE_WITH_PARENT +
            [ARGS.server, "--listen", "127.0.0.1:0", "--port-file", port_file,
             "--log-level", "warn"])
        try:
            while not os.path.exists(port_file) and proc.poll() is None:
                time.sleep(0.02)
            with open(port_file) as f:
                ch = grpc.insecure_channel("127.0.0.1:%s" % f.read().strip())
            big = model_spec()  # 30M floats, 240 MB with staging: more than
            big.layers[0].tensors[0].dims[:] = [6000, 5000]  # 3/4 of 256 MiB
            init = ch.unary_unary(
                SVC + "Init", request_serializer=lambda m: m.SerializeToString(),
                response_deserializer=PB.InitReply.FromString)
            with self.assertRaises(grpc.RpcError) as cm:
                init(PB.InitRequest(spec=big, num_servers=1), timeout=20)
            self.assertEqual(cm.exception.code(),
                             grpc.StatusCode.RESOURCE_EXHAUSTED)
            self.assertIn("of its 0.2 GiB of memory",
                          cm.exception.details())
            small = init(PB.InitRequest(spec=model_spec(), num_servers=1),
                         timeout=20)
            self.assertTrue(small.created)
            ch.close()
        finally:
            proc.send_signal(signal.SIGTERM)
            self.assertEqual(proc.wait(timeout=30), 0)


def main():
    global ARGS, PB
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--proto", required=True)
    ARGS, rest = ap.parse_known_args()
    with tempfile.TemporaryDirectory() as tmp:
        PB = generate_pb(tmp)
        prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False,
                             verbosity=2)
    r = prog.result
    failed = len(r.failures) + len(r.errors)
    print("%d passed, %d failed" % (r.testsRun - failed, failed))
    sys.exit(0 if r.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
