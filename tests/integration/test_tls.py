#!/usr/bin/python3
"""TLS and mutual TLS with real processes: fsps-server, fsps-worker,
fsps-ctl and fsps-health, with certificates made here by the openssl tool
(tests/tls_certs.py) in a temporary folder.

- Refused: a plaintext client, a server certificate of another CA, no
  client certificate, a client certificate of another CA, an expired server
  certificate, a certificate that does not name the address.
- Bad input: missing or unreadable files, a key that is not the
  certificate's, files that are not PEM — a message naming the file, a
  non-zero exit, and no port ever announced.
- The plaintext health port answers grpc.health.v1 and nothing else.
- 2 servers and 2 workers over TLS with client certificates reach the
  parameters of the same plaintext run bit for bit (--deterministic); so
  do they with tokens on too (--auth-tokens; rank 0 admin by --token-file,
  rank 1 worker by FSPS_TOKEN_FILE), where a client with a certificate but
  no token, or a token but no certificate, is refused.
- Certificates replaced (symlink swaps, as the kubelet does with Secrets)
  while training: new connections get the new certificate, the call in
  flight and the old connection finish, the result is still bit-identical;
  a bad new set is refused and the previous kept.

Usage: test_tls.py --bin BUILD_DIR
"""
import argparse
import json
import os
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import types
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
from tls_certs import Pki, SecretDir  # noqa: E402

ARGS = None
PKI = None  # certificates shared by every test, made once

# Every child is started through setpriv(1) with PDEATHSIG set, so that no
# server or worker outlives its test (and holds ctest's output pipe). Not
# with a preexec_fn doing prctl: that makes subprocess fork() this process
# and run Python in the child, which hung a launch now and then under load.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]

# Generous: CI runs this on 2 busy cores, in sanitizer builds too.
START_S = 90
RUN_S = 600
# fsps-health asks a refusing server again until this runs out, and reports
# OpenSSL's reason if an attempt got that far (slow under TSan).
REFUSED_MS = "10000"


def binary(*parts):
    return os.path.join(ARGS.bin, *parts)


def run(args, env=None, timeout=RUN_S):
    """Runs a short-lived tool; returns (exit code, stdout, stderr)."""
    full = dict(os.environ)
    full.update(env or {})
    r = subprocess.run(DIE_WITH_PARENT + args, capture_output=True,
                       text=True, timeout=timeout, env=full)
    no_sanitizer_report(r.stderr)
    return r.returncode, r.stdout, r.stderr


def no_sanitizer_report(text):
    """In the sanitizer builds a report makes a process exit non-zero;
    where a test expects a failure, this tells the two apart."""
    if "Sanitizer" in text:
        raise AssertionError("sanitizer report:\n" + text)


def ctl(*args, env=None):
    return run([binary("ctl", "fsps-ctl")] + list(args), env=env)


def health(*args, env=None):
    return run([binary("tests", "fsps-health")] + list(args), env=env)


def tls_flags(ca, client=None):
    flags = ["--tls-ca", ca]
    if client is not None:
        flags += ["--tls-cert", client.cert, "--tls-key", client.key]
    return flags


