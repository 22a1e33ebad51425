#!/usr/bin/python3
"""Recovery during training, with real fsps-server and fsps-worker processes
on loopback, on Fashion-MNIST:

- a server killed with SIGKILL mid-training and restarted at the same
  address restores its newest checkpoint; the workers retry, roll every
  server back to that version and go on. With --deterministic the final
  parameters are bit-identical to an undisturbed run's (so is accuracy).
- a worker killed mid-training and restarted with the same rank rejoins at
  the step the cluster is at, and the final parameters are bit-identical to
  an undisturbed run's too.

Usage: test_recovery.py --bin BUILD_DIR [--repeat N] [TestCase.test_name]
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import test_training as tt

REPEAT = 1  # --repeat

MODEL = ["--model", "mlp:784,64,10", "--optimizer", "adam", "--lr", "0.002",
         "--batch", "32", "--train-limit", "6000", "--epochs", "3",
         "--seed", "5", "--normalize"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One fsps-server at a fixed address, so it can come back there."""

    def __init__(self, tmp, s, S, W, port, ckpt):
        """Logs and port files go to tmp, checkpoints to ckpt."""
        self.tmp, self.s = tmp, s
        self.args = [os.path.join(tt.ARGS.bin, "server", "fsps-server"),
                     "--listen", "127.0.0.1:%d" % port, "--index", str(s),
                     "--num-servers", str(S), "--workers", str(W),
                     "--deterministic", "--checkpoint-dir", ckpt,
                     "--checkpoint-every", "20", "--log-level", "warn"]
        self.log = open(os.path.join(tmp, "server%d.log" % s), "a")
        self.start()

    def start(self):
        pf = os.path.join(self.tmp, "port-%d-%d" % (self.s,
                                                    time.monotonic_ns()))
        self.proc = subprocess.Popen(
            tt.DIE_WITH_PARENT + self.args + ["--port-file", pf],
            stderr=self.log)
        deadline = time.monotonic() + 20
        while not os.path.exists(pf):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fsps-server %d did not start" % self.s)
            time.sleep(0.02)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self.log.close()
        return code


def start_worker(servers, r, W, flags, tmp):
    err = open(os.path.join(tmp, "worker%d-%d.log" % (r, time.monotonic_ns())),
               "w+")
    p = subprocess.Popen(
        tt.DIE_WITH_PARENT +
        [os.path.join(tt.ARGS.bin, "worker", "fsps-worker"), "--servers",
         servers, "--rank", str(r), "--world", str(W)] + flags,
        stdout=subprocess.PIPE, stderr=err, text=True)
    p.errlog = err
    return p


def finish(p, timeout=600):
    out, _ = p.communicate(timeout=timeout)
    p.errlog.seek(0)
    err = p.errlog.read()
    p.errlog.close()
    if p.returncode != 0:
        raise AssertionError("worker exited %d: %s" % (p.returncode, err))
    return json.loads(out.strip().splitlines()[-1]), err


