#!/usr/bin/python3
"""Tokens and roles (fsps-server --auth-tokens), driven by a client on an
independent gRPC stack (Debian's python3-grpcio) over loopback: every role
against every method (allowed, or the right code and nothing changed: the
Status reply, the checkpoint files), no token, unknown tokens and malformed
headers, the health service open to all, the refusal log lines (peer,
method, role; never a token), SIGHUP reloads good and bad, and start-up
refusals of bad token files.

Usage: test_auth.py --server PATH/fsps-server --proto PATH/fsps.proto
"""
import argparse
import json
import os
import secrets
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# grpcio's fork handlers can deadlock a subprocess launch (see
# test_python.py); no child here uses gRPC.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "false"
import grpc  # noqa: E402

ARGS = None
PB = None  # the generated fsps_pb2 module
SVC = "/fsps.v1.ParameterServer/"
HEALTH = "/grpc.health.v1.Health/Check"
# Every child through setpriv(1) with PDEATHSIG: none outlives the test.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]
DEADLINE_S = 120  # generous: CI runs this on 2 busy cores
C = grpc.StatusCode

# Fresh random tokens every run, so that a grep for them means something.
TOKENS = {role: "%s-%s" % (role, secrets.token_hex(16))
          for role in ("admin", "worker", "reader", "worker2", "unknown")}


def md(role):
    """The metadata a client of role sends (None: no metadata)."""
    return None if role is None else \
        [("authorization", "Bearer " + TOKENS[role])]


def pack(values):
    return struct.pack("<%df" % len(values), *values)


def generate_pb(tmp):
    subprocess.run(["/usr/bin/protoc", "--python_out=" + tmp,
                    "-I" + os.path.dirname(ARGS.proto), ARGS.proto],
                   check=True)
    sys.path.insert(0, tmp)
    import fsps_pb2
    return fsps_pb2


def write_tokens(path, lines, mode=0o600):
    """Writes a token file by rename, as a Secret update would, with the
    given mode."""
    tmp = path + ".new"
    with open(tmp, "w") as f:
        f.write("".join(line + "\n" for line in lines))
    os.chmod(tmp, mode)
    os.rename(tmp, path)


def wait_for(what, fn, deadline_s=DEADLINE_S):
    deadline = time.monotonic() + deadline_s
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