def wait_for(what, fn, timeout=START_S):
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def served_serial(port, ca, client):
    """Opens a new TLS connection as a client of ca with client's
    certificate; returns the serial number the server's certificate
    carries (hex, upper case), or raises ssl.SSLError when it is refused."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.load_cert_chain(client.cert, client.key)
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        with ctx.wrap_socket(s, server_hostname="127.0.0.1") as t:
            return t.getpeercert()["serialNumber"].upper().lstrip("0")


class Server:
    """A real fsps-server on an ephemeral loopback port, its log in a file."""

    def __init__(self, tmp, flags, index=0, S=1, W=1, wait=True):
        tag = "%d-%d" % (index, time.monotonic_ns())
        self.port_file = os.path.join(tmp, "port-" + tag)
        self.health_file = os.path.join(tmp, "hport-" + tag)
        self.log = os.path.join(tmp, "server-%s.log" % tag)
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                DIE_WITH_PARENT +
                [binary("server", "fsps-server"), "--listen", "127.0.0.1:0",
                 "--port-file", self.port_file, "--index", str(index),
                 "--num-servers", str(S), "--workers", str(W),
                 "--health-listen", "127.0.0.1:0", "--health-port-file",
                 self.health_file] + list(flags),
                stderr=err)
        self.port = self.health_port = None
        if wait:
            self.port = self.read_port(self.port_file)
            self.health_port = self.read_port(self.health_file)

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def read_port(self, path):
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("fsps-server exited %d: %s" %
                                     (self.proc.returncode, self.logged()))
            return os.path.exists(path) and os.path.getsize(path) > 0
        wait_for("fsps-server's port file", ready)
        with open(path) as f:
            return int(f.read())

    def logged(self):
        with open(self.log) as f:
            return f.read()

    def wait_logged(self, text, count=1):
        wait_for("'%s' in the server's log" % text,
                 lambda: self.logged().count(text) >= count)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


class TlsCase(unittest.TestCase):
    """Each test's servers are stopped (exit 0 expected) and its folder
    removed."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fsps-tls-")
        self.servers = []

    def tearDown(self):
        codes = [s.stop() for s in self.servers]
        logs = [s.logged() for s in self.servers]
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.assertEqual(codes, [0] * len(codes), "\n".join(logs))
        for text in logs:
            no_sanitizer_report(text)

    def server(self, *flags, **kw):
        s = Server(self.tmp, flags, **kw)
        self.servers.append(s)
        return s

    def mtls_server(self, cert=None, **kw):
        cert = cert or PKI.server
        return self.server("--tls-cert", cert.cert, "--tls-key", cert.key,
                           "--tls-client-ca", PKI.ca.cert, **kw)


