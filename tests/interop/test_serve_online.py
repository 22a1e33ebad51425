#!/usr/bin/python3
"""An unmodified open inference protocol (v2) client on an independent gRPC
stack (Debian's python3-grpcio, with the stub python3-grpc-tools generates
from proto/grpc_predict_v2.proto) against the real fsps-serve binary,
started as a user would: --checkpoint-dir on the checkpoint a real
fsps-server wrote after a real fsps-worker trained a few steps, or
--servers following a live one. Predictions are checked against numpy on
the same weights, read from the model fsps-export writes (safetensors).

Readiness false then true (fsps-serve up before the servers hold a model),
health, metadata, ModelInfer with raw_input_contents and with
contents.fp32_contents, outputs named, each bad input's status, 64
concurrent requests answered correctly in fewer computations than requests
(the replies and fsps-serve's /metrics say so), and mutual TLS on the port.

Usage: test_serve_online.py --bin BUILD_DIR --proto PATH/grpc_predict_v2.proto
"""
import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

# grpcio's fork handlers can deadlock a subprocess launch (see
# interop/test_python.py); no child here uses gRPC.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
import grpc  # noqa: E402
import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
from metrics_harness import (DIE_WITH_PARENT, Proc, parse, scrape,  # noqa: E402
                             server_argv, wait_file)

ARGS = None
PB = PBG = HPB = HPBG = None  # generated modules
WIDTHS = [20, 32, 6]
STEPS = 7  # the version the trained checkpoint holds
HEALTH_PROTO = "/usr/share/grpc-proto/grpc/health/v1/health.proto"
TRAINED = {}  # setUpModule's checkpoint folder and its weights


def binary(*parts):
    return os.path.join(ARGS.bin, *parts)


def generate(tmp):
    """Messages from Debian's protoc, the service stub from grpc_tools."""
    global PB, PBG, HPB, HPBG
    # health.proto is copied to the top: generated under grpc/health/v1/
    # it would be looked for inside grpcio's own grpc package.
    with open(HEALTH_PROTO) as f, open(os.path.join(tmp, "health.proto"),
                                       "w") as g:
        g.write(f.read())
    for proto in (ARGS.proto, os.path.join(tmp, "health.proto")):
        inc = os.path.dirname(proto)
        subprocess.run(["/usr/bin/protoc", "-I" + inc, "--python_out=" + tmp,
                        proto], check=True)
        subprocess.run([sys.executable, "-m", "grpc_tools.protoc",
                        "-I" + inc, "--grpc_python_out=" + tmp, proto],
                       check=True)
    sys.path.insert(0, tmp)
    import grpc_predict_v2_pb2 as pb
    import grpc_predict_v2_pb2_grpc as pbg
    import health_pb2 as hpb
    import health_pb2_grpc as hpbg
    PB, PBG, HPB, HPBG = pb, pbg, hpb, hpbg


def train(addr, steps):
    """One real fsps-worker declares mlp:WIDTHS on the servers at addr and
    trains `steps` steps on synthetic data."""
    p = subprocess.run(DIE_WITH_PARENT + [
        binary("worker", "fsps-worker"), "--servers", addr, "--rank", "0",
        "--world", "1", "--model", "mlp:" + ",".join(map(str, WIDTHS)),
        "--synthetic", "512", "--batch", "16", "--optimizer", "sgd",
        "--lr", "0.05", "--max-steps", str(steps), "--no-eval",
        "--progress-secs", "1000"], capture_output=True, text=True,
        timeout=300)
    assert p.returncode == 0, "fsps-worker exit %d: %s" % (p.returncode,
                                                           p.stderr)


def start_server(tmp, *extra):
    """One fsps-server (S = 1, W = 1) and its address."""
    srv = Proc(tmp, "server", server_argv(ARGS.bin, tmp, 0, 1, 1, extra))
    port = wait_file(os.path.join(tmp, "port-0"), srv.proc, "fsps-server")
    return srv, "127.0.0.1:%d" % port


