#!/usr/bin/python3
"""Interoperability over TLS: Debian's grpcio, an independent gRPC and TLS
stack, against a real fsps-server with mutual TLS (certificates made here
with the openssl tool): health, Init, Push, Pull and Status work with the
right certificates; a plaintext channel, another CA, no client
certificate, a client certificate of another CA, an expired client
certificate and an expired server certificate are each refused.

Usage: test_tls.py --server PATH/fsps-server --proto PATH/fsps.proto
"""
import argparse
import os
import shutil
import sys
import tempfile
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, ".."))
import test_python as base  # noqa: E402  (sets grpcio's fork support off)
from test_python import f32, pack  # noqa: E402
from tls_certs import Pki  # noqa: E402
import grpc  # noqa: E402

ARGS = None
PKI = None


def read(path):
    with open(path, "rb") as f:
        return f.read()


def creds(ca, client=None):
    return grpc.ssl_channel_credentials(
        read(ca.cert), read(client.key) if client else None,
        read(client.cert) if client else None)


class TlsServer(base.Server):
    """A real fsps-server with mutual TLS; .channel is a grpcio TLS
    channel with the given credentials."""

    def __init__(self, tmp, server_cert, channel_creds, *flags, options=()):
        super().__init__(tmp, "--tls-cert", server_cert.cert, "--tls-key",
                         server_cert.key, "--tls-client-ca", PKI.ca.cert,
                         *flags)
        self.channel.close()
        self.target = "127.0.0.1:%d" % self.port
        self.channel = grpc.secure_channel(self.target, channel_creds,
                                           options=list(options))

    def check(self, channel=None):
        return (channel or self.channel).unary_unary(
            "/grpc.health.v1.Health/Check")(b"", timeout=30)


class TlsInteropTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fsps-interop-tls-")
        self.servers = []

    def tearDown(self):
        codes = [s.stop() for s in self.servers]
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(codes, [0] * len(codes))

    def server(self, cert, channel_creds, *flags, **kw):
        s = TlsServer(self.tmp, cert, channel_creds, *flags, **kw)
        self.servers.append(s)
        return s

    def refused(self, channel, srv):
        with self.assertRaises(grpc.RpcError) as cm:
            srv.check(channel)
        self.assertEqual(cm.exception.code(), grpc.StatusCode.UNAVAILABLE)
        channel.close()
        return cm.exception.details()

    def test_calls_with_certificates(self):
        srv = self.server(PKI.server, creds(PKI.ca, PKI.client))
        self.assertEqual(srv.check(), b"\x08\x01")  # SERVING
        r = srv.unary("Init", base.PB.InitRequest(
            spec=base.model_spec(), num_servers=1, server_index=0),
            base.PB.InitReply)
        self.assertTrue(r.created)
        values, versions = srv.pull(0)
        self.assertEqual(values, [0.5] * 15 + [0.0] * 3)
        reply = srv.push([base.PB.PushChunk(layer=0, step=0, worker=0,
                                            data=pack([1.0] * 18))])
        self.assertEqual(reply.version, 1)
        values, versions = srv.pull(0, min_version=1)
        self.assertEqual(values[:15], [f32(0.5 - f32(0.1))] * 15)
        self.assertEqual(set(versions), {1})
        self.assertEqual(srv.status().layers[0].version, 1)
        # The name the certificate carries, given instead of the address.
        named = grpc.secure_channel(
            srv.target, creds(PKI.ca, PKI.client),
            options=[("grpc.ssl_target_name_override", "localhost")])
        self.assertEqual(srv.check(named), b"\x08\x01")
        named.close()

    def test_refusals(self):
        srv = self.server(PKI.server, creds(PKI.ca, PKI.client))
        self.refused(grpc.insecure_channel(srv.target), srv)
        d = self.refused(grpc.secure_channel(
            srv.target, creds(PKI.ca2, PKI.client)), srv)
        self.assertIn("certificate verify failed", d)
        self.refused(grpc.secure_channel(srv.target, creds(PKI.ca)), srv)
        self.refused(grpc.secure_channel(
            srv.target, creds(PKI.ca, PKI.client_ca2)), srv)
        self.refused(grpc.secure_channel(
            srv.target, creds(PKI.ca, PKI.client_expired)), srv)
        self.assertEqual(srv.check(), b"\x08\x01")  # still serving

    def test_expired_server_certificate(self):
        srv = self.server(PKI.server_expired, creds(PKI.ca, PKI.client))
        d = self.refused(srv.channel, srv)
        self.assertIn("certificate verify failed", d)


def make_pki(folder):
    pki = Pki(folder)
    c = types.SimpleNamespace(ca=pki.ca("ca1"), ca2=pki.ca("ca2"))
    for name, ca, expired in (
            ("server", c.ca, False), ("server_expired", c.ca, True),
            ("client", c.ca, False), ("client_ca2", c.ca2, False),
            ("client_expired", c.ca, True)):
        setattr(c, name, pki.leaf(name, ca, expired=expired))
    return c


def main():
    global ARGS, PKI
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--proto", required=True)
    ARGS, rest = ap.parse_known_args()
    base.ARGS = ARGS
    folder = tempfile.mkdtemp(prefix="fsps-interop-pki-")
    try:
        base.PB = base.generate_pb(folder)
        PKI = make_pki(os.path.join(folder, "pki"))
        prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False,
                             verbosity=2)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    r = prog.result
    failed = len(r.failures) + len(r.errors)
    print("%d passed, %d failed" % (r.testsRun - failed, failed))
    sys.exit(0 if r.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