class RefusalTest(TlsCase):
    """One mutual-TLS server; each wrong client is refused."""

    def setUp(self):
        super().setUp()
        self.srv = self.mtls_server()

    def test_mutual_tls_works(self):
        code, out, err = health(*tls_flags(PKI.ca.cert, PKI.client),
                                self.srv.addr)
        self.assertEqual(code, 0, err)
        self.assertIn("SERVING", out)
        code, out, err = ctl("status", "--servers", self.srv.addr, "--json",
                             *tls_flags(PKI.ca.cert, PKI.client))
        self.assertEqual(code, 0, err)
        self.assertIsNone(json.loads(out)["servers"][0]["error"])
        self.assertEqual(served_serial(self.srv.port, PKI.ca.cert,
                                       PKI.client), PKI.server.serial())
        self.assertIn("TLS: serving certificate /CN=server",
                      self.srv.logged())

    def test_environment_variables(self):
        env = {"FSPS_TLS_CA": PKI.ca.cert, "FSPS_TLS_CERT": PKI.client.cert,
               "FSPS_TLS_KEY": PKI.client.key}
        code, _, err = ctl("status", "--servers", self.srv.addr, env=env)
        self.assertEqual(code, 0, err)
        code, _, err = health(self.srv.addr, env=env)
        self.assertEqual(code, 0, err)

    def test_plaintext_client_refused(self):
        code, _, err = health("--timeout-ms", "3000", self.srv.addr)
        self.assertEqual(code, 1, err)
        code, out, err = ctl("status", "--servers", self.srv.addr,
                             "--timeout", "5")
        self.assertEqual(code, 3, err)
        self.assertIn("UNAVAILABLE", out)
        self.srv.wait_logged("wrong version number")

    def test_server_certificate_of_another_ca_refused(self):
        code, _, err = health("--timeout-ms", REFUSED_MS,
                              *tls_flags(PKI.ca2.cert, PKI.client),
                              self.srv.addr)
        self.assertEqual(code, 1, err)
        self.assertIn("certificate verify failed", err)

    def test_no_client_certificate_refused(self):
        code, _, err = health("--timeout-ms", "3000",
                              *tls_flags(PKI.ca.cert), self.srv.addr)
        self.assertEqual(code, 1, err)
        code, _, err = ctl("status", "--servers", self.srv.addr, "--timeout",
                           "5", *tls_flags(PKI.ca.cert))
        self.assertEqual(code, 3, err)
        self.srv.wait_logged("peer did not return a certificate")

    def test_client_certificate_of_another_ca_refused(self):
        code, _, err = ctl("status", "--servers", self.srv.addr, "--timeout",
                           "5", *tls_flags(PKI.ca.cert, PKI.client_ca2))
        self.assertEqual(code, 3, err)
        self.srv.wait_logged("certificate verify failed")

    def test_expired_client_certificate_refused(self):
        code, _, err = ctl("status", "--servers", self.srv.addr,
                           *tls_flags(PKI.ca.cert, PKI.client_expired))
        self.assertEqual(code, 2, err)
        self.assertIn("client_expired.crt", err)
        self.assertIn("expired on 2020-02-01", err)

    def test_server_name(self):
        # The certificate names IP:127.0.0.1 and DNS:localhost.
        code, _, err = health("--tls-server-name", "localhost",
                              *tls_flags(PKI.ca.cert, PKI.client),
                              self.srv.addr)
        self.assertEqual(code, 0, err)
        code, _, err = health("--timeout-ms", REFUSED_MS, "--tls-server-name",
                              "elsewhere.example",
                              *tls_flags(PKI.ca.cert, PKI.client),
                              self.srv.addr)
        self.assertEqual(code, 1, err)
        self.assertIn("elsewhere.example", err)

    def test_health_port_serves_health_alone(self):
        hp = "127.0.0.1:%d" % self.srv.health_port
        code, out, err = health(hp)
        self.assertEqual(code, 0, err)
        self.assertIn("SERVING", out)
        code, out, err = ctl("status", "--servers", hp, "--timeout", "10")
        self.assertEqual(code, 1, out + err)
        self.assertIn("UNIMPLEMENTED", out + err)


class ExpiredServerTest(TlsCase):
    def test_expired_server_certificate_refused(self):
        srv = self.mtls_server(cert=PKI.server_expired)
        self.assertIn("is expired: clients will refuse it", srv.logged())
        code, _, err = health("--timeout-ms", REFUSED_MS,
                              *tls_flags(PKI.ca.cert, PKI.client), srv.addr)
        self.assertEqual(code, 1, err)
        self.assertIn("certificate verify failed", err)
        code, _, err = ctl("status", "--servers", srv.addr, "--timeout", "5",
                           *tls_flags(PKI.ca.cert, PKI.client))
        self.assertEqual(code, 3, err)