def safetensors():
    """python/fsps/safetensors.py, loaded alone (the fsps package would load
    libfsps)."""
    path = os.path.join(HERE, "..", "..", "python", "fsps", "safetensors.py")
    spec = importlib.util.spec_from_file_location("fsps_safetensors", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def export(tmp, *source):
    """fsps-export's model from source as [(W, b)] float32 arrays, checked
    to be mlp:WIDTHS; and the version it names."""
    out = os.path.join(tmp, "model-%d.safetensors" % time.monotonic_ns())
    p = subprocess.run(DIE_WITH_PARENT + [binary("serve", "fsps-export")] +
                       list(source) + ["--output", out], capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, "fsps-export exit %d: %s" % (p.returncode,
                                                           p.stderr)
    st = safetensors()
    meta = st.metadata(out)
    assert meta["widths"] == ",".join(map(str, WIDTHS)), meta
    state = st.load_numpy(out)
    keys = sorted({int(k.split(".")[0]) for k in state})
    layers = [(state["%d.weight" % k], state["%d.bias" % k]) for k in keys]
    assert [w.shape for w, _ in layers] == \
        [(o, i) for i, o in zip(WIDTHS, WIDTHS[1:])], layers
    return layers, meta["model_version"]


def setUpModule():
    """Trains once: fsps-server with --checkpoint-dir, a worker for STEPS
    steps, and the server's final checkpoint on SIGTERM; then the
    weights it holds, through fsps-export."""
    tmp = tempfile.mkdtemp(prefix="test_serve_online.")
    TRAINED["tmp"] = tmp
    generate(tmp)
    ckpt = os.path.join(tmp, "ckpt")
    os.mkdir(ckpt)
    srv, addr = start_server(tmp, "--checkpoint-dir", ckpt)
    try:
        train(addr, STEPS)
    finally:
        code = srv.stop()
    assert code == 0, "fsps-server exit %s: %s" % (code, srv.tail())
    TRAINED["ckpt"] = ckpt
    TRAINED["layers"], version = export(tmp, "--checkpoint-dir", ckpt)
    assert version == str(STEPS), version


def tearDownModule():
    shutil.rmtree(TRAINED["tmp"], ignore_errors=True)


def reference(layers, x):
    """Softmax probabilities and classes, in float64."""
    h = x.astype(np.float64)
    for k, (w, b) in enumerate(layers):
        h = h @ w.astype(np.float64).T + b
        if k + 1 < len(layers):
            h = np.maximum(h, 0)
    z = np.exp(h - h.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True), h.argmax(axis=1)


class Serve:
    """The fsps-serve binary on an ephemeral loopback port, with /metrics;
    source is its --checkpoint-dir or --servers flags."""

    def __init__(self, tmp, tag, source, *flags, channel=True):
        self.port_file = os.path.join(tmp, "port-" + tag)
        self.proc = Proc(tmp, tag, [binary("serve", "fsps-serve")] +
                         list(source) + ["--listen", "127.0.0.1:0",
                                         "--port-file", self.port_file] +
                         list(flags))
        try:
            self.port = wait_file(self.port_file, self.proc.proc, tag)
        except RuntimeError as e:
            self.proc.stop()
            raise AssertionError("%s: %s" % (e, self.proc.tail())) from None
        self.channel = None
        if channel:
            self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
            self.stub = PBG.GRPCInferenceServiceStub(self.channel)
            self.health = HPBG.HealthStub(self.channel)

    def counters(self):
        """fsps-serve's request counters, from its /metrics."""
        m = parse(scrape(self.proc.port))
        return {k: int(m[("fsps_serve_%s_total" % k, "")])
                for k in ("requests", "answered", "batches", "rows")}

    def stop(self):
        """SIGTERM: it must exit 0 with no sanitizer report."""
        if self.channel is not None:
            self.channel.close()
        code = self.proc.stop()
        assert code == 0, "exit %s: %s" % (code, self.proc.tail())
        report = self.proc.sanitizer_report()
        assert report is None, report


def request(x, raw=True, **kw):
    req = PB.ModelInferRequest(model_name=kw.pop("model", "fsps-mlp"), **kw)
    t = req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    if raw:
        req.raw_input_contents.append(x.astype("<f4").tobytes())
    else:
        t.contents.fp32_contents.extend(x.ravel().tolist())
    return req


def outputs(rep):
    """{name: array} of a reply's raw outputs."""
    out = {}
    for t, raw in zip(rep.outputs, rep.raw_output_contents):
        dt = {"FP32": "<f4", "INT64": "<i8"}[t.datatype]
        out[t.name] = np.frombuffer(raw, dtype=dt).reshape(list(t.shape))
    return out


class OnlineTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.layers = TRAINED["layers"]
        cls.host = Serve(TRAINED["tmp"], "main",
                         ["--checkpoint-dir", TRAINED["ckpt"]],
                         "--max-batch", "64", "--max-delay-us", "1000")
        cls.rng = np.random.default_rng(1)

    @classmethod
    def tearDownClass(cls):
        cls.host.stop()

    def rows(self, n):
        return self.rng.standard_normal((n, WIDTHS[0])).astype(np.float32)

    def check(self, rep, x):
        check(self, rep, x, self.layers, str(STEPS))

    def test_ready_live_health_metadata(self):
        s = self.host.stub
        self.assertTrue(s.ServerLive(PB.ServerLiveRequest()).live)
        self.assertTrue(s.ServerReady(PB.ServerReadyRequest()).ready)
        self.assertTrue(s.ModelReady(PB.ModelReadyRequest(name="fsps-mlp")).ready)
        h = self.host.health.Check(HPB.HealthCheckRequest())
        self.assertEqual(h.status, HPB.HealthCheckResponse.SERVING)
        md = s.ServerMetadata(PB.ServerMetadataRequest())
        self.assertEqual(md.name, "fsps-serve")
        mm = s.ModelMetadata(PB.ModelMetadataRequest(name="fsps-mlp"))
        self.assertEqual(list(mm.versions), [str(STEPS)])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in mm.inputs],
                         [("input", "FP32", [-1, WIDTHS[0]])])
        self.assertEqual([(t.name, t.datatype, list(t.shape)) for t in mm.outputs],
                         [("probabilities", "FP32", [-1, WIDTHS[-1]]),
                          ("class", "INT64", [-1])])

    def test_infer_raw_and_fp32_contents(self):
        x = self.rows(5)
        raw = self.host.stub.ModelInfer(request(x, raw=True, id="a-1"))
        self.assertEqual(raw.id, "a-1")
        self.check(raw, x)
        typed = self.host.stub.ModelInfer(request(x, raw=False))
        self.check(typed, x)
        # the same rows alone in their batch: the same bits either way
        self.assertEqual(list(raw.raw_output_contents),
                         list(typed.raw_output_contents))

    def test_outputs_named(self):
        x = self.rows(3)
        req = request(x)
        req.outputs.add(name="class")
        rep = self.host.stub.ModelInfer(req)
        self.assertEqual([t.name for t in rep.outputs], ["class"])
        np.testing.assert_array_equal(outputs(rep)["class"],
                                      reference(self.layers, x)[1])

    def test_bad_input_statuses(self):
        x = self.rows(2)
        cases = [
            (request(x, model="resnet50"), grpc.StatusCode.NOT_FOUND),
            (request(x, model_version=str(STEPS - 1)),
             grpc.StatusCode.NOT_FOUND),
            (request(x[:, :-1]), grpc.StatusCode.INVALID_ARGUMENT),
            (request(x[:0]), grpc.StatusCode.INVALID_ARGUMENT),
            (request(np.where(x > 0, np.nan, x).astype(np.float32)),
             grpc.StatusCode.INVALID_ARGUMENT),
            (request(np.full_like(x, np.inf), raw=False),
             grpc.StatusCode.INVALID_ARGUMENT),
        ]
        fp64 = request(x)
        fp64.inputs[0].datatype = "FP64"
        cases.append((fp64, grpc.StatusCode.INVALID_ARGUMENT))
        short = request(x)
        short.raw_input_contents[0] = short.raw_input_contents[0][:-4]
        cases.append((short, grpc.StatusCode.INVALID_ARGUMENT))
        huge = request(x)
        huge.inputs[0].shape[0] = 1 << 40
        cases.append((huge, grpc.StatusCode.RESOURCE_EXHAUSTED))
        big = request(x)  # a message past the port's 64 MiB limit
        big.raw_input_contents[0] = bytes(65 << 20)
        cases.append((big, grpc.StatusCode.RESOURCE_EXHAUSTED))
        for req, code in cases:
            with self.assertRaises(grpc.RpcError) as e:
                self.host.stub.ModelInfer(req)
            self.assertEqual(e.exception.code(), code, e.exception.details())
            self.assertTrue(e.exception.details())
        self.check(self.host.stub.ModelInfer(request(x)), x)  # still serving

    def test_64_concurrent_requests(self):
        """64 one-row requests in flight at once, answered correctly."""
        xs = [self.rows(1) for _ in range(64)]
        futures = [self.host.stub.ModelInfer.future(request(x)) for x in xs]
        for f, x in zip(futures, xs):
            self.check(f.result(timeout=60), x)


