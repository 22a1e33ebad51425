#!/usr/bin/python3
"""bench/step_cost: where a step of the demo's model (784-512-256-10,
Fashion-MNIST, Adam, global batch 256) spends its time and CPU outside
sgemm, at S1W1 (one worker on 2 OpenBLAS threads) and S2W2 (two workers
on one thread each, batch 128), and, with --b-env or --b-build, the same
figures for a variant B beside A, interleaved, with their ratios.

Each repetition runs, per variant: the workers alone (--local: the same
compute on a local copy of the parameters, no network), then the real
cluster. Per step after each worker's first (fsps-worker's
steady_per_step, from getrusage) it reports the workers' CPU (user,
system) and context switches, and the servers' (from /proc/PID/stat and
every thread's /proc/PID/task/T/status, over the servers' whole life,
declare included); the workers' CPU beyond --local's is what the network
costs them. With --strace, one more real run of each variant under
`strace -c -f` (worker 0 and server 0) counts system calls per step
(strace slows the run: its counts matter, not its speed).

Prints one JSON line per config and variant (median and [min, max] over
--reps), and with a B variant one line of ratios B / A, each taken within
one repetition (A and B back to back, in alternating order).

Usage: bench/step_cost.py [--build DIR] [--configs S1W1,S2W2] [--reps 3]
                          [--steps N] [--a-env VAR=VALUE,...]
                          [--b-env VAR=VALUE,...]
                          [--b-build DIR] [--strace]
"""
import argparse
import glob
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib
import vs_torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def threads_ctx(pid):
    """Context switches (voluntary + involuntary) of pid's live threads."""
    n = 0
    for st in glob.glob("/proc/%d/task/*/status" % pid):
        try:
            with open(st) as f:
                for line in f:
                    if "ctxt_switches" in line:
                        n += int(line.split()[1])
        except OSError:
            pass  # the thread ended
    return n


def proc_user_sys(pid):
    with open("/proc/%d/stat" % pid) as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]) / benchlib.TICK, int(v[12]) / benchlib.TICK


def worker_flags(a, config, servers):
    S, W, _ = vs_torch.CONFIGS[config]
    f = ["--world", str(W), "--model", vs_torch.MODEL, "--batch",
         str(vs_torch.BATCH // W), "--epochs", "1", "--optimizer", "adam",
         "--lr", "0.001", "--normalize", "--no-eval", "--progress-secs",
         "1000000", "--data-dir", a.data_dir]
    f += ["--servers", servers] if servers else ["--local"]
    return f + (["--max-steps", str(a.steps)] if a.steps else [])


def run_workers(v, a, config, servers, tmp):
    """Runs the config's workers to completion (variant v); returns their
    summaries."""
    _, W, threads = vs_torch.CONFIGS[config]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), **v["env"])
    procs = []
    for r in range(W):
        pre = []
        if v.get("strace") and r == 0:
            pre = ["strace", "-c", "-f", "-o", os.path.join(tmp, "w.strace")]
        procs.append(subprocess.Popen(
            pre + [os.path.join(v["build"], "worker", "fsps-worker"),
                   "--rank", str(r)] + worker_flags(a, config, servers),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=env))
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            sys.exit("bench/step_cost: fsps-worker failed: " + stderr)
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def start_servers(v, tmp, S, W):
    """Like benchlib.start_servers, with variant v's build, environment
    and, for --strace, server 0 under strace -c -f."""
    procs, addrs = [], []
    env = dict(os.environ, **v["env"])
    for s in range(S):
        pf = os.path.join(tmp, "port%d" % s)
        pre = []
        if v.get("strace") and s == 0:
            pre = ["strace", "-c", "-f", "-o", os.path.join(tmp, "s.strace")]
        procs.append(subprocess.Popen(
            pre + [os.path.join(v["build"], "server", "fsps-server"),
                   "--listen", "127.0.0.1:0", "--index", str(s),
                   "--num-servers", str(S), "--workers", str(W),
                   "--port-file", pf, "--log-level", "warn"], env=env))
        while not os.path.exists(pf) or not os.path.getsize(pf):
            if procs[-1].poll() is not None:
                benchlib.stop_servers(procs)
                sys.exit("bench/step_cost: fsps-server did not start")
            time.sleep(0.02)
        with open(pf) as f:
            addrs.append("127.0.0.1:" + f.read().strip())
    return procs, ",".join(addrs)


def stop_traced(procs):
    """Stops the servers; one under strace gets SIGTERM itself (strace
    would not pass its own on), so that strace writes its table."""
    for p in procs:
        try:
            with open("/proc/%d/task/%d/children" % (p.pid, p.pid)) as f:
                kids = [int(k) for k in f.read().split()]
        except OSError:
            kids = []
        if p.args[0] == "strace":
            for k in kids:
                os.kill(k, signal.SIGTERM)
    benchlib.stop_servers(procs)


def strace_counts(path, steps):
    """strace -c's table as {syscall: calls per step}."""
    out = {}
    with open(path) as f:
        for line in f:
            w = line.split()
            if len(w) >= 5 and w[0][0].isdigit() and w[-1] != "total":
                out[w[-1]] = round(int(w[3]) / steps, 2)
    return dict(sorted(out.items(), key=lambda kv: -kv[1])[:8])


