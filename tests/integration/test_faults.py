#!/usr/bin/python3
"""Faults, end to end: real fsps-server and fsps-worker processes on
loopback, with the servers' fault-injection and --worker-timeout flags.

- Idempotence: with --inject-reply-drops the servers count a push, then
  answer UNAVAILABLE as if the reply were lost; the client retries and the
  server must answer the retry as a duplicate. The parameters after a run
  with drops equal those of a run without, bit for bit (--deterministic),
  and the servers' Status shows the retries did happen.
- Soak: the same with 8 workers for a couple of minutes.
- A worker that never comes back: the others wait and Status names it;
  --worker-timeout with --on-worker-timeout fail ends the wait with an
  error naming the missing worker, with proceed the others go on without it.

Usage: test_faults.py --bin BUILD_DIR --proto PATH/fsps.proto [TestClass...]
"""
import argparse
import json
import math
import os
import signal
import struct
import subprocess
import sys
import tempfile
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
PB = None  # the generated fsps_pb2 module
SVC = "/fsps.v1.ParameterServer/"


# Every child is started through setpriv(1) with PDEATHSIG set, so that no
# server or worker outlives its test (and holds ctest's output pipe). Not
# with a preexec_fn doing prctl: that makes subprocess fork() this threaded
# process (gRPC's threads) and run Python in the child, which hung a launch
# for good now and then under load; without it subprocess uses vfork.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]


def generate_pb(tmp):
    subprocess.run(["/usr/bin/protoc", "--python_out=" + tmp,
                    "-I" + os.path.dirname(ARGS.proto), ARGS.proto],
                   check=True)
    sys.path.insert(0, tmp)
    import fsps_pb2
    return fsps_pb2


def pack(values):
    return struct.pack("<%df" % len(values), *values)