def check(test, rep, x, layers, version):
    """rep answers rows x with the model `layers` at `version`."""
    probs, cls = reference(layers, x)
    out = outputs(rep)
    test.assertEqual(rep.model_name, "fsps-mlp")
    test.assertEqual(rep.model_version, version)
    test.assertEqual(out["probabilities"].shape, (len(x), WIDTHS[-1]))
    np.testing.assert_allclose(out["probabilities"], probs, rtol=0, atol=2e-6)
    np.testing.assert_array_equal(out["class"], cls)


class BatchingTest(unittest.TestCase):
    """fsps-serve --max-delay-us 10000000 (its most), so that a batch goes
    when 64 rows wait (or 10 s pass): the 64 concurrent requests must be
    computed in fewer computations than requests, as the replies and its
    /metrics say."""

    def test_batched(self):
        host = Serve(TRAINED["tmp"], "batch",
                     ["--checkpoint-dir", TRAINED["ckpt"]],
                     "--max-batch", "64", "--max-delay-us", "10000000")
        try:
            rng = np.random.default_rng(2)
            xs = [rng.standard_normal((1, WIDTHS[0])).astype(np.float32)
                  for _ in range(64)]
            fs = [host.stub.ModelInfer.future(request(x)) for x in xs]
            reps = [f.result(timeout=120) for f in fs]
            batches = set()
            for rep, x in zip(reps, xs):
                check(self, rep, x, TRAINED["layers"], str(STEPS))
                batches.add(rep.parameters["fsps_batch"].int64_param)
            stats = host.counters()
        finally:
            host.stop()
        self.assertLess(len(batches), 64)
        self.assertEqual(stats["requests"], 64)
        self.assertEqual(stats["answered"], 64)
        self.assertEqual(stats["rows"], 64)
        self.assertLess(stats["batches"], 64)
        self.assertEqual(stats["batches"], len(batches))