def real_run(v, a, config):
    S, W, _ = vs_torch.CONFIGS[config]
    with tempfile.TemporaryDirectory() as tmp:
        procs, servers = start_servers(v, tmp, S, W)
        pids = [p.pid for p in procs]
        try:
            cs0 = sum(threads_ctx(p) for p in pids)
            out, _, _, other = benchlib.timed(
                lambda: run_workers(v, a, config, servers, tmp), pids)
            us = [proc_user_sys(p) for p in pids]
            cs = sum(threads_ctx(p) for p in pids) - cs0
        finally:
            stop_traced(procs)
        steps = out[0]["steps"]
        r = {"steps": steps, "other": other,
             "sps": sum(w["steady_samples_per_s"] for w in out),
             "wait": max(w["comm_wait_fraction"] for w in out),
             "srv_user": sum(u for u, _ in us) / steps,
             "srv_sys": sum(s for _, s in us) / steps, "srv_cs": cs / steps}
        for k in ("user_s", "sys_s", "vol_cs", "invol_cs"):
            r["w_" + k] = sum(w["steady_per_step"][k] for w in out)
        if v.get("strace"):
            r["syscalls_worker0"] = strace_counts(
                os.path.join(tmp, "w.strace"), steps)
            r["syscalls_server0"] = strace_counts(
                os.path.join(tmp, "s.strace"), steps)
    return r


def measure(v, a, config):
    """One repetition of variant v: local workers, then the cluster."""
    with tempfile.TemporaryDirectory() as tmp:
        local, _, _, lother = benchlib.timed(
            lambda: run_workers(v, a, config, None, tmp))
    r = real_run(v, a, config)
    r["local_sps"] = sum(w["steady_samples_per_s"] for w in local)
    r["local_cpu"] = sum(w["steady_per_step"]["user_s"] +
                         w["steady_per_step"]["sys_s"] for w in local)
    r["other"] = max(r["other"], lother)
    return r


def spread(values, digits):
    med = round(statistics.median(values), digits)
    return med, [round(min(values), digits), round(max(values), digits)]


KEYS = (("sps", 1), ("local_sps", 1), ("wait", 3), ("w_user_s", 5),
        ("w_sys_s", 5), ("local_cpu", 5), ("w_vol_cs", 1),
        ("w_invol_cs", 1), ("srv_user", 5), ("srv_sys", 5),
        ("srv_cs", 1), ("other", 2))
NAMES = {"sps": "samples_per_s", "local_sps": "local_samples_per_s",
         "wait": "comm_wait_fraction",
         "w_user_s": "workers_user_s_per_step",
         "w_sys_s": "workers_sys_s_per_step",
         "local_cpu": "local_workers_cpu_s_per_step",
         "w_vol_cs": "workers_voluntary_cs_per_step",
         "w_invol_cs": "workers_involuntary_cs_per_step",
         "srv_user": "servers_user_s_per_step",
         "srv_sys": "servers_sys_s_per_step",
         "srv_cs": "servers_cs_per_step", "other": "other_cores"}


def report(config, name, v, runs):
    line = {"bench": "step_cost", "config": config, "variant": name,
            "build": v["build"], "env": v["env"], "steps": runs[0]["steps"],
            "reps": len(runs)}
    for k, d in KEYS:
        line[NAMES[k]], line[NAMES[k] + "_range"] = spread(
            [r[k] for r in runs], d)
    for k in ("syscalls_worker0", "syscalls_server0"):
        if k in runs[-1]:
            line[k + "_per_step"] = runs[-1][k]
    print(json.dumps(line), flush=True)


def report_ratio(config, runs_a, runs_b):
    line = {"bench": "step_cost", "config": config, "ratio": "B/A",
            "reps": len(runs_a)}
    for k, name in (("sps", "samples_per_s"), ("wait", "comm_wait_fraction"),
                    ("w_user_s", "workers_user_s_per_step"),
                    ("w_sys_s", "workers_sys_s_per_step"),
                    ("srv_user", "servers_user_s_per_step"),
                    ("srv_sys", "servers_sys_s_per_step")):
        vals = [b[k] / x[k] for x, b in zip(runs_a, runs_b) if x[k] > 0]
        if vals:
            line[name], line[name + "_range"] = spread(vals, 3)
    print(json.dumps(line), flush=True)


def variants(a):
    def env(text):
        return dict(kv.split("=", 1) for kv in text.split(",") if kv)
    out = {"A": {"build": os.path.abspath(a.build), "env": env(a.a_env)}}
    if a.a_env or a.b_env or a.b_build:
        out["B"] = {"build": os.path.abspath(a.b_build or a.build),
                    "env": env(a.b_env)}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--configs", default="S1W1,S2W2")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--steps", type=int, default=0,
                    help="stop after N steps (0: one epoch, 234 steps)")
    ap.add_argument("--a-env", default="",
                    help="variant A: VAR=VALUE,... set for its workers "
                         "and servers")
    ap.add_argument("--b-env", default="",
                    help="variant B: VAR=VALUE,... set for its workers "
                         "and servers")
    ap.add_argument("--b-build", help="variant B: this build folder")
    ap.add_argument("--strace", action="store_true",
                    help="also count system calls per step (strace -c)")
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    a = ap.parse_args()
    vs = variants(a)
    for config in a.configs.split(","):
        if config not in vs_torch.CONFIGS:
            sys.exit("bench/step_cost: unknown config %r" % config)
        runs = {n: [] for n in vs}
        for rep in range(a.reps):
            order = list(vs) if rep % 2 == 0 else list(vs)[::-1]
            for n in order:
                runs[n].append(measure(vs[n], a, config))
        if a.strace:
            for n in vs:  # counts only: strace slows the run
                r = real_run(dict(vs[n], strace=True), a, config)
                for k in ("syscalls_worker0", "syscalls_server0"):
                    runs[n][-1][k] = r[k]
        for n in vs:
            report(config, n, vs[n], runs[n])
        if "B" in vs:
            report_ratio(config, runs["A"], runs["B"])


if __name__ == "__main__":
    main()