class BadInputTest(TlsCase):
    def server_fails(self, *flags, code=1):
        """Starts a server that must stop at once with exit status code:
        returns its stderr."""
        s = Server(self.tmp, flags, wait=False)
        try:
            got = s.proc.wait(timeout=START_S)
        finally:
            if s.proc.poll() is None:
                s.proc.kill()
                s.proc.wait()
        no_sanitizer_report(s.logged())
        self.assertEqual(got, code, s.logged())
        # Nothing half-started: no port was ever announced.
        self.assertFalse(os.path.exists(s.port_file))
        self.assertFalse(os.path.exists(s.health_file))
        return s.logged()

    def test_server_files(self):
        missing = os.path.join(self.tmp, "missing.crt")
        srv, key = PKI.server.cert, PKI.server.key
        err = self.server_fails("--tls-cert", missing, "--tls-key", key)
        self.assertIn("cannot read the TLS certificate " + missing, err)
        self.assertIn("No such file", err)
        metrics_port = os.path.join(self.tmp, "metrics-port")
        err = self.server_fails("--tls-cert", srv, "--tls-key",
                                PKI.client.key, "--metrics-listen",
                                "127.0.0.1:0", "--metrics-port-file",
                                metrics_port)
        self.assertIn("the key %s does not match the certificate %s"
                      % (PKI.client.key, srv), err)
        # Refused before anything starts: not even the metrics endpoint.
        self.assertFalse(os.path.exists(metrics_port))
        err = self.server_fails("--tls-cert", key, "--tls-key", key)
        self.assertIn("%s holds no PEM certificate" % key, err)
        err = self.server_fails("--tls-cert", srv, "--tls-key", srv)
        self.assertIn("%s holds no PEM private key" % srv, err)
        err = self.server_fails("--tls-cert", srv, "--tls-key", key,
                                "--tls-client-ca", key)
        self.assertIn("the client CA file %s holds no PEM certificate" % key,
                      err)
        err = self.server_fails("--tls-cert", srv, code=2)
        self.assertIn("--tls-cert and --tls-key go together", err)
        err = self.server_fails("--tls-client-ca", PKI.ca.cert, code=2)
        self.assertIn("--tls-client-ca (mutual TLS) needs --tls-cert", err)

    def test_server_environment(self):
        env_missing = os.path.join(self.tmp, "nope.key")
        code, _, err = run([binary("server", "fsps-server"), "--listen",
                            "127.0.0.1:0"],
                           env={"FSPS_TLS_CERT": PKI.server.cert,
                                "FSPS_TLS_KEY": env_missing})
        self.assertEqual(code, 1, err)
        self.assertIn(env_missing, err)

    def test_client_files(self):
        missing = os.path.join(self.tmp, "missing-ca.crt")
        code, _, err = run([binary("worker", "fsps-worker"), "--servers",
                            "127.0.0.1:1", "--synthetic", "64", "--tls-ca",
                            missing])
        self.assertEqual(code, 1, err)
        self.assertIn(missing, err)
        code, _, err = ctl("status", "--servers", "127.0.0.1:1", "--tls-ca",
                           PKI.ca.cert, "--tls-cert", PKI.client.cert)
        self.assertEqual(code, 2, err)
        self.assertIn("tls_cert and tls_key go together", err)
        code, _, err = ctl("status", "--servers", "127.0.0.1:1",
                           *tls_flags(PKI.ca.cert, PKI.client),
                           "--tls-key", PKI.server.key)
        self.assertEqual(code, 2, err)
        self.assertIn("does not match the certificate", err)
        code, _, err = ctl("status", "--servers", "127.0.0.1:1",
                           env={"FSPS_TLS_CA": missing})
        self.assertEqual(code, 1, err)
        self.assertIn("cannot read the TLS CA file " + missing, err)
        code, _, err = health("--tls-cert", PKI.client.cert, "127.0.0.1:1")
        self.assertEqual(code, 2, err)
        self.assertIn("need --tls-ca", err)


