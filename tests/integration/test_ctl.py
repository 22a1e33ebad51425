#!/usr/bin/python3
"""fsps-ctl against 2 real fsps-servers on loopback (with a checkpoint
folder): status as a table and as JSON (versions, pending step, the worker
a step waits for), checkpoint (the files appear), rollback (the versions go
back), and bad input: each exit code and its message.

ctl_driver (tests/ctl_driver.c) declares a 2-layer model for 2 workers and
pushes steps as both workers, or as worker 0 alone.

Usage: test_ctl.py --ctl FSPS_CTL --driver CTL_DRIVER --server FSPS_SERVER
"""
import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None
S = 2


# Every child is started through setpriv(1) with PDEATHSIG set, so that no
# server or worker outlives its test. Not with a preexec_fn doing prctl:
# that makes subprocess fork() the test process and run Python in the
# child, which hung a launch for good now and then under load.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]


def start_server(tmp, s, ckpt):
    pf = os.path.join(tmp, "port-%d" % s)
    p = subprocess.Popen(
        DIE_WITH_PARENT +
        [ARGS.server, "--listen", "127.0.0.1:0", "--port-file", pf,
         "--index", str(s), "--num-servers", str(S), "--workers", "2",
         "--checkpoint-dir", ckpt, "--log-level", "warn"])
    deadline = time.monotonic() + 30
    while not os.path.exists(pf) or not os.path.getsize(pf):
        if p.poll() is not None or time.monotonic() > deadline:
            p.kill()
            raise RuntimeError("fsps-server %d did not start" % s)
        time.sleep(0.02)
    with open(pf) as f:
        return p, "127.0.0.1:%d" % int(f.read())


def ctl(*args, env=None):
    """Runs fsps-ctl; returns (exit code, stdout, stderr)."""
    r = subprocess.run([ARGS.ctl] + list(args), capture_output=True,
                       text=True, timeout=120, env=env)
    return r.returncode, r.stdout, r.stderr


class CtlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.ckpt = os.path.join(cls.tmp.name, "ckpt")
        os.mkdir(cls.ckpt)
        cls.procs, addrs = [], []
        try:
            for s in range(S):
                p, a = start_server(cls.tmp.name, s, cls.ckpt)
                cls.procs.append(p)
                addrs.append(a)
        except Exception:
            cls.stop()
            raise
        cls.servers = ",".join(addrs)

    @classmethod
    def stop(cls):
        for p in cls.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=30) for p in cls.procs]
        cls.tmp.cleanup()
        return codes

    @classmethod
    def tearDownClass(cls):
        assert cls.stop() == [0] * S

    def drive(self, first, last, partial):
        r = subprocess.run([ARGS.driver, self.servers, str(first), str(last),
                            str(int(partial))], capture_output=True,
                           text=True, timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)

    def status_json(self):
        code, out, err = ctl("status", "--servers", self.servers, "--json")
        self.assertEqual(code, 0, err)
        return json.loads(out)

    def assert_versions(self, version):
        doc = self.status_json()
        for srv in doc["servers"]:
            self.assertEqual([l["version"] for l in srv["layers"]],
                             [version, version])

    def test_1_status_table_and_json(self):
        self.drive(0, 3, partial=True)  # versions 3, step 3 waits for 1
        code, out, err = ctl("status", "--servers", self.servers)
        self.assertEqual(code, 0, err)
        self.assertEqual(err, "")
        lines = out.splitlines()
        self.assertTrue(lines[0].startswith("SERVER  ADDRESS"), out)
        layers = lines[lines.index("") + 1:]
        self.assertEqual(layers[0].split()[:6],
                         ["SERVER", "LAYER", "NAME", "VERSION", "PENDING",
                          "PUSHED"])
        # aligned: every row's VERSION column starts where the header's does
        col = layers[0].index("VERSION")
        rows = [r for r in layers[1:] if r.strip()]
        self.assertEqual(len(rows), S * 2)
        for s, row in enumerate(rows):
            self.assertEqual(row[col:].split()[:2], ["3", "3"], out)
            # SERVER LAYER NAME VERSION PENDING PUSHED WAITING-FOR ABSENT
            self.assertEqual(row.split(), [str(s // 2), str(s % 2),
                                           "fc%d" % (s % 2 + 1), "3", "3",
                                           "0", "1", "-"], out)
        for s, addr in enumerate(self.servers.split(",")):
            self.assertRegex(out, r"(?m)^%d +%s +ok +bsp +2 " % (s, addr))

        doc = self.status_json()
        self.assertEqual(len(doc["servers"]), S)
        for s, srv in enumerate(doc["servers"]):
            self.assertEqual(srv["server"], s)
            self.assertIsNone(srv["error"])
            self.assertTrue(srv["initialized"])
            self.assertEqual(srv["num_workers"], 2)
            self.assertEqual(srv["mode"], "bsp")
            self.assertEqual(srv["epoch"], "0" * 16)
            self.assertEqual([l["name"] for l in srv["layers"]],
                             ["fc1", "fc2"])
            for l in srv["layers"]:
                self.assertEqual(l["version"], 3)
                self.assertEqual(l["pending_step"], 3)
                self.assertEqual(l["pushed"], [0])
                self.assertEqual(l["missing"], [1])
                self.assertEqual(l["absent"], [])

    def test_2_checkpoint_then_rollback(self):
        self.drive(0, 3, partial=True)  # idempotent: still at 3
        code, out, err = ctl("checkpoint", "--servers", self.servers)
        self.assertEqual(code, 0, err)
        files = sorted(os.listdir(self.ckpt))
        self.assertEqual(len([f for f in files if f.endswith(".fsps")]), S,
                         files)
        for s in range(S):
            m = re.search(r"(?m)^server %d: wrote (\S+) \(version 3, \d+ "
                          r"bytes\)$" % s, out)
            self.assertIsNotNone(m, out)
            self.assertTrue(os.path.exists(m.group(1)))
        self.assertEqual(
            self.status_json()["servers"][0]["checkpoints"], [3])
        code, out, err = ctl("checkpoint", "--servers", self.servers, "--json")
        self.assertEqual(code, 0, err)
        doc = json.loads(out)
        self.assertTrue(doc["ok"])
        self.assertEqual([e["server"] for e in doc["servers"]], list(range(S)))
        for e in doc["servers"]:
            self.assertEqual((e["ok"], e["version"]), (True, 3), e)
            self.assertGreater(e["bytes"], 0)
            self.assertTrue(os.path.exists(e["path"]), e)

        self.drive(3, 6, partial=False)  # worker 1 completes 3; then 4, 5
        self.assert_versions(6)
        code, out, err = ctl("rollback", "--servers", self.servers,
                             "--version", "3")
        self.assertEqual(code, 0, err)
        self.assertRegex(out, r"rolled 2 server\(s\) back to version 3; "
                              r"new epoch [0-9a-f]{16}")
        self.assert_versions(3)
        code, out, err = ctl("rollback", "--servers", self.servers,
                             "--version", "3", "--json")
        self.assertEqual(code, 0, err)
        doc = json.loads(out)
        self.assertEqual((doc["ok"], doc["version"], doc["servers"]),
                         (True, 3, S), doc)
        self.assertRegex(doc["epoch"], r"^[0-9a-f]{16}$")
        doc = self.status_json()
        self.assertEqual({srv["epoch"] for srv in doc["servers"]},
                         {json.loads(out)["epoch"]})
        epochs = {srv["epoch"] for srv in doc["servers"]}
        self.assertEqual(len(epochs), 1)
        self.assertNotEqual(epochs, {"0" * 16})
        for srv in doc["servers"]:
            for l in srv["layers"]:
                self.assertEqual(l["missing"], [0, 1])

        # refused: no checkpoint of 2 (exit 1), nothing changes
        code, out, err = ctl("rollback", "--servers", self.servers,
                             "--version", "2")
        self.assertEqual(code, 1, err)
        self.assertIn("cannot go back to version 2", err)
        self.assertIn("server 0 (%s)" % self.servers.split(",")[0], err)
        code, out, err = ctl("rollback", "--servers", self.servers,
                             "--version", "9")
        self.assertEqual(code, 1, err)
        self.assertIn("cannot go forward to version 9", err)
        code, out, err = ctl("rollback", "--servers", self.servers,
                             "--version", "9", "--json")
        self.assertEqual(code, 1, err)
        doc = json.loads(out)
        self.assertEqual((doc["ok"], doc["version"], doc["error"]),
                         (False, 9, "FAILED_PRECONDITION"), doc)
        self.assertIn("cannot go forward to version 9", doc["message"])
        self.assert_versions(3)

    def test_3_bad_usage(self):
        cases = [
            (["frobnicate"], "unknown command 'frobnicate'"),
            ([], "no command"),
            (["status"], "no servers"),
            (["rollback", "--servers", self.servers], "give --version N"),
            (["rollback", "--servers", self.servers, "--version", "abc"],
             "--version wants a non-negative integer, not 'abc'"),
            (["rollback", "--servers", self.servers, "--version", "-1"],
             "not '-1'"),
            (["rollback", "--servers", self.servers, "--version", "3x"],
             "not '3x'"),
            (["status", "--servers", self.servers, "--bogus"],
             "unknown option or missing argument: '--bogus'"),
            (["status", "--servers"], "missing argument: '--servers'"),
            (["status", "--servers", self.servers, "--timeout", "0"],
             "--timeout wants seconds > 0"),
            (["status", "--servers", "a,,b"], "--servers 'a,,b'"),
        ]
        env = dict(os.environ)
        env.pop("FSPS_SERVERS", None)
        for args, msg in cases:
            code, out, err = ctl(*args, env=env)
            self.assertEqual(code, 2, (args, out, err))
            self.assertIn(msg, err, args)
            self.assertEqual(out, "", args)

    def test_4_help_and_env(self):
        code, out, err = ctl("--help")
        self.assertEqual(code, 0)
        for word in ("status", "checkpoint", "rollback", "exit codes"):
            self.assertIn(word, out)
        for cmd in ("status", "checkpoint", "rollback"):
            code, out, err = ctl(cmd, "--help")
            self.assertEqual(code, 0, err)
            self.assertTrue(out.startswith("usage: fsps-ctl " + cmd), out)
            self.assertIn("--servers", out)
        env = dict(os.environ, FSPS_SERVERS=self.servers)
        code, out, err = ctl("status", "--json", env=env)
        self.assertEqual(code, 0, err)
        self.assertEqual(len(json.loads(out)["servers"]), S)

    def test_5_unreachable(self):
        dead = self.servers + ",127.0.0.1:1"  # nobody listens on port 1
        code, out, err = ctl("status", "--servers", dead, "--timeout", "5")
        self.assertEqual(code, 3, err)
        self.assertIn("server 2 (127.0.0.1:1)", err)
        self.assertIn("UNAVAILABLE", err)
        self.assertRegex(out, r"(?m)^2 +127\.0\.0\.1:1 +UNAVAILABLE")
        code, out, err = ctl("status", "--servers", dead, "--json")
        self.assertEqual(code, 3, err)
        doc = json.loads(out)
        self.assertEqual(doc["servers"][2]["error"]["code"], "UNAVAILABLE")
        self.assertIsNone(doc["servers"][0]["error"])
        for cmd in (["checkpoint"], ["rollback", "--version", "0"]):
            code, out, err = ctl(*cmd, "--servers", "127.0.0.1:1")
            self.assertEqual(code, 3, (cmd, err))
            self.assertIn("127.0.0.1:1", err)
        code, out, err = ctl("checkpoint", "--servers", dead, "--json",
                             "--timeout", "5")
        self.assertEqual(code, 3, err)
        doc = json.loads(out)
        self.assertFalse(doc["ok"])
        self.assertEqual(doc["servers"][2]["error"], "UNAVAILABLE", doc)
        self.assertIn("127.0.0.1:1", doc["servers"][2]["message"])


def main():
    global ARGS
    p = argparse.ArgumentParser()
    p.add_argument("--ctl", required=True)
    p.add_argument("--driver", required=True)
    p.add_argument("--server", required=True)
    ARGS, rest = p.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    main()