class Server:
    """A real fsps-server on an ephemeral loopback port, its stderr in a
    file."""

    def __init__(self, tmp, *flags, env=None):
        n = time.monotonic_ns()
        self.port_file = os.path.join(tmp, "port-%d" % n)
        self.log = os.path.join(tmp, "log-%d" % n)
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                DIE_WITH_PARENT +
                [ARGS.server, "--listen", "127.0.0.1:0", "--port-file",
                 self.port_file] + list(flags), stderr=err, env=env)
        wait_for("fsps-server to start", lambda: self.proc.poll() is not None
                 or (os.path.exists(self.port_file) and
                     os.path.getsize(self.port_file)))
        if self.proc.poll() is not None:
            raise RuntimeError("fsps-server exited %d: %s"
                               % (self.proc.returncode, self.logged()))
        with open(self.port_file) as f:
            self.port = int(f.read())
        self.channel = grpc.insecure_channel("127.0.0.1:%d" % self.port)

    def stop(self, sig=signal.SIGTERM):
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def logged(self):
        with open(self.log) as f:
            return f.read()

    def unary(self, method, req, reply_cls=None, role=None, metadata=None):
        call = self.channel.unary_unary(
            method if method.startswith("/") else SVC + method,
            request_serializer=lambda m: m if isinstance(m, bytes) else
            m.SerializeToString(),
            response_deserializer=reply_cls.FromString if reply_cls else None)
        return call(req, timeout=30,
                    metadata=metadata if metadata is not None else md(role))

    def status(self, role="admin", metadata=None):
        return self.unary("Status", PB.StatusRequest(), PB.StatusReply, role,
                          metadata)

    def pull(self, layer, role, metadata=None):
        call = self.channel.unary_stream(
            SVC + "Pull", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=PB.PullChunk.FromString)
        chunks = list(call(PB.PullRequest(layer=layer), timeout=30,
                           metadata=metadata if metadata is not None
                           else md(role)))
        data = b"".join(c.data for c in chunks)
        return list(struct.unpack("<%df" % (len(data) // 4), data))

    def stream(self, method, chunks, reply_cls, role, metadata=None):
        call = self.channel.stream_unary(
            SVC + method, request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply_cls.FromString)
        return call(iter(chunks), timeout=30,
                    metadata=metadata if metadata is not None else md(role))

    def push(self, step, role, value=1.0, metadata=None, nchunks=1):
        chunks = [PB.PushChunk(layer=0, step=step, worker=0,
                               data=pack([value] * 18))] * nchunks
        return self.stream("Push", chunks, PB.PushReply, role, metadata)

    def set_values(self, role, metadata=None):
        chunks = [PB.ValuesChunk(layer=1, data=pack([0.25] * 4))]
        return self.stream("SetValues", chunks, PB.ValuesReply, role,
                           metadata)


def model_spec(lr=0.1):
    """Layer 0 "fc" (18 drawn values), layer 1 "given" (4 client values)."""
    fc = PB.LayerSpec(name="fc", tensors=[
        PB.TensorSpec(name="weight", dims=[3, 5], init=PB.INIT_CONSTANT,
                      init_a=0.5),
        PB.TensorSpec(name="bias", dims=[3], init=PB.INIT_ZEROS)])
    given = PB.LayerSpec(name="given", tensors=[
        PB.TensorSpec(name="w", dims=[4], init=PB.INIT_CLIENT)])
    return PB.ModelSpec(layers=[fc, given],
                        optimizer=PB.OptimizerSpec(name="sgd", lr=lr), seed=7)


def init_req(lr=0.1):
    return PB.InitRequest(spec=model_spec(lr), num_servers=1, server_index=0)


class Base(unittest.TestCase):
    def refused(self, code, fn, *args, text=None, **kw):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args, **kw)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        if text is not None:
            self.assertIn(text, cm.exception.details())
        for token in TOKENS.values():
            self.assertNotIn(token, cm.exception.details())
        return cm.exception.details()


class RolesTest(Base):
    """One server (S=1, W=1, a checkpoint folder, JSON logs) and tokens of
    each role, exercised in order: a refused call changes nothing."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.ckpt = os.path.join(cls.tmp.name, "ckpt")
        cls.tokens = os.path.join(cls.tmp.name, "tokens")
        write_tokens(cls.tokens, [
            "# role token", "admin " + TOKENS["admin"], "",
            "worker " + TOKENS["worker"], "reader " + TOKENS["reader"]])
        cls.srv = Server(cls.tmp.name, "--auth-tokens", cls.tokens,
                         "--checkpoint-dir", cls.ckpt, "--log-format", "json")

    @classmethod
    def tearDownClass(cls):
        code = cls.srv.stop()
        cls.tmp.cleanup()
        assert code == 0, "fsps-server exited %d after SIGTERM" % code

    def state(self):
        """What a refused call must leave as it was: the whole Status reply
        (versions, pending pushes, counters, epoch, checkpoints) and the
        checkpoint files."""
        files = sorted(os.listdir(self.ckpt)) if os.path.isdir(self.ckpt) \
            else []
        return self.srv.status().SerializeToString(), files

    def unchanged(self, code, fn, *args, text=None, **kw):
        before = self.state()
        msg = self.refused(code, fn, *args, text=text, **kw)
        self.assertEqual(self.state(), before, "a refused call changed state")
        return msg

    def test_01_before_a_model_only_admin_declares(self):
        for role in ("admin", "worker", "reader"):
            self.assertFalse(self.srv.status(role).initialized)
        self.unchanged(C.PERMISSION_DENIED, self.srv.unary, "Init",
                       init_req(), PB.InitReply, "worker",
                       text="role worker may only join the declared model")
        self.unchanged(C.PERMISSION_DENIED, self.srv.unary, "Init",
                       init_req(), PB.InitReply, "reader",
                       text="role reader may not call Init (it may call "
                            "Pull and Status)")
        self.unchanged(C.UNAUTHENTICATED, self.srv.unary, "Init", init_req(),
                       PB.InitReply, None, text="no token")
        self.assertFalse(self.srv.status().initialized)
        self.assertTrue(self.srv.unary("Init", init_req(), PB.InitReply,
                                       "admin").created)

    def test_02_worker_joins_the_declared_model_only(self):
        r = self.srv.unary("Init", init_req(), PB.InitReply, "worker")
        self.assertFalse(r.created)
        msg = self.unchanged(C.PERMISSION_DENIED, self.srv.unary, "Init",
                             init_req(lr=0.2), PB.InitReply, "worker",
                             text="not declare another")
        self.assertIn("%016x" % r.spec_hash, msg)
        # An admin's is the usual mismatch (counted as a bad request).
        self.refused(C.FAILED_PRECONDITION, self.srv.unary, "Init",
                     init_req(lr=0.2), PB.InitReply, "admin")
        self.assertEqual(self.srv.status().spec_hash, r.spec_hash)
        self.unchanged(C.PERMISSION_DENIED, self.srv.unary, "Init",
                       init_req(), PB.InitReply, "reader")

    def test_03_set_values_is_admin_only(self):
        for role in ("worker", "reader"):
            self.unchanged(C.PERMISSION_DENIED, self.srv.set_values, role,
                           text="role %s may not call SetValues" % role)
        self.unchanged(C.UNAUTHENTICATED, self.srv.set_values, None)
        self.assertTrue(self.srv.status().layers[1].awaiting_values)
        self.srv.set_values("admin")
        self.assertFalse(self.srv.status().layers[1].awaiting_values)

    def test_04_every_role_pulls(self):
        for role in ("admin", "worker", "reader"):
            self.assertEqual(self.srv.pull(0, role), [0.5] * 15 + [0.0] * 3)
            self.assertEqual(self.srv.pull(1, role), [0.25] * 4)
        self.unchanged(C.UNAUTHENTICATED, self.srv.pull, 0, "unknown",
                       text="token not known")

    def test_05_push_worker_and_admin_not_reader(self):
        # Refused before a chunk is read: three copies of one chunk would
        # be INVALID_ARGUMENT if the server read them.
        self.unchanged(C.PERMISSION_DENIED, self.srv.push, 0, "reader",
                       nchunks=3, text="role reader may not call Push")
        self.unchanged(C.UNAUTHENTICATED, self.srv.push, 0, None, nchunks=3)
        self.unchanged(C.UNAUTHENTICATED, self.srv.push, 0, "unknown")
        self.assertEqual(self.srv.push(0, "worker").version, 1)
        self.assertEqual(self.srv.push(1, "admin").version, 2)
        self.assertEqual([l.version for l in self.srv.status().layers],
                         [2, 0])

    def test_06_every_role_reads_status(self):
        for role in ("admin", "worker", "reader"):
            st = self.srv.status(role)
            self.assertTrue(st.initialized)
            self.assertEqual(st.layers[0].version, 2)

    def test_07_checkpoint_is_admin_only(self):
        for role in ("worker", "reader"):
            self.unchanged(C.PERMISSION_DENIED, self.srv.unary, "Checkpoint",
                           PB.CheckpointRequest(), PB.CheckpointReply, role,
                           text="role %s may not call Checkpoint" % role)
        self.assertEqual(os.listdir(self.ckpt), [])
        r = self.srv.unary("Checkpoint", PB.CheckpointRequest(),
                           PB.CheckpointReply, "admin")
        self.assertTrue(os.path.exists(r.path))
        self.assertEqual(r.min_version, 0)  # layer 1 never trains

    def test_08_rollback_is_admin_only(self):
        h = self.srv.status().spec_hash
        req = PB.RollbackRequest(version=0, spec_hash=h, epoch=5)
        for role in ("worker", "reader"):
            self.unchanged(C.PERMISSION_DENIED, self.srv.unary, "Rollback",
                           req, PB.RollbackReply, role,
                           text="role %s may not call Rollback" % role)
        self.unchanged(C.UNAUTHENTICATED, self.srv.unary, "Rollback", req,
                       PB.RollbackReply, None)
        st = self.srv.status()
        self.assertEqual((st.layers[0].version, st.epoch), (2, 0))
        self.srv.unary("Rollback", req, PB.RollbackReply, "admin")
        st = self.srv.status()
        self.assertEqual((st.layers[0].version, st.epoch), (0, 5))

    def test_09_health_needs_no_token_and_tells_only_serving(self):
        for metadata in (None, md("unknown"), [("authorization", "Basic x")]):
            reply = self.srv.unary(HEALTH, b"", metadata=metadata)
            self.assertEqual(reply, b"\x08\x01")  # status = SERVING, alone
        named = b"\x0a\x17fsps.v1.ParameterServer"  # service = "fsps.v1..."
        self.assertEqual(self.srv.unary(HEALTH, named), b"\x08\x01")
        self.refused(C.NOT_FOUND, self.srv.unary, HEALTH, b"\x0a\x01x")
        # The rest of grpc.health.v1 is open too, and unimplemented.
        self.refused(C.UNIMPLEMENTED, self.srv.unary,
                     "/grpc.health.v1.Health/Watch", b"")

    def test_10_malformed_authorization_headers(self):
        bad = [[("authorization", "Basic xyz")],
               [("authorization", "Bearer")],
               [("authorization", "Bearer x y")],
               [("authorization", TOKENS["admin"])],
               [("authorization", "Bearer" + TOKENS["admin"])],
               [("authorization", "Token " + TOKENS["admin"])],
               md("admin") + md("admin"),  # two entries
               [("x-token", TOKENS["admin"])]]
        for metadata in bad:
            with self.subTest(metadata=metadata[0][1][:12]):
                self.unchanged(C.UNAUTHENTICATED, self.srv.status,
                               metadata=metadata)
                self.unchanged(C.UNAUTHENTICATED, self.srv.push, 7, None,
                               metadata=metadata)
        # The scheme's case does not matter (RFC 7235).
        lower = [("authorization", "bearer " + TOKENS["reader"])]
        self.assertTrue(self.srv.status(metadata=lower).initialized)

    def test_11_unknown_methods_need_a_token_too(self):
        self.refused(C.UNAUTHENTICATED, self.srv.unary, SVC + "Nope", b"")
        self.refused(C.UNIMPLEMENTED, self.srv.unary, SVC + "Nope", b"",
                     role="reader")

    def test_99_refusals_logged_with_peer_method_role_never_a_token(self):
        text = self.srv.logged()
        for token in TOKENS.values():
            self.assertNotIn(token, text)
        refusals = set()
        for line in text.splitlines():
            doc = json.loads(line)
            if not doc["message"].startswith("refused "):
                continue
            self.assertEqual(doc["level"], "warn", line)
            f = doc["fields"]
            self.assertRegex(f["peer"], r"^ipv4:127\.0\.0\.1:\d+$")
            self.assertIn(f["peer"], doc["message"])
            self.assertIn("(role %s)" % f["role"], doc["message"])
            refusals.add((f["method"].rsplit("/", 1)[1], f["role"], f["code"]))
        for want in [("Init", "worker", "PERMISSION_DENIED"),
                     ("Init", "reader", "PERMISSION_DENIED"),
                     ("Init", "none", "UNAUTHENTICATED"),
                     ("SetValues", "worker", "PERMISSION_DENIED"),
                     ("Pull", "unknown", "UNAUTHENTICATED"),
                     ("Push", "reader", "PERMISSION_DENIED"),
                     ("Push", "none", "UNAUTHENTICATED"),
                     ("Checkpoint", "reader", "PERMISSION_DENIED"),
                     ("Rollback", "worker", "PERMISSION_DENIED"),
                     ("Status", "unknown", "UNAUTHENTICATED"),
                     ("Nope", "none", "UNAUTHENTICATED")]:
            self.assertIn(want, refusals)
        self.assertNotIn("Check", {r[0] for r in refusals})


class ReloadTest(Base):
    """SIGHUP reloads the token file: a token added works, a removed one is
    refused on its next call (a channel opened before too); a file that
    cannot be used keeps the tokens in force; the server never stops."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.tokens = os.path.join(self.tmp.name, "tokens")
        write_tokens(self.tokens, ["admin " + TOKENS["admin"],
                                   "worker " + TOKENS["worker"]])
        self.srv = Server(self.tmp.name, "--auth-tokens", self.tokens)

    def tearDown(self):
        code = self.srv.stop()
        self.tmp.cleanup()
        self.assertEqual(code, 0)

    def hup(self, outcome):
        """Sends SIGHUP and waits for the log line saying outcome."""
        n = self.srv.logged().count(outcome)
        self.srv.proc.send_signal(signal.SIGHUP)
        wait_for("'%s' in the log" % outcome,
                 lambda: self.srv.logged().count(outcome) > n)

    def test_add_remove_then_bad_files_keep_the_table(self):
        srv = self.srv
        self.assertFalse(srv.status("worker").initialized)
        self.refused(C.UNAUTHENTICATED, srv.status, "worker2")
        write_tokens(self.tokens, ["admin " + TOKENS["admin"],
                                   "worker " + TOKENS["worker2"]])
        self.hup("SIGHUP: reloaded 2 tokens")
        self.assertFalse(srv.status("worker2").initialized)
        # The channel the removed token used before is refused now.
        self.refused(C.UNAUTHENTICATED, srv.status, "worker",
                     text="token not known")
        bad = {"malformed": (["admin " + TOKENS["admin"], "worker"], 0o600,
                             "line 2: expected `ROLE TOKEN`"),
               "unknown role": (["root " + TOKENS["worker"]], 0o600,
                                "line 1: unknown role 'root'"),
               "empty": ([], 0o600, "holds no token"),
               "duplicate": (["admin " + TOKENS["admin"],
                              "reader " + TOKENS["admin"]], 0o600,
                             "line 2: the same token as line 1"),
               "world-readable": (["admin " + TOKENS["admin"]], 0o644,
                                  "can be read or written by every user")}
        for name, (lines, mode, why) in bad.items():
            with self.subTest(name):
                write_tokens(self.tokens, lines, mode)
                self.hup(why)
                self.assertFalse(srv.status("worker2").initialized)
                self.assertFalse(srv.status("admin").initialized)
                self.refused(C.UNAUTHENTICATED, srv.status, "worker")
        os.unlink(self.tokens)
        self.hup("cannot read")
        self.assertFalse(srv.status("worker2").initialized)
        write_tokens(self.tokens, ["admin " + TOKENS["admin"],
                                   "reader " + TOKENS["worker"]])
        self.hup("SIGHUP: reloaded 2 tokens")
        self.refused(C.UNAUTHENTICATED, srv.status, "worker2")
        self.assertFalse(srv.status("worker").initialized)  # now a reader
        self.refused(C.PERMISSION_DENIED, srv.push, 0, "worker",
                     text="role reader may not call Push")
        text = srv.logged()
        self.assertIn("not reloading the tokens, the ones loaded before stay "
                      "in force", text)
        self.assertRegex(text, r"WARN .*refused Status from "
                               r"ipv4:127\.0\.0\.1:\d+ \(role unknown\): "
                               r"UNAUTHENTICATED: token not known")
        self.assertRegex(text, r"refused Push from ipv4:127\.0\.0\.1:\d+ "
                               r"\(role reader\): PERMISSION_DENIED")
        for token in TOKENS.values():
            self.assertNotIn(token, text)


class ReloadUnderLoadTest(Base):
    """Calls keep coming on four threads while SIGHUP swaps the table again
    and again (the TSan build checks the swap): the admin token, in every
    version of the file, is never refused; the others come and go."""

    def test_swaps_while_calls_run(self):
        tmp = tempfile.TemporaryDirectory()
        tokens = os.path.join(tmp.name, "tokens")
        versions = [["admin " + TOKENS["admin"], "worker " + TOKENS["worker"]],
                    ["reader " + TOKENS["reader"], "admin " + TOKENS["admin"]]]
        write_tokens(tokens, versions[0])
        srv = Server(tmp.name, "--auth-tokens", tokens, "--threads", "4")
        stop, failures, calls = threading.Event(), [], [0]

        def caller():
            while not stop.is_set():
                try:
                    srv.status("admin")
                    calls[0] += 1
                except grpc.RpcError as e:
                    failures.append(e.code())
        threads = [threading.Thread(target=caller) for _ in range(4)]
        try:
            for t in threads:
                t.start()
            for i in range(20):
                write_tokens(tokens, versions[(i + 1) % 2])
                srv.proc.send_signal(signal.SIGHUP)
                time.sleep(0.05)
            # The last version written (versions[0]: the worker, no
            # reader) is in force once a reload after it is logged.
            n = srv.logged().count("SIGHUP: reloaded")
            srv.proc.send_signal(signal.SIGHUP)
            wait_for("the last reload", lambda:
                     srv.logged().count("SIGHUP: reloaded") > n)
            self.assertFalse(srv.status("worker").initialized)
            self.refused(C.UNAUTHENTICATED, srv.status, "reader")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=DEADLINE_S)
            code = srv.stop()
            tmp.cleanup()
        self.assertEqual(failures, [])
        self.assertGreater(calls[0], 0)
        self.assertEqual(code, 0)


class StartupTest(Base):
    """A token file that cannot be used stops the server at start, naming
    the file and line; without --auth-tokens the server stays open."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.tokens = os.path.join(self.tmp.name, "tokens")

    def tearDown(self):
        self.tmp.cleanup()

    def start_fails(self, *flags, env=None):
        pf = os.path.join(self.tmp.name, "port")
        r = subprocess.run(
            DIE_WITH_PARENT + [ARGS.server, "--listen", "127.0.0.1:0",
                               "--port-file", pf] + list(flags),
            capture_output=True, text=True, timeout=DEADLINE_S, env=env)
        # 2, as a bad flag (a sanitizer's report would change it)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertFalse(os.path.exists(pf))
        for token in TOKENS.values():
            self.assertNotIn(token, r.stderr)
        return r.stderr

    def test_bad_files_stop_the_server(self):
        cases = [
            (["admin " + TOKENS["admin"], "# c", "worker " + TOKENS["worker"]
              + " x"], 0o600, "line 3: expected `ROLE TOKEN`"),
            (["operator " + TOKENS["admin"]], 0o600,
             "line 1: unknown role 'operator'"),
            ([TOKENS["admin"] + " admin"], 0o600,
             "line 1: unknown role (not shown"),
            ([], 0o600, "holds no token"),
            (["# nothing but comments", ""], 0o600, "holds no token"),
            (["admin " + TOKENS["admin"], "worker " + TOKENS["admin"]],
             0o600, "line 2: the same token as line 1"),
            (["admin short-token"], 0o600, "line 1: the token is 11 "
                                           "characters long"),
            (["admin " + TOKENS["admin"]], 0o604,
             "can be read or written by every user (mode 0604)")]
        for lines, mode, why in cases:
            with self.subTest(why):
                write_tokens(self.tokens, lines, mode)
                err = self.start_fails("--auth-tokens", self.tokens)
                self.assertIn("--auth-tokens: " + self.tokens, err)
                self.assertIn(why, err)
        err = self.start_fails("--auth-tokens", self.tokens + ".missing")
        self.assertIn("cannot read", err)
        err = self.start_fails("--auth-tokens", "")
        self.assertIn("bad value '' for --auth-tokens", err)

    def test_variable_and_open_server(self):
        write_tokens(self.tokens, ["reader " + TOKENS["reader"]])
        env = dict(os.environ, FSPS_AUTH_TOKENS=self.tokens)
        srv = Server(self.tmp.name, env=env)
        try:
            self.refused(C.UNAUTHENTICATED, srv.status, None)
            self.assertFalse(srv.status("reader").initialized)
        finally:
            self.assertEqual(srv.stop(), 0)
        # Without --auth-tokens: open as before, a token or not.
        srv = Server(self.tmp.name)
        try:
            self.assertTrue(srv.unary("Init", init_req(), PB.InitReply,
                                      None).created)
            self.assertTrue(srv.status(None).initialized)
            self.assertTrue(srv.status("unknown").initialized)
        finally:
            self.assertEqual(srv.stop(), 0)
            self.assertNotIn("refused", srv.logged())


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