def read_floats(path):
    with open(path, "rb") as f:
        data = f.read()
    return struct.unpack("<%df" % (len(data) // 4), data)


TRAIN = ["--model", "mlp:784,32,10", "--optimizer", "sgd", "--lr", "0.05",
         "--batch", "16", "--train-limit", "2000", "--max-steps", "12",
         "--seed", "3", "--no-eval", "--progress-secs", "1000"]


class TrainingTest(TlsCase):
    plain_dump = None

    def start_worker(self, servers, rank, dump, tls, env=None):
        return subprocess.Popen(
            DIE_WITH_PARENT +
            [binary("worker", "fsps-worker"), "--servers", servers, "--rank",
             str(rank), "--world", "2", "--dump", dump] + TRAIN + tls,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env)

    def finish(self, procs):
        try:
            for r, p in enumerate(procs):
                out, err = p.communicate(timeout=RUN_S)
                self.assertEqual(p.returncode, 0,
                                 "worker %d: %s" % (r, err))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()

    def cluster(self, tls_server):
        servers = []
        for s in range(2):
            flags = ["--deterministic"] + (
                tls_server(s) if tls_server else [])
            servers.append(self.server(*flags, index=s, S=2, W=2))
        return servers

    def plaintext(self):
        if TrainingTest.plain_dump is None:
            srv = self.cluster(None)
            servers = ",".join(s.addr for s in srv)
            dump = os.path.join(self.tmp, "plain.bin")
            self.finish([self.start_worker(servers, r, dump, [])
                         for r in range(2)])
            TrainingTest.plain_dump = read_floats(dump)
        return TrainingTest.plain_dump

    def test_mutual_tls_training_equals_plaintext(self):
        plain = self.plaintext()
        flags = ["--tls-cert", PKI.server.cert, "--tls-key", PKI.server.key,
                 "--tls-client-ca", PKI.ca.cert]
        srv = self.cluster(lambda s: flags)
        servers = ",".join(s.addr for s in srv)
        dump = os.path.join(self.tmp, "tls.bin")
        tls = tls_flags(PKI.ca.cert, PKI.client)
        self.finish([self.start_worker(servers, r, dump, tls)
                     for r in range(2)])
        got = read_floats(dump)
        self.assertEqual(len(got), 784 * 32 + 32 + 32 * 10 + 10)
        self.assertEqual(got, plain)
        code, out, err = ctl("status", "--servers", servers, "--json", *tls)
        self.assertEqual(code, 0, err)
        versions = {l["version"] for s in json.loads(out)["servers"]
                    for l in s["layers"]}
        self.assertEqual(versions, {12})

    def write_private(self, name, text):
        path = os.path.join(self.tmp, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def test_mutual_tls_and_tokens_training_equals_plaintext(self):
        """TLS, mutual TLS and tokens together: the same parameters as
        plaintext, bit for bit; each layer of protection still refuses on
        its own."""
        plain = self.plaintext()
        tok = {r: os.urandom(32).hex() for r in ("admin", "worker", "reader")}
        tokens = self.write_private(
            "tokens", "".join("%s %s\n" % kv for kv in tok.items()))
        files = {r: self.write_private(r + ".token", tok[r] + "\n")
                 for r in tok}
        flags = ["--tls-cert", PKI.server.cert, "--tls-key", PKI.server.key,
                 "--tls-client-ca", PKI.ca.cert, "--auth-tokens", tokens]
        srv = self.cluster(lambda s: flags)
        servers = ",".join(s.addr for s in srv)
        dump = os.path.join(self.tmp, "tls-tokens.bin")
        tls = tls_flags(PKI.ca.cert, PKI.client)
        env1 = dict(os.environ, FSPS_TOKEN_FILE=files["worker"])
        self.finish([
            self.start_worker(servers, 0, dump,
                              tls + ["--token-file", files["admin"]]),
            self.start_worker(servers, 1, dump, tls, env=env1)])
        self.assertEqual(read_floats(dump), plain)
        # A certificate without a token: UNAUTHENTICATED, exit 1.
        code, out, err = ctl("status", "--servers", servers, *tls)
        self.assertEqual(code, 1, err)
        self.assertIn("UNAUTHENTICATED", err)
        # A reader token without a client certificate: no handshake, so
        # the servers are unreachable (exit 3), never asked about a token.
        code, out, err = ctl("status", "--servers", servers, "--timeout",
                             "5", "--token-file", files["reader"],
                             *tls_flags(PKI.ca.cert))
        self.assertEqual(code, 3, err)
        self.assertIn("UNAVAILABLE", err)
        self.assertNotIn("UNAUTHENTICATED", err)
        # Both: the reader sees every layer at step 12.
        code, out, err = ctl("status", "--servers", servers, "--json",
                             "--token-file", files["reader"], *tls)
        self.assertEqual(code, 0, err)
        versions = {l["version"] for s in json.loads(out)["servers"]
                    for l in s["layers"]}
        self.assertEqual(versions, {12})
        for s in srv:
            self.assertNotIn(tok["admin"], s.logged())
            self.assertNotIn(tok["worker"], s.logged())
        self.assertIn("refused Status", srv[0].logged())

    def test_rotation_during_training(self):
        """Worker 0 starts on certificates of CA 1, pushes step 0 and waits
        (its pull of step 1 in flight); both servers' files are swapped to a
        certificate of CA 2 (client CAs: 1 and 2); new connections get the
        new one; worker 1 then joins trusting CA 2 alone, with a client
        certificate of CA 2. Worker 0 trusts CA 1 alone: it finishes on the
        connections it opened before."""
        plain = self.plaintext()
        dirs = [SecretDir(os.path.join(self.tmp, "secret%d" % s))
                for s in range(2)]
        for d in dirs:
            d.put(PKI.server.cert, PKI.server.key, PKI.ca.cert)
        srv = self.cluster(lambda s: [
            "--tls-cert", dirs[s].path("tls.crt"), "--tls-key",
            dirs[s].path("tls.key"), "--tls-client-ca",
            dirs[s].path("ca.crt")])
        servers = ",".join(s.addr for s in srv)
        dump = os.path.join(self.tmp, "rotated.bin")
        old = tls_flags(PKI.ca.cert, PKI.client)
        new = tls_flags(PKI.ca2.cert, PKI.client_ca2)
        w0 = self.start_worker(servers, 0, dump, old)
        procs = [w0]
        try:
            self.wait_step0_pushed(servers, old, w0)
            for s in srv:
                self.assertEqual(served_serial(s.port, PKI.ca.cert,
                                               PKI.client),
                                 PKI.server.serial())
            both = PKI.bundle("ca1+ca2", PKI.ca, PKI.ca2)
            for d in dirs:
                d.put(PKI.server_ca2.cert, PKI.server_ca2.key, both)
            for s in srv:
                s.wait_logged("TLS: reloaded certificate /CN=server_ca2")
                self.assertEqual(served_serial(s.port, PKI.ca2.cert,
                                               PKI.client_ca2),
                                 PKI.server_ca2.serial())
                with self.assertRaises(ssl.SSLError):
                    served_serial(s.port, PKI.ca.cert, PKI.client)
            # Mid-training, step 0 still waits for worker 1.
            self.assertEqual(self.layer_versions(servers, new), {0})
            procs.append(self.start_worker(servers, 1, dump + ".1", new))
            self.finish(procs)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        self.assertEqual(read_floats(dump), plain)
        self.assertEqual(self.layer_versions(servers, new), {12})
        for s in srv:
            self.assertNotIn("the changed files are refused", s.logged())

    def layer_versions(self, servers, tls):
        code, out, err = ctl("status", "--servers", servers, "--json", *tls)
        self.assertEqual(code, 0, err)
        return {l["version"] for s in json.loads(out)["servers"]
                for l in s["layers"]}

    def wait_step0_pushed(self, servers, tls, worker):
        """Waits until every layer on every server holds worker 0's push of
        step 0 (and so worker 0 waits for step 1); fails at once if the
        worker exits."""
        def pushed():
            if worker.poll() is not None:
                _, err = worker.communicate()
                raise AssertionError("worker 0 exited %d: %s" %
                                     (worker.returncode, err))
            code, out, _ = ctl("status", "--servers", servers, "--json",
                               *tls)
            if code != 0:
                return False
            layers = [l for s in json.loads(out)["servers"]
                      for l in s["layers"]]
            return layers and all(l["pushed"] == [0] and l["version"] == 0
                                  for l in layers)
        wait_for("worker 0's push of step 0", pushed, timeout=RUN_S)


class RotationTest(TlsCase):
    """What a single server does with files that change."""

    def serial(self, srv, ca):
        return served_serial(srv.port, ca.cert, PKI.client)

    def test_bad_new_files_keep_the_previous(self):
        d = SecretDir(os.path.join(self.tmp, "secret"))
        d.put(PKI.server.cert, PKI.server.key, PKI.ca.cert)
        srv = self.server("--tls-cert", d.path("tls.crt"), "--tls-key",
                          d.path("tls.key"), "--tls-client-ca",
                          d.path("ca.crt"))
        self.assertEqual(self.serial(srv, PKI.ca), PKI.server.serial())
        # A key that is not the certificate's: refused, the old one served.
        d.put(PKI.server2.cert, PKI.server.key, PKI.ca.cert)
        srv.wait_logged("the changed files are refused")
        self.assertIn("does not match the certificate", srv.logged())
        self.assertEqual(self.serial(srv, PKI.ca), PKI.server.serial())
        # Not PEM at all: refused too (once per change, not per handshake).
        d.put(PKI.server.key, PKI.server.key, PKI.ca.cert)
        srv.wait_logged("the changed files are refused", 2)
        self.assertEqual(self.serial(srv, PKI.ca), PKI.server.serial())
        self.assertEqual(self.serial(srv, PKI.ca), PKI.server.serial())
        self.assertEqual(srv.logged().count("the changed files are refused"),
                         2)
        # A good set: served from the next handshake on.
        d.put(PKI.server2.cert, PKI.server2.key, PKI.ca.cert)
        srv.wait_logged("TLS: reloaded certificate /CN=server2")
        self.assertEqual(self.serial(srv, PKI.ca), PKI.server2.serial())
        code, _, err = ctl("status", "--servers", srv.addr,
                           *tls_flags(PKI.ca.cert, PKI.client))
        self.assertEqual(code, 0, err)

    def test_files_replaced_in_place(self):
        """TLS without client certificates; plain files (no symlinks)
        renamed over, and a file gone."""
        cert = os.path.join(self.tmp, "tls.crt")
        key = os.path.join(self.tmp, "tls.key")
        for src, dst in ((PKI.server.cert, cert), (PKI.server.key, key)):
            shutil.copyfile(src, dst)
        srv = self.server("--tls-cert", cert, "--tls-key", key)
        # TLS without --tls-client-ca asks for no client certificate.
        for client in (None, PKI.client_ca2):
            code, _, err = health(*tls_flags(PKI.ca.cert, client), srv.addr)
            self.assertEqual(code, 0, err)
        self.assertEqual(served_serial(srv.port, PKI.ca.cert, PKI.client),
                         PKI.server.serial())
        os.unlink(cert)
        srv.wait_logged("cannot read the TLS certificate " + cert)
        self.assertEqual(served_serial(srv.port, PKI.ca.cert, PKI.client),
                         PKI.server.serial())
        for src, dst in ((PKI.server2.key, key), (PKI.server2.cert, cert)):
            shutil.copyfile(src, dst + ".new")
            os.rename(dst + ".new", dst)
        srv.wait_logged("TLS: reloaded certificate /CN=server2")
        self.assertEqual(served_serial(srv.port, PKI.ca.cert, PKI.client),
                         PKI.server2.serial())


def make_pki(folder):
    """Every certificate the tests use, as attributes of one object."""
    pki = Pki(folder)
    certs = types.SimpleNamespace(pki=pki, ca=pki.ca("ca1"),
                                  ca2=pki.ca("ca2"))
    certs.bundle = pki.bundle
    for name, ca, expired in (
            ("server", certs.ca, False), ("server2", certs.ca, False),
            ("server_ca2", certs.ca2, False),
            ("server_expired", certs.ca, True), ("client", certs.ca, False),
            ("client_ca2", certs.ca2, False),
            ("client_expired", certs.ca, True)):
        setattr(certs, name, pki.leaf(name, ca, expired=expired))
    return certs


def main():
    global ARGS, PKI
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ARGS, rest = ap.parse_known_args()
    folder = tempfile.mkdtemp(prefix="fsps-tls-pki-")
    try:
        PKI = make_pki(folder)
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