def wait_for_line(p, text, timeout=300):
    """Waits until worker p's stderr shows text (its progress)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        p.errlog.seek(0)
        if text in p.errlog.read():
            return
        if p.poll() is not None:
            raise AssertionError("worker ended before '%s'" % text)
        time.sleep(0.05)
    raise AssertionError("no '%s' from the worker" % text)


class RecoveryTest(unittest.TestCase):
    reference = None  # the undisturbed run, shared by the tests

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.stop()
        keep = os.environ.get("FSPS_KEEP_FAILED")
        r = self._outcome.result
        if keep and any(t is self for t, _ in r.failures + r.errors):
            # A soak keeps what a failure leaves: logs, dumps, checkpoints.
            dest = os.path.join(keep, "%s-%d" % (self.id().split(".")[-1],
                                                 time.monotonic_ns()))
            shutil.copytree(self.tmp.name, dest)
            print("kept %s" % dest, file=sys.stderr)
        self.tmp.cleanup()

    def cluster(self, name, S=2, W=2):
        ports = [free_port() for _ in range(S)]
        home = os.path.join(self.tmp.name, name)
        ckpt = os.path.join(home, "ckpt")
        os.makedirs(ckpt)
        servers = [Server(home, s, S, W, ports[s], ckpt)
                   for s in range(S)]
        self.servers += servers
        return servers, ",".join("127.0.0.1:%d" % p for p in ports)

    def run_pair(self, name, disturb=None, extra=()):
        """Trains W=2 workers; disturb(servers, workers) runs mid-way."""
        servers, addrs = self.cluster(name)
        dump = os.path.join(self.tmp.name, name + ".bin")
        flags = MODEL + ["--dump", dump, "--progress-secs", "1"] + list(extra)
        workers = [start_worker(addrs, r, 2, flags, self.tmp.name)
                   for r in range(2)]
        try:
            if disturb:
                workers = disturb(servers, addrs, workers, flags)
            results = [finish(p) for p in workers]
        finally:
            for p in workers:
                if p.poll() is None:
                    p.kill()
                    p.communicate()
        with open(dump, "rb") as f:
            return results, f.read()

    def undisturbed(self):
        if RecoveryTest.reference is None:
            RecoveryTest.reference = self.run_pair("undisturbed")
        return RecoveryTest.reference

    def test_server_killed_and_restarted(self):
        ref, ref_dump = self.undisturbed()
        for i in range(REPEAT):
            self.killed_once("killed-%d" % i, ref, ref_dump)

    def killed_once(self, name, ref, ref_dump, extra=(), rolled_back=True):
        """One disturbed run: bit for bit the undisturbed one. A kill that
        lands just as a checkpoint is written loses nothing, and the
        workers rightly need no recovery: run again (at most 3 times in
        all) until one exercises the rollback."""
        for attempt in range(3):
            got, dump = self.run_pair("%s-%d" % (name, attempt), kill_server,
                                      extra)
            logs = got[0][1] + got[1][1]
            self.assertEqual(dump, ref_dump)  # bit for bit either way
            if "recovering" in logs:
                break
        self.assertIn("recovering", logs)
        self.assertIn("going on from step", logs)
        if rolled_back:
            with open(servers_log(self.tmp.name, name, attempt, 0)) as f:
                self.assertIn("rolled back", f.read())
        self.assertAlmostEqual(got[0][0]["test_accuracy"],
                               ref[0][0]["test_accuracy"], delta=0.005)
        self.assertGreater(got[0][0]["test_accuracy"], 0.75)

    def test_server_killed_with_layers_in_pieces(self):
        """The same with --piece-mb: the streamed pushes to the killed
        server fail unretried, and the step is computed again."""
        pieces = ["--piece-mb", "0.05"]  # layer 1 (196 KB) in 4 pieces
        ref, ref_dump = self.run_pair("pieces-undisturbed", extra=pieces)
        for i in range(REPEAT):
            self.killed_once("pieces-killed-%d" % i, ref, ref_dump, pieces,
                             rolled_back=False)

    def test_worker_killed_and_restarted(self):
        def kill_worker(servers, addrs, workers, flags):
            wait_for_line(workers[1], "epoch 2/3")
            workers[1].kill()
            workers[1].communicate()
            workers[1].errlog.close()
            time.sleep(0.5)
            workers[1] = start_worker(addrs, 1, 2, flags, self.tmp.name)
            return workers
        ref, ref_dump = self.undisturbed()
        for i in range(REPEAT):
            got, dump = self.run_pair("worker-killed-%d" % i, kill_worker)
            self.assertIn("joining the cluster at step", got[1][1])
            self.assertEqual(got[0][0]["steps"], ref[0][0]["steps"])
            # What the killed worker had pushed of its last step counts
            # once; if a layer had moved past it, the cluster rolled back
            # to a checkpoint: either way the model is the undisturbed one.
            self.assertEqual(dump, ref_dump)  # bit for bit


def kill_server(servers, addrs, workers, flags):
    """SIGKILLs server 1 past a checkpoint and starts it again."""
    wait_for_line(workers[0], "epoch 2/3")
    servers[1].proc.send_signal(signal.SIGKILL)
    servers[1].proc.wait()
    time.sleep(0.5)  # the workers' calls fail and retry meanwhile
    servers[1].start()
    return workers


def servers_log(tmp, name, attempt, s):
    """Server s's log in the cluster run_pair made for (name, attempt)."""
    return os.path.join(tmp, "%s-%d" % (name, attempt), "server%d.log" % s)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--repeat", type=int, default=1,
                    help="disturbed runs per test, each compared with one "
                    "undisturbed run (a soak: scripts/soak-recovery.sh)")
    tt.ARGS, rest = ap.parse_known_args()
    global REPEAT
    REPEAT = tt.ARGS.repeat
    prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    r = prog.result
    failed = len(r.failures) + len(r.errors)
    print("%d passed, %d failed" % (r.testsRun - failed, failed))
    sys.exit(0 if r.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
