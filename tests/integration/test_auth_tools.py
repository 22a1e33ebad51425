#!/usr/bin/python3
"""Tokens through fsps's own tools, on 2 real fsps-servers with
--auth-tokens: a 2-worker training by fsps-worker (rank 0 with an admin
token from --token-file, rank 1 with a worker token from FSPS_TOKEN_FILE);
a worker token cannot declare the model and no token gets nowhere, each
refused once (libfsps never retries a refusal), with a message that says
so; fsps-ctl with reader and admin tokens (a reader's rollback and
checkpoint exit 1, change nothing and say why); fsps-health needs no token;
no token ever shows in `ps`, in any output or log, and no tool takes one
as a flag.

Usage: test_auth_tools.py --bin BUILD_DIR
"""
import argparse
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import unittest

ARGS = None
S, W = 2, 2
STEPS = 12
DEADLINE_S = 300  # generous: CI runs this on 2 busy cores
# Every child through setpriv(1) with PDEATHSIG: none outlives the test.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]
TOKENS = {role: "%s-%s" % (role, secrets.token_hex(16))
          for role in ("admin", "worker", "reader")}
WORKER_FLAGS = ["--model", "mlp:64,32,10", "--synthetic", "2000",
                "--optimizer", "sgd", "--lr", "0.05", "--batch", "16",
                "--seed", "5", "--no-eval", "--progress-secs", "1000"]


def binary(*parts):
    return os.path.join(ARGS.bin, *parts)