class ReadinessTest(unittest.TestCase):
    """fsps-serve --servers started before the servers hold a model: live,
    not ready, NOT_SERVING, ModelInfer UNAVAILABLE; once a worker has
    declared the model and trained 3 steps, ready and serving version 3,
    with the servers' weights."""

    def test_not_ready_then_ready(self):
        with tempfile.TemporaryDirectory() as tmp:
            srv, addr = start_server(tmp)
            try:
                self.not_ready_then_ready(tmp, addr)
            finally:
                code = srv.stop()
            self.assertEqual(code, 0, srv.tail())

    def not_ready_then_ready(self, tmp, addr):
        host = Serve(tmp, "ready", ["--servers", addr, "--poll-ms", "20"])
        try:
            s = host.stub
            self.assertTrue(s.ServerLive(PB.ServerLiveRequest()).live)
            self.assertFalse(s.ServerReady(PB.ServerReadyRequest()).ready)
            self.assertFalse(
                s.ModelReady(PB.ModelReadyRequest(name="fsps-mlp")).ready)
            self.assertEqual(host.health.Check(HPB.HealthCheckRequest()).status,
                             HPB.HealthCheckResponse.NOT_SERVING)
            x = np.ones((2, WIDTHS[0]), np.float32)
            with self.assertRaises(grpc.RpcError) as e:
                s.ModelInfer(request(x))
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            train(addr, 3)
            layers, version = export(tmp, "--servers", addr)
            self.assertEqual(version, "3")
            # Polled: fsps-serve looks for a newer version every 20 ms.
            deadline = time.monotonic() + 60
            while (list(self.versions(s)) != ["3"] and
                   time.monotonic() < deadline):
                time.sleep(0.02)
            self.assertTrue(s.ServerReady(PB.ServerReadyRequest()).ready)
            self.assertEqual(host.health.Check(HPB.HealthCheckRequest()).status,
                             HPB.HealthCheckResponse.SERVING)
            check(self, s.ModelInfer(request(x)), x, layers, "3")
        finally:
            host.stop()

    @staticmethod
    def versions(stub):
        try:
            return stub.ModelMetadata(
                PB.ModelMetadataRequest(name="fsps-mlp")).versions
        except grpc.RpcError:  # UNAVAILABLE until the first load
            return []


