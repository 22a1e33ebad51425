#!/usr/bin/python3
"""An unmodified open inference protocol (v2) client on an independent gRPC
stack (Debian's python3-grpcio, with the stub python3-grpc-tools generates
from proto/grpc_predict_v2.proto) against serve/online, hosted by
tests/serve_online_host: readiness false then true, health, metadata,
ModelInfer with raw_input_contents and with contents.fp32_contents checked
against numpy, outputs named, each bad input's status, 64 concurrent
requests answered correctly in fewer computations than requests, and mutual
TLS on the port.

Usage: test_serve_online.py --host PATH/serve_online_host
                            --proto PATH/grpc_predict_v2.proto
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

# grpcio's fork handlers can deadlock a subprocess launch (see
# interop/test_python.py); no child here uses gRPC.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
import grpc  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "integration"))
from metrics_harness import DIE_WITH_PARENT, wait_file  # noqa: E402

ARGS = None
PB = PBG = HPB = HPBG = None  # generated modules
WIDTHS = [20, 32, 6]
HEALTH_PROTO = "/usr/share/grpc-proto/grpc/health/v1/health.proto"


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


def make_params(path, seed=7):
    """Random layer vectors (weight [out][in], then bias) written raw;
    returns them as [(W, b)] float32 arrays."""
    rng = np.random.default_rng(seed)
    layers, flat = [], []
    for i, o in zip(WIDTHS, WIDTHS[1:]):
        w = (rng.standard_normal((o, i)) / np.sqrt(i)).astype(np.float32)
        b = (0.1 * rng.standard_normal(o)).astype(np.float32)
        layers.append((w, b))
        flat += [w.ravel(), b]
    np.concatenate(flat).astype("<f4").tofile(path)
    return layers


def reference(layers, x):
    """Softmax probabilities and classes, in float64."""
    h = x.astype(np.float64)
    for k, (w, b) in enumerate(layers):
        h = h @ w.astype(np.float64).T + b
        if k + 1 < len(layers):
            h = np.maximum(h, 0)
    z = np.exp(h - h.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True), h.argmax(axis=1)


class Host:
    """serve_online_host on an ephemeral loopback port."""

    def __init__(self, tmp, tag, *flags, channel=True):
        self.port_file = os.path.join(tmp, "port-" + tag)
        self.log_path = os.path.join(tmp, tag + ".log")
        self.log = open(self.log_path, "w+")
        self.out = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            DIE_WITH_PARENT + [ARGS.host, "--widths",
                               "mlp:" + ",".join(map(str, WIDTHS)),
                               "--port-file", self.port_file] + list(flags),
            stdout=self.out, stderr=self.log)
        self.port = wait_file(self.port_file, self.proc, tag)
        self.channel = None
        if channel:
            self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)
            self.stub = PBG.GRPCInferenceServiceStub(self.channel)
            self.health = HPBG.HealthStub(self.channel)

    def stop(self):
        """SIGTERM; returns the counters it printed."""
        if self.channel is not None:
            self.channel.close()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.log.close()
        with open(self.log_path) as f:
            log = f.read()
        assert code == 0, "exit %d: %s" % (code, log)
        assert "Sanitizer" not in log and "runtime error" not in log, log
        self.out.seek(0)
        text = self.out.read()
        self.out.close()
        return json.loads(text.strip().splitlines()[-1])


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
        cls.tmp = tempfile.TemporaryDirectory()
        generate(cls.tmp.name)
        params = os.path.join(cls.tmp.name, "params.f32")
        cls.layers = make_params(params)
        cls.host = Host(cls.tmp.name, "main", "--params", params,
                        "--version", "7", "--max-batch", "64",
                        "--max-delay-us", "1000")
        cls.rng = np.random.default_rng(1)

    @classmethod
    def tearDownClass(cls):
        cls.host.stop()
        cls.tmp.cleanup()

    def rows(self, n):
        return self.rng.standard_normal((n, WIDTHS[0])).astype(np.float32)

    def check(self, rep, x):
        probs, cls = reference(self.layers, x)
        out = outputs(rep)
        self.assertEqual(rep.model_name, "fsps-mlp")
        self.assertEqual(rep.model_version, "7")
        self.assertEqual(out["probabilities"].shape, (len(x), WIDTHS[-1]))
        np.testing.assert_allclose(out["probabilities"], probs, rtol=0,
                                   atol=2e-6)
        np.testing.assert_array_equal(out["class"], cls)

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
        self.assertEqual(list(mm.versions), ["7"])
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
            (request(x, model_version="6"), grpc.StatusCode.NOT_FOUND),
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


class BatchingTest(unittest.TestCase):
    """A host whose batches wait up to 60 s, so that one goes only when 64
    rows wait: the 64 concurrent requests must be computed in fewer
    computations than requests, as the replies and the counters say."""

    def test_batched(self):
        with tempfile.TemporaryDirectory() as tmp:
            generate_once(tmp)
            params = os.path.join(tmp, "params.f32")
            layers = make_params(params, seed=3)
            host = Host(tmp, "batch", "--params", params, "--max-batch",
                        "64", "--max-delay-us", "60000000")
            rng = np.random.default_rng(2)
            xs = [rng.standard_normal((1, WIDTHS[0])).astype(np.float32)
                  for _ in range(64)]
            fs = [host.stub.ModelInfer.future(request(x)) for x in xs]
            reps = [f.result(timeout=120) for f in fs]
            batches = set()
            for rep, x in zip(reps, xs):
                probs, cls = reference(layers, x)
                out = outputs(rep)
                np.testing.assert_allclose(out["probabilities"], probs,
                                           atol=2e-6, rtol=0)
                np.testing.assert_array_equal(out["class"], cls)
                batches.add(rep.parameters["fsps_batch"].int64_param)
            stats = host.stop()
            self.assertLess(len(batches), 64)
            self.assertEqual(stats["requests"], 64)
            self.assertEqual(stats["answered"], 64)
            self.assertLess(stats["batches"], 64)
            self.assertEqual(stats["batches"], len(batches))


class ReadinessTest(unittest.TestCase):
    """Not ready until the model is loaded (SIGUSR1 to the host)."""

    def test_not_ready_then_ready(self):
        with tempfile.TemporaryDirectory() as tmp:
            generate_once(tmp)
            host = Host(tmp, "ready", "--wait-usr1", "--version", "3")
            s = host.stub
            self.assertTrue(s.ServerLive(PB.ServerLiveRequest()).live)
            self.assertFalse(s.ServerReady(PB.ServerReadyRequest()).ready)
            self.assertFalse(
                s.ModelReady(PB.ModelReadyRequest(name="fsps-mlp")).ready)
            self.assertEqual(host.health.Check(HPB.HealthCheckRequest()).status,
                             HPB.HealthCheckResponse.NOT_SERVING)
            x = np.zeros((1, WIDTHS[0]), np.float32)
            with self.assertRaises(grpc.RpcError) as e:
                s.ModelInfer(request(x))
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            host.proc.send_signal(signal.SIGUSR1)
            # Polled: the signal is taken by the host's own thread.
            deadline = time.monotonic() + 60
            while (not s.ServerReady(PB.ServerReadyRequest()).ready and
                   time.monotonic() < deadline):
                time.sleep(0.01)
            self.assertTrue(s.ServerReady(PB.ServerReadyRequest()).ready)
            self.assertEqual(s.ModelInfer(request(x)).model_version, "3")
            host.stop()


class TlsTest(unittest.TestCase):
    """Mutual TLS on the serving port: a client with a certificate the
    client CA signed is served; one without is refused."""

    def test_mutual_tls(self):
        sys.path.insert(0, os.path.join(os.path.dirname(
            os.path.abspath(__file__)), ".."))
        from tls_certs import Pki
        with tempfile.TemporaryDirectory() as tmp:
            generate_once(tmp)
            pki = Pki(tmp)
            ca = pki.ca("ca")
            srv, cli = pki.leaf("server", ca), pki.leaf("client", ca)
            host = Host(tmp, "tls", "--tls-cert", srv.cert, "--tls-key",
                        srv.key, "--tls-client-ca", ca.cert, channel=False)

            def read(path):
                with open(path, "rb") as f:
                    return f.read()

            good = grpc.secure_channel(
                "127.0.0.1:%d" % host.port, grpc.ssl_channel_credentials(
                    read(ca.cert), read(cli.key), read(cli.cert)))
            stub = PBG.GRPCInferenceServiceStub(good)
            self.assertTrue(stub.ServerReady(PB.ServerReadyRequest()).ready)
            x = np.ones((2, WIDTHS[0]), np.float32)
            self.assertEqual(len(stub.ModelInfer(request(x)).outputs), 2)
            good.close()
            bare = grpc.secure_channel(
                "127.0.0.1:%d" % host.port,
                grpc.ssl_channel_credentials(read(ca.cert)))
            with self.assertRaises(grpc.RpcError) as e:
                PBG.GRPCInferenceServiceStub(bare).ServerReady(
                    PB.ServerReadyRequest(), timeout=10)
            self.assertEqual(e.exception.code(), grpc.StatusCode.UNAVAILABLE)
            bare.close()
            host.stop()


def generate_once(tmp):
    if PB is None:
        generate(tmp)


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--host", required=True)
    p.add_argument("--proto", required=True)
    ARGS, rest = p.parse_known_args()
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        sys.exit("needs python3-grpc-tools (scripts/setup.sh installs it)")
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