def clean_env(**extra):
    """The environment without any FSPS_ token variable, plus extra."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("FSPS_TOKEN", "FSPS_TOKEN_FILE")}
    env.update(extra)
    return env


def refusals(path):
    with open(path) as f:
        return len(re.findall(r"\] refused ", f.read()))


class ToolsTest(unittest.TestCase):
    """One cluster, exercised in order."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        t = cls.tmp.name
        cls.ckpt = os.path.join(t, "ckpt")
        cls.files = {}
        for role, token in TOKENS.items():
            cls.files[role] = os.path.join(t, role + ".token")
            with open(cls.files[role], "w") as f:
                f.write("# the %s token\n%s\n" % (role, token))
            os.chmod(cls.files[role], 0o600)
        cls.table = os.path.join(t, "tokens")
        with open(cls.table, "w") as f:
            f.write("".join("%s %s\n" % kv for kv in TOKENS.items()))
        os.chmod(cls.table, 0o640)
        cls.procs, cls.logs, ports = [], [], []
        try:
            for s in range(S):
                ports.append(cls.start_server(s))
        except Exception:
            cls.stop()
            raise
        cls.servers = ",".join("127.0.0.1:%d" % p for p in ports)

    @classmethod
    def start_server(cls, s):
        pf = os.path.join(cls.tmp.name, "port-%d" % s)
        cls.logs.append(os.path.join(cls.tmp.name, "server-%d.log" % s))
        with open(cls.logs[-1], "w") as err:
            cls.procs.append(subprocess.Popen(
                DIE_WITH_PARENT +
                [binary("server", "fsps-server"), "--listen", "127.0.0.1:0",
                 "--port-file", pf, "--index", str(s), "--num-servers",
                 str(S), "--workers", str(W), "--checkpoint-dir", cls.ckpt,
                 "--auth-tokens", cls.table], stderr=err))
        deadline = time.monotonic() + DEADLINE_S
        while not os.path.exists(pf) or not os.path.getsize(pf):
            if cls.procs[-1].poll() is not None or \
                    time.monotonic() > deadline:
                raise RuntimeError("fsps-server %d did not start" % s)
            time.sleep(0.05)
        with open(pf) as f:
            return int(f.read())

    @classmethod
    def stop(cls):
        for p in cls.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        codes = [p.wait(timeout=60) for p in cls.procs]
        cls.tmp.cleanup()
        return codes

    @classmethod
    def tearDownClass(cls):
        logs = ""
        for path in cls.logs:
            with open(path) as f:
                logs += f.read()
        codes = cls.stop()
        assert codes == [0] * S, "servers exited %r" % codes
        for token in TOKENS.values():
            assert token not in logs, "a token in a server log"

    # ---- helpers ----

    def assertNoToken(self, *texts):
        for text in texts:
            for token in TOKENS.values():
                self.assertNotIn(token, text)

    def run_tool(self, args, env=None):
        """Runs a tool to completion: (exit code, stdout, stderr)."""
        r = subprocess.run(DIE_WITH_PARENT + args, capture_output=True,
                           text=True, timeout=DEADLINE_S,
                           env=env if env is not None else clean_env())
        self.assertNoToken(r.stdout, r.stderr)
        return r.returncode, r.stdout, r.stderr

    def ctl(self, *args, env=None):
        return self.run_tool([binary("ctl", "fsps-ctl")] + list(args) +
                             ["--servers", self.servers], env)

    def status(self):
        code, out, err = self.ctl("status", "--json",
                                  env=clean_env(FSPS_TOKEN=TOKENS["reader"]))
        self.assertEqual(code, 0, err)
        return json.loads(out)

    def versions(self):
        return [[l["version"] for l in srv["layers"]]
                for srv in self.status()["servers"]]

    def worker(self, rank, extra, env=None):
        return subprocess.Popen(
            DIE_WITH_PARENT +
            [binary("worker", "fsps-worker"), "--servers", self.servers,
             "--rank", str(rank), "--world", str(W), "--max-steps",
             str(STEPS)] + WORKER_FLAGS + extra,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env if env is not None else clean_env())

    def finish(self, p):
        out, err = p.communicate(timeout=DEADLINE_S)
        self.assertNoToken(out, err)
        return p.returncode, out, err

    def assertNoTokenInPs(self, pids):
        """Neither `ps` nor /proc/PID/cmdline of pids shows a token, and
        each of pids is seen (so the check is not vacuous)."""
        ps = subprocess.run(["ps", "-eo", "pid,args", "--width", "100000"],
                            capture_output=True, text=True, check=True).stdout
        self.assertNoToken(ps)
        for pid in pids:
            self.assertRegex(ps, r"(?m)^ *%d " % pid)
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                self.assertNoToken(f.read().decode(errors="replace"))

    def refused_once(self, before):
        """Each server logged at most one more refusal, and some did: a
        refusal is never retried."""
        after = [refusals(p) for p in self.logs]
        added = [a - b for a, b in zip(after, before)]
        self.assertTrue(all(0 <= n <= 1 for n in added), added)
        self.assertGreaterEqual(sum(added), 1, added)

    # ---- the tests, in order ----

    def test_1_worker_token_cannot_declare(self):
        before = [refusals(p) for p in self.logs]
        code, out, err = self.finish(
            self.worker(0, ["--token-file", self.files["worker"]]))
        self.assertEqual(code, 1, err)  # a sanitizer report changes it
        self.assertIn("refused the call (PERMISSION_DENIED): role worker "
                      "may only join the declared model", err)
        self.refused_once(before)
        self.assertFalse(any(s["initialized"]
                             for s in self.status()["servers"]))

    def test_2_no_token_gets_nowhere(self):
        before = [refusals(p) for p in self.logs]
        code, out, err = self.finish(self.worker(0, []))
        self.assertEqual(code, 1, err)  # a sanitizer report changes it
        self.assertIn("refused the call (UNAUTHENTICATED): no token", err)
        self.assertIn("this client sends no token", err)
        self.refused_once(before)
        code, out, err = self.ctl("status")
        self.assertEqual(code, 1, err)
        self.assertIn("UNAUTHENTICATED", out)
        self.assertIn("refused the call (UNAUTHENTICATED): no token", err)

    def test_3_two_workers_train_with_tokens(self):
        r0 = self.worker(0, ["--token-file", self.files["admin"]])
        # Rank 0 waits at step 1 for rank 1: it is alive for ps.
        env = clean_env(FSPS_TOKEN_FILE=self.files["worker"])
        r1 = self.worker(1, [], env=env)
        self.assertNoTokenInPs([p.pid for p in self.procs] +
                               [p.pid for p in (r0, r1) if p.poll() is None])
        done = []
        for r, p in enumerate((r0, r1)):
            code, out, err = self.finish(p)
            self.assertEqual(code, 0, "rank %d: %s" % (r, err))
            done.append(json.loads(out.strip().splitlines()[-1]))
        self.assertEqual([d["steps"] for d in done], [STEPS, STEPS])
        self.assertEqual(self.versions(), [[STEPS, STEPS]] * S)

    def test_4_ctl_reader_reads_admin_operates(self):
        reader = clean_env(FSPS_TOKEN_FILE=self.files["reader"])
        code, out, err = self.ctl("status", env=reader)
        self.assertEqual((code, err), (0, ""))
        files = sorted(os.listdir(self.ckpt))
        code, out, err = self.ctl("checkpoint", env=reader)
        self.assertEqual(code, 1, err)
        self.assertIn("refused the call (PERMISSION_DENIED): role reader may "
                      "not call Checkpoint", err)
        self.assertEqual(sorted(os.listdir(self.ckpt)), files)
        code, out, err = self.ctl("rollback", "--version", "0", env=reader)
        self.assertEqual(code, 1, err)
        self.assertIn("refused the call (PERMISSION_DENIED): role reader may "
                      "not call Rollback", err)
        self.assertEqual(self.versions(), [[STEPS, STEPS]] * S)
        self.assertEqual({s["epoch"] for s in self.status()["servers"]},
                         {"0" * 16})
        code, out, err = self.ctl("checkpoint", "--token-file",
                                  self.files["admin"])
        self.assertEqual(code, 0, err)
        self.assertEqual(len(re.findall(r"wrote .*\(version %d" % STEPS,
                                        out)), S, out)
        code, out, err = self.ctl("rollback", "--version", "0",
                                  "--token-file", self.files["admin"])
        self.assertEqual(code, 0, err)
        self.assertEqual(self.versions(), [[0, 0]] * S)

    def test_5_tokens_only_from_files_or_the_environment(self):
        # --token is refused, never taken for --token-file (whose value
        # an error would show), and its value is never shown.
        for tool in (["ctl", "fsps-ctl", "status"],
                     ["worker", "fsps-worker"]):
            for flag in (["--token", TOKENS["admin"]],
                         ["--token=" + TOKENS["admin"]],
                         ["--tok=" + TOKENS["admin"]]):
                code, out, err = self.run_tool(
                    [binary(*tool[:2])] + tool[2:] + flag +
                    ["--servers", self.servers])
                self.assertEqual(code, 2, err)
                if flag[0].startswith("--token"):
                    self.assertIn("no --token flag", err)
        code, out, err = self.run_tool([binary("tests", "fsps-health"),
                                        "--token", TOKENS["admin"],
                                        self.servers.split(",")[0]])
        self.assertEqual(code, 2, err)
        loose = os.path.join(self.tmp.name, "loose.token")
        with open(loose, "w") as f:
            f.write(TOKENS["admin"] + "\n")
        os.chmod(loose, 0o644)
        code, out, err = self.ctl("status", "--token-file", loose)
        self.assertEqual(code, 2, err)
        self.assertIn("can be read or written by every user", err)
        code, out, err = self.ctl(
            "status", env=clean_env(FSPS_TOKEN="two words"))
        self.assertEqual(code, 2, err)
        code, out, err = self.finish(self.worker(1, ["--token-file", loose]))
        self.assertEqual(code, 1, err)  # a sanitizer report changes it
        self.assertIn("every user", err)

    def test_6_health_needs_no_token(self):
        for extra, env in (([], clean_env()),
                           (["--token-file", self.files["reader"]],
                            clean_env()),
                           ([], clean_env(FSPS_TOKEN=TOKENS["worker"]))):
            code, out, err = self.run_tool(
                [binary("tests", "fsps-health")] + extra +
                self.servers.split(","), env)
            self.assertEqual(code, 0, err)
            self.assertEqual(out.count(": SERVING"), S)


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ARGS, rest = ap.parse_known_args()
    prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    r = prog.result
    failed = len(r.failures) + len(r.errors)
    print("%d passed, %d failed" % (r.testsRun - failed, failed))
    sys.exit(0 if r.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