def floats(data):
    return list(struct.unpack("<%df" % (len(data) // 4), data))


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


class Server:
    """One real fsps-server on an ephemeral loopback port; its stderr goes
    to a file, and a gRPC channel (Python's grpcio) reaches it."""

    def __init__(self, tmp, name, *flags):
        self.log = os.path.join(tmp, name + ".log")
        port_file = os.path.join(tmp, name + ".port")
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(
                DIE_WITH_PARENT +
                [os.path.join(ARGS.bin, "server", "fsps-server"),
                 "--listen", "127.0.0.1:0", "--port-file", port_file,
                 "--log-level", "warn"] + list(flags), stderr=err)
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError("fsps-server did not start: " +
                                   self.logged())
            time.sleep(0.02)
        with open(port_file) as f:
            self.addr = "127.0.0.1:%d" % int(f.read())
        self.channel = grpc.insecure_channel(self.addr)

    def stop(self, sig=signal.SIGTERM):
        if getattr(self, "channel", None) is not None:
            self.channel.close()
            self.channel = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=60)

    def logged(self):
        with open(self.log) as f:
            return f.read()

    def unary(self, method, req, reply_cls, timeout=30):
        call = self.channel.unary_unary(
            SVC + method, request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=reply_cls.FromString)
        return call(req, timeout=timeout)

    def status(self):
        return self.unary("Status", PB.StatusRequest(), PB.StatusReply)

    def push(self, layer, step, worker, values):
        call = self.channel.stream_unary(
            SVC + "Push", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=PB.PushReply.FromString)
        chunk = PB.PushChunk(layer=layer, step=step, worker=worker, offset=0,
                             data=pack(values))
        return call(iter([chunk]), timeout=30)

    def pull(self, layer, min_version=0, timeout=30):
        call = self.channel.unary_stream(
            SVC + "Pull", request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=PB.PullChunk.FromString)
        req = PB.PullRequest(layer=layer, min_version=min_version)
        chunks = list(call(req, timeout=timeout))
        return floats(b"".join(c.data for c in chunks))


class Cluster:
    """S fsps-servers for W workers, started with the same extra flags."""

    def __init__(self, tmp, S, W, *flags):
        tag = "c%d" % time.monotonic_ns()
        self.servers = []
        try:
            for s in range(S):
                self.servers.append(Server(
                    tmp, "%s-s%d" % (tag, s), "--index", str(s),
                    "--num-servers", str(S), "--workers", str(W), *flags))
        except Exception:
            self.stop()
            raise
        self.addrs = ",".join(srv.addr for srv in self.servers)

    def stop(self):
        return [srv.stop() for srv in self.servers]

    def status(self):
        return [srv.status() for srv in self.servers]

    def logged(self):
        return "".join(srv.logged() for srv in self.servers)


def start_worker(addrs, rank, W, flags):
    return subprocess.Popen(
        DIE_WITH_PARENT +
        [os.path.join(ARGS.bin, "worker", "fsps-worker"), "--servers", addrs,
         "--rank", str(rank), "--world", str(W), "--progress-secs", "1000",
         "--timeout-ms", "60000"] + flags,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def summary(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def run_workers(addrs, W, flags, per_rank=lambda r: [],
                timeout=int(os.environ.get("FSPS_TEST_WORKER_WAIT_S", 600))):
    """Runs W fsps-workers to completion; returns their JSON summaries,
    each with the worker's stderr under "stderr"."""
    procs = [start_worker(addrs, r, W, flags + per_rank(r)) for r in range(W)]
    out = []
    try:
        for r, p in enumerate(procs):
            stdout, stderr = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise AssertionError("worker %d exited %d: %s" %
                                     (r, p.returncode, stderr))
            out.append(dict(summary(stdout), stderr=stderr))
    except subprocess.TimeoutExpired:  # say where each one was
        for r, p in enumerate(procs):
            p.kill()
            _, err = p.communicate()
            sys.stderr.write("worker %d after %d s:\n%s\n" %
                             (r, timeout, err[-3000:]))
        raise
    finally:  # a failed worker leaves the others waiting: stop them
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return out


class FaultTest(unittest.TestCase):
    """Starts clusters on demand and checks each stops cleanly (exit 0 on
    SIGTERM: under a sanitizer a report would make it non-zero)."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.clusters = []

    def tearDown(self):
        for c in self.clusters:
            codes = c.stop() if isinstance(c, Cluster) else [c.stop()]
            self.assertEqual(codes, [0] * len(codes), c.logged())
        self.tmp.cleanup()

    def cluster(self, S, W, *flags):
        c = Cluster(self.tmp.name, S, W, *flags)
        self.clusters.append(c)
        return c

    def server(self, name, *flags):
        """One server (S=1) for tests that speak the protocol by hand."""
        srv = Server(self.tmp.name, name, *flags)
        self.clusters.append(srv)
        return srv

    def assertCode(self, code, fn, *args):
        with self.assertRaises(grpc.RpcError) as cm:
            fn(*args)
        self.assertEqual(cm.exception.code(), code, cm.exception.details())
        return cm.exception.details()

    def train(self, S, W, drops, flags, steps):
        """Trains with replies dropped at probability `drops`; returns each
        rank's dump (bytes), the workers' summaries and the servers'
        Status after the run."""
        c = self.cluster(S, W, "--deterministic",
                         "--inject-reply-drops", str(drops))
        dump = os.path.join(self.tmp.name, "p%s-r%%d.bin" % drops)
        done = run_workers(
            c.addrs, W, flags + ["--max-steps", str(steps), "--no-eval"],
            per_rank=lambda r: ["--dump", dump % r])
        return [read_bytes(dump % r) for r in range(W)], done, c.status()

    def assertSameParams(self, got, want, what):
        """Bit-for-bit equality of two dumps, reported as floats."""
        if got == want:
            return
        self.assertEqual(len(got), len(want), what)
        a, b = floats(got), floats(want)
        bad = [i for i in range(len(a)) if pack([a[i]]) != pack([b[i]])]
        self.fail("%s: %d of %d parameters differ, the first at %d: %r != %r"
                  % (what, len(bad), len(a), bad[0], a[bad[0]], b[bad[0]]))

    def check_counts(self, statuses, W, steps, faulty):
        """Each server applied `steps` updates to each of its layers. It
        received exactly one push per (layer, step, worker) when no reply
        was dropped, and that many plus the retries when some were."""
        extra = 0
        for st in statuses:
            held = [ls for ls in st.layers if ls.slice_count > 0]
            self.assertGreater(len(held), 0)
            self.assertEqual([ls.version for ls in held], [steps] * len(held))
            self.assertEqual(st.rejected, 0)
            counted = steps * W * len(held)
            if faulty:
                self.assertGreater(st.pushes, counted)
            else:
                self.assertEqual(st.pushes, counted)
            extra += st.pushes - counted
        return extra


MLP_FLAGS = ["--model", "mlp:64,32,10", "--synthetic", "2000",
             "--optimizer", "adam", "--lr", "0.01", "--seed", "5"]


class IdempotenceTest(FaultTest):
    """A push retried after a lost reply is never counted twice."""

    def test_dropped_replies_leave_parameters_bit_identical(self):
        W, steps = 2, 20
        flags = MLP_FLAGS + ["--batch", "16"]
        dropped, done_d, st_d = self.train(2, W, 0.3, flags, steps)
        clean, done_c, st_c = self.train(2, W, 0, flags, steps)
        self.assertEqual(len(clean[0]), 4 * (64 * 32 + 32 + 32 * 10 + 10))
        for r in range(W):
            self.assertSameParams(dropped[r], clean[0],
                                  "rank %d's dump after drops" % r)
            self.assertSameParams(clean[r], clean[0], "rank %d's dump" % r)
            self.assertEqual(done_d[r]["steps"], steps)
            self.assertEqual(done_d[r]["final_loss"], done_c[r]["final_loss"])
        self.check_counts(st_c, W, steps, faulty=False)
        retries = self.check_counts(st_d, W, steps, faulty=True)
        # 30% of ~160 replies: the retries are many, not one stray.
        self.assertGreaterEqual(retries, 10)

    def test_streamed_pieces_recover_bit_identical(self):
        """Layers in pieces (--piece-mb) push gradients streamed as they
        are computed, which cannot be retried: a lost reply fails the
        step and the worker recovers (fsps_recover). Its pushes were all
        counted (the replies are lost after counting), which the servers'
        Status shows, so it goes on with the next step instead of
        computing this one again: every contribution is sent and counted
        exactly once. Both layers go in pieces (0.015 MiB), so every push
        is streamed."""
        W, steps = 2, 12
        flags = ["--model", "mlp:64,512,10", "--synthetic", "2000",
                 "--optimizer", "adam", "--lr", "0.01", "--seed", "5",
                 "--batch", "16", "--piece-mb", "0.015"]
        dropped, done, st_d = self.train(2, W, 0.1, flags, steps)
        clean, _, st_c = self.train(2, W, 0, flags, steps)
        self.assertEqual(len(clean[0]), 4 * (64 * 512 + 512 + 512 * 10 + 10))
        for r in range(W):
            self.assertSameParams(dropped[r], clean[0],
                                  "rank %d's dump after drops" % r)
        self.check_counts(st_c, W, steps, faulty=False)
        self.check_counts(st_d, W, steps, faulty=False)  # once each
        logs = "".join(d["stderr"] for d in done)
        self.assertIn("reply dropped on purpose", logs)
        self.assertIn("recovering", logs)

    def test_push_retried_by_hand_counts_once(self):
        """Python's grpcio as the client: every reply is lost, so the
        server's state is the only witness."""
        srv = self.server("all-dropped", "--workers", "2",
                          "--inject-reply-drops", "1")
        init(srv, lr=0.5)
        unavailable = grpc.StatusCode.UNAVAILABLE
        for attempt in range(3):  # the first push and two retries
            msg = self.assertCode(unavailable, srv.push, 0, 0, 0, [1.0] * 18)
            self.assertIn("--inject-reply-drops", msg)
            layer = srv.status().layers[0]
            self.assertEqual(layer.version, 0, "attempt %d" % attempt)
            self.assertEqual(list(layer.pushed), [0])
            self.assertEqual(list(layer.missing), [1])
        self.assertCode(unavailable, srv.push, 0, 0, 1, [3.0] * 18)
        self.assertEqual(srv.status().layers[0].version, 1)
        # mean(1, 3) = 2, times lr 0.5: every weight 0.5 - 1, bias 0 - 1.
        # Had worker 0 counted twice, its retry would have completed the
        # step alone: 0.5 - 0.5 * 1.
        self.assertEqual(srv.pull(0, 1), [-0.5] * 15 + [-1.0] * 3)
        self.assertCode(unavailable, srv.push, 0, 0, 1, [100.0] * 18)
        self.assertEqual(srv.status().layers[0].version, 1)
        self.assertEqual(srv.pull(0, 1), [-0.5] * 15 + [-1.0] * 3)
        self.assertEqual(srv.status().pushes, 5)

    def test_retries_count_once_in_ssp_and_asp(self):
        """Every reply lost, every push sent twice: SSP keeps one slot per
        step in flight, ASP applies each push on arrival; neither may
        count a retry."""
        unavailable = grpc.StatusCode.UNAVAILABLE
        ssp = self.server("ssp-dropped", "--workers", "2", "--mode", "ssp",
                          "--staleness", "2", "--inject-reply-drops", "1")
        init(ssp, lr=0.5)
        for step in range(3):  # worker 0 runs 2 steps ahead of worker 1
            for _ in range(2):
                self.assertCode(unavailable, ssp.push, 0, step, 0, [1.0] * 18)
        layer = ssp.status().layers[0]
        self.assertEqual((layer.version, list(layer.pushed)), (0, [0]))
        for step in range(3):
            for _ in range(2):
                self.assertCode(unavailable, ssp.push, 0, step, 1, [3.0] * 18)
            self.assertEqual(ssp.status().layers[0].version, step + 1)
        # 3 steps of mean(1, 3) = 2 times lr 0.5.
        self.assertEqual(ssp.pull(0, 3), [0.5 - 3.0] * 15 + [-3.0] * 3)

        asp = self.server("asp-dropped", "--workers", "2", "--mode", "asp",
                          "--inject-reply-drops", "1")
        init(asp, lr=0.5)
        for worker, g in ((0, 1.0), (1, 3.0)):
            for _ in range(3):
                self.assertCode(unavailable, asp.push, 0, 0, worker, [g] * 18)
            self.assertEqual(asp.status().layers[0].version, worker + 1)
        # Each push applied once, scaled by 1/W: 0.5 * (1 + 3) / 2 = 1.
        self.assertEqual(asp.pull(0, 2), [-0.5] * 15 + [-1.0] * 3)

    def test_retry_is_answered_as_duplicate(self):
        """Half the replies lost: a client retrying each push until it is
        answered hears `duplicate` exactly when an earlier attempt had
        been counted, and every step is applied once."""
        srv = self.server("half-dropped", "--workers", "1",
                          "--inject-reply-drops", "0.5")
        init(srv, lr=0.5)
        attempts = []
        for step in range(12):
            for n in range(1, 50):
                try:
                    reply = srv.push(0, step, 0, [1.0] * 18)
                    break
                except grpc.RpcError as e:
                    self.assertEqual(e.code(), grpc.StatusCode.UNAVAILABLE,
                                     e.details())
            attempts.append(n)
            self.assertEqual(reply.duplicate, n > 1, "step %d" % step)
            self.assertEqual(reply.version, step + 1)
            self.assertEqual(reply.applied, n == 1)
        self.assertGreater(max(attempts), 1)  # some replies were lost
        self.assertEqual(srv.status().pushes, sum(attempts))
        # 12 steps of lr 0.5 x gradient 1: exact in float32.
        self.assertEqual(srv.pull(0, 12), [0.5 - 6.0] * 15 + [-6.0] * 3)


def init(srv, lr, layers=1):
    """Declares a model of `layers` layers on srv, each 15 weights at 0.5
    and 3 biases at 0, plain SGD at lr."""
    layers = [PB.LayerSpec(name="fc%d" % l, tensors=[
        PB.TensorSpec(name="weight", dims=[3, 5], init=PB.INIT_CONSTANT,
                      init_a=0.5),
        PB.TensorSpec(name="bias", dims=[3], init=PB.INIT_ZEROS)])
        for l in range(layers)]
    opt = PB.OptimizerSpec(name="sgd", lr=lr, gamma=0.1, eps=1e-8,
                           beta1=0.9, beta2=0.999, warmup_start_factor=1.0)
    spec = PB.ModelSpec(layers=layers, optimizer=opt, seed=7)
    return srv.unary("Init", PB.InitRequest(spec=spec, num_servers=1),
                     PB.InitReply)


class SoakTest(FaultTest):
    """8 workers x 2 servers, a couple of minutes of training with a share
    of replies lost, then every parameter equals the fault-free run's."""

    def test_soak_with_reply_drops(self):
        W, steps = 8, int(os.environ.get("FSPS_SOAK_STEPS", "450"))
        flags = ["--model", "mlp:64,64,32,10", "--synthetic", "8192",
                 "--batch", "8", "--epochs", "1000", "--optimizer", "adam",
                 "--lr", "0.003", "--seed", "11"]
        t0 = time.monotonic()
        dropped, done_d, st_d = self.train(2, W, 0.15, flags, steps)
        t1 = time.monotonic()
        clean, done_c, st_c = self.train(2, W, 0, flags, steps)
        print("soak: %d steps, %.0f s with drops, %.0f s without" %
              (steps, t1 - t0, time.monotonic() - t1), file=sys.stderr)
        n = 64 * 64 + 64 + 64 * 32 + 32 + 32 * 10 + 10
        self.assertEqual(len(clean[0]), 4 * n)
        for r in range(W):
            self.assertSameParams(dropped[r], clean[0],
                                  "rank %d's dump after drops" % r)
            self.assertSameParams(clean[r], clean[0], "rank %d's dump" % r)
            self.assertEqual(done_d[r]["steps"], steps)
            self.assertEqual(done_d[r]["final_loss"], done_c[r]["final_loss"])
            self.assertTrue(math.isfinite(done_d[r]["final_loss"]))
        self.check_counts(st_c, W, steps, faulty=False)
        retries = self.check_counts(st_d, W, steps, faulty=True)
        self.assertGreaterEqual(retries, steps)  # ~15% of 48 pushes a step


class WorkerTimeoutTest(FaultTest):
    """A worker that never comes back: W=2 declared, only rank 0 runs."""

    FLAGS = MLP_FLAGS + ["--batch", "16", "--no-eval"]

    def wait_for_pushes(self, c, proc):
        """Waits until rank 0 has pushed step 0 of every layer; returns the
        servers' Status then."""
        deadline = time.monotonic() + 60
        while True:
            sts = c.status()
            layers = [ls for st in sts for ls in st.layers
                      if ls.slice_count > 0]
            if layers and all(list(ls.pushed) == [0] for ls in layers):
                return sts
            self.assertIsNone(proc.poll(), "worker 0 ended before pushing")
            self.assertLess(time.monotonic(), deadline, sts)
            time.sleep(0.05)

    def test_waits_then_fails_naming_the_missing_worker(self):
        c = self.cluster(2, 2, "--worker-timeout", "3",
                         "--on-worker-timeout", "fail")
        t0 = time.monotonic()
        proc = start_worker(c.addrs, 0, 2,
                            self.FLAGS + ["--max-steps", "5"])
        try:
            for st in self.wait_for_pushes(c, proc):
                for ls in st.layers:  # step 0 waits for worker 1 alone
                    self.assertEqual((ls.version, ls.pending_step), (0, 0))
                    self.assertEqual(list(ls.missing), [1])
            _, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        waited = time.monotonic() - t0
        self.assertEqual(proc.returncode, 1, stderr)
        self.assertIn("worker(s) 1 did not push within", stderr)
        self.assertIn("--worker-timeout", stderr)
        self.assertNotIn("eadline", stderr)  # not the call's own deadline
        self.assertGreaterEqual(waited, 3.0)  # it did wait for worker 1
        self.assertIn("worker(s) 1 did not push within", c.logged())
        for st in c.status():  # nothing was applied without worker 1
            self.assertEqual({ls.version for ls in st.layers}, {0})

    def test_proceed_goes_on_without_it(self):
        c = self.cluster(2, 2, "--worker-timeout", "3",
                         "--on-worker-timeout", "proceed")
        steps = 6
        proc = start_worker(c.addrs, 0, 2,
                            self.FLAGS + ["--max-steps", str(steps)])
        try:
            self.wait_for_pushes(c, proc)
            stdout, stderr = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        self.assertEqual(proc.returncode, 0, stderr)
        done = summary(stdout)
        self.assertEqual(done["steps"], steps)
        self.assertTrue(math.isfinite(done["final_loss"]))
        for st in c.status():
            self.assertEqual({ls.version for ls in st.layers}, {steps})
        self.assertIn("going on without worker(s) 1", c.logged())

    def test_proceed_after_worker_killed_mid_run(self):
        """Both ranks train; rank 1 is SIGKILLed after a few steps and rank
        0 finishes alone."""
        c = self.cluster(2, 2, "--worker-timeout", "3",
                         "--on-worker-timeout", "proceed")
        steps = 300  # rank 1 still runs when it is killed near step 3
        procs = [start_worker(c.addrs, r, 2,
                              self.FLAGS + ["--max-steps", str(steps),
                                            "--epochs", "10"])
                 for r in range(2)]
        try:
            deadline = time.monotonic() + 120
            while min((ls.version for st in c.status()
                       for ls in st.layers), default=0) < 3:
                self.assertIsNone(procs[0].poll())
                self.assertLess(time.monotonic(), deadline)
                time.sleep(0.02)
            self.assertIsNone(procs[1].poll(), "rank 1 ended before the kill")
            procs[1].kill()
            procs[1].communicate()
            stdout, stderr = procs[0].communicate(timeout=120)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
        self.assertEqual(procs[0].returncode, 0, stderr)
        self.assertEqual(summary(stdout)["steps"], steps)
        for st in c.status():
            self.assertEqual({ls.version for ls in st.layers}, {steps})
        self.assertIn("going on without worker(s) 1", c.logged())

    def test_proceed_then_wait_again_when_it_returns(self):
        """The protocol, with Python's grpcio as both workers."""
        srv = self.server("proceed", "--workers", "2", "--worker-timeout",
                          "2", "--on-worker-timeout", "proceed")
        init(srv, lr=0.5)
        self.assertFalse(srv.push(0, 0, 0, [1.0] * 18).applied)
        # The pull waits for step 0 until the timeout gives up on worker 1;
        # the step is averaged over worker 0 alone: 0.5 - 0.5 * 1.
        self.assertEqual(srv.pull(0, 1), [0.0] * 15 + [-0.5] * 3)
        # Worker 1 is no longer waited for: Status says so.
        layer = srv.status().layers[0]
        self.assertEqual((list(layer.missing), list(layer.absent)), ([0], [1]))
        r = srv.push(0, 1, 0, [1.0] * 18)
        self.assertTrue(r.applied)
        self.assertEqual(r.version, 2)
        # Worker 1 comes back at step 2: both count again.
        self.assertFalse(srv.push(0, 2, 1, [3.0] * 18).applied)
        self.assertTrue(srv.push(0, 2, 0, [1.0] * 18).applied)
        self.assertEqual(srv.pull(0, 3), [-1.5] * 15 + [-2.0] * 3)
        # ...and step 3 waits for worker 1 again.
        self.assertFalse(srv.push(0, 3, 0, [1.0] * 18).applied)
        layer = srv.status().layers[0]
        self.assertEqual((layer.version, list(layer.missing)), (3, [1]))
        self.assertEqual(list(layer.absent), [])
        self.assertTrue(srv.push(0, 3, 1, [1.0] * 18).applied)
        self.assertEqual(srv.pull(0, 4), [-2.0] * 15 + [-2.5] * 3)

    def test_fail_message_names_the_configured_timeout(self):
        """The error names --worker-timeout's value. The server checks
        periodically, so a step gives up somewhat after the limit; two
        layers whose first pushes are 0.5 s apart see different phases of
        the server's timer, so a message that showed the time waited
        (rounded) instead of the limit would be caught."""
        srv = self.server("fail-1s", "--workers", "2", "--worker-timeout",
                          "1", "--on-worker-timeout", "fail")
        init(srv, lr=0.5, layers=2)
        self.assertFalse(srv.push(0, 0, 0, [1.0] * 18).applied)
        time.sleep(0.5)
        self.assertFalse(srv.push(1, 0, 0, [1.0] * 18).applied)
        msgs = [self.assertCode(grpc.StatusCode.ABORTED, srv.pull, layer, 1)
                for layer in (0, 1)]
        for msg in msgs:
            self.assertIn("worker(s) 1 did not push within", msg)
            self.assertIn("--worker-timeout", msg)
        for msg in msgs:
            self.assertIn("did not push within 1 s", msg)


def main():
    global ARGS, PB
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
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
