#!/usr/bin/python3
"""bench/train: training throughput of real fsps-server and fsps-worker
processes on loopback, beside the limit measured in the same run: the same
workers' compute alone (--local: the parameters are a local copy, nothing
crosses the network), run side by side as many as in the real run.

For each model prints one JSON object per line:
  samples_per_s               both workers together, through the servers
  compute_only_samples_per_s  the same workers with --local
  overlap                     compute-only step time / actual step time
  peak_rss_bytes              the largest worker's peak resident set
  model_bytes                 the model's parameters

Usage: bench/train.py [--build build] [--steps 30] [--batch 256]
                      [--models mlp:...;mlp:...] [--no-reshard]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

DEFAULT_MODELS = ";".join([
    "mlp:784,512,256,10",                              # the demo's model
    "mlp:784,4096,4096,4096,10",                       # the example
    "mlp:784," + ",".join(["4096"] * 9) + ",10",       # deep enough to shard
])


def model_bytes(desc):
    w = [int(x) for x in desc.split(":")[1].split(",")]
    return 4 * sum(w[i] * w[i + 1] + w[i + 1] for i in range(len(w) - 1))


def start_servers(build, tmp, S, W):
    procs, servers = [], []
    for s in range(S):
        pf = os.path.join(tmp, "port%d" % s)
        procs.append(subprocess.Popen(
            [os.path.join(build, "server", "fsps-server"), "--listen",
             "127.0.0.1:0", "--index", str(s), "--num-servers", str(S),
             "--workers", str(W), "--port-file", pf, "--log-level", "warn"]))
        while not os.path.exists(pf):
            if procs[-1].poll() is not None:
                sys.exit("bench/train: fsps-server did not start")
            time.sleep(0.02)
        with open(pf) as f:
            servers.append("127.0.0.1:%s" % f.read().strip())
    return procs, ",".join(servers)


def run_workers(build, W, flags):
    procs = [subprocess.Popen(
        [os.path.join(build, "worker", "fsps-worker"), "--rank", str(r),
         "--world", str(W), "--progress-secs", "1000000", "--no-eval"] + flags,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for r in range(W)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            sys.exit("bench/train: worker failed: " + stderr)
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def measure(a, model, reshard):
    flags = ["--model", model, "--synthetic", str(a.batch * a.workers * 8),
             "--batch", str(a.batch), "--max-steps", str(a.steps),
             "--epochs", "1000", "--optimizer", "sgd", "--lr", "0.001",
             "--prefetch", "1"]
    if reshard:
        flags.append("--reshard-after-forward")
    local = run_workers(a.build, a.workers, flags + ["--local"])
    with tempfile.TemporaryDirectory() as tmp:
        procs, servers = start_servers(a.build, tmp, a.servers, a.workers)
        try:
            real = run_workers(a.build, a.workers,
                               flags + ["--servers", servers])
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait()
    sps = sum(w["samples_per_s"] for w in real)
    lim = sum(w["samples_per_s"] for w in local)
    print(json.dumps({
        "bench": "train", "model": model, "servers": a.servers,
        "workers": a.workers, "batch": a.batch, "steps": a.steps,
        "reshard_after_forward": reshard,
        "samples_per_s": round(sps, 1),
        "compute_only_samples_per_s": round(lim, 1),
        "overlap": round(sps / lim, 3),
        "comm_wait_fraction": max(w["comm_wait_fraction"] for w in real),
        "peak_rss_bytes": max(w["peak_rss_bytes"] for w in real),
        "peak_buffer_bytes": max(w["peak_buffer_bytes"] for w in real),
        "model_bytes": model_bytes(model)}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--no-reshard", action="store_true")
    a = ap.parse_args()
    version = subprocess.run(
        [os.path.join(a.build, "worker", "fsps-worker"), "--version"],
        capture_output=True, text=True, check=True).stdout.strip()
    print(json.dumps({"bench": "train", "worker": version,
                      "cores": os.cpu_count()}), flush=True)
    for model in a.models.split(";"):
        measure(a, model, not a.no_reshard)


if __name__ == "__main__":
    main()
