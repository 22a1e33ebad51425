#!/usr/bin/python3
"""Interoperability: a client on an independent gRPC stack (Python's grpcio
from Debian) drives a real fsps-server over loopback: health, Init, Pull,
Push, Status, and the bad-input cases, checking codes and server state.

Usage: test_python.py --server PATH/fsps-server --proto PATH/fsps.proto
"""
import argparse
import ctypes
import os
import signal
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import grpc

ARGS = None


def die_with_parent():
    """Runs in each child: SIGKILL it if this test process dies, so no
    server outlives its test (and holds ctest's output pipe)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PDEATHSIG
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

    def __init__(self, tmp, *flags):
        self.port_file = os.path.join(tmp, "port-%d" % time.monotonic_ns())
        self.proc = subprocess.Popen(
            [ARGS.server, "--listen", "127.0.0.1:0", "--port-file",
             self.port_file, "--log-level", "warn"] + list(flags),
            preexec_fn=die_with_parent)
        deadline = time.monotonic() + 20
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fsps-server did not start")
            time.sleep(0.02)
        with open(self.port_file) as f:
            self.port = int(f.read())
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)

    def stop(self):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

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
    opt = PB.OptimizerSpec(name="sgd", lr=lr, gamma=0.1, eps=1e-8,
                           beta1=0.9, beta2=0.999, warmup_start_factor=1.0)
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