class TlsTest(unittest.TestCase):
    """Mutual TLS on the serving port (--serve-tls-cert, --serve-tls-key,
    --serve-tls-client-ca): a client with a certificate the client CA
    signed is served; one without is refused."""

    def test_mutual_tls(self):
        sys.path.insert(0, os.path.join(HERE, ".."))
        from tls_certs import Pki
        with tempfile.TemporaryDirectory() as tmp:
            pki = Pki(tmp)
            ca = pki.ca("ca")
            srv, cli = pki.leaf("server", ca), pki.leaf("client", ca)
            host = Serve(tmp, "tls", ["--checkpoint-dir", TRAINED["ckpt"]],
                         "--serve-tls-cert", srv.cert, "--serve-tls-key",
                         srv.key, "--serve-tls-client-ca", ca.cert,
                         channel=False)

            def read(path):
                with open(path, "rb") as f:
                    return f.read()

            try:
                good = grpc.secure_channel(
                    "127.0.0.1:%d" % host.port, grpc.ssl_channel_credentials(
                        read(ca.cert), read(cli.key), read(cli.cert)))
                stub = PBG.GRPCInferenceServiceStub(good)
                self.assertTrue(stub.ServerReady(PB.ServerReadyRequest()).ready)
                x = np.ones((2, WIDTHS[0]), np.float32)
                check(self, stub.ModelInfer(request(x)), x, TRAINED["layers"],
                      str(STEPS))
                good.close()
                bare = grpc.secure_channel(
                    "127.0.0.1:%d" % host.port,
                    grpc.ssl_channel_credentials(read(ca.cert)))
                with self.assertRaises(grpc.RpcError) as e:
                    PBG.GRPCInferenceServiceStub(bare).ServerReady(
                        PB.ServerReadyRequest(), timeout=10)
                self.assertEqual(e.exception.code(),
                                 grpc.StatusCode.UNAVAILABLE)
                bare.close()
            finally:
                host.stop()


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True, help="the build folder")
    p.add_argument("--proto", required=True)
    ARGS, rest = p.parse_known_args()
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        sys.exit("needs python3-grpc-tools (scripts/setup.sh installs it)")
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
