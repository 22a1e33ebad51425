#!/usr/bin/python3
"""fsps.torch beside torch DistributedDataParallel, in one run.

For each model (the Fashion-MNIST CNN of examples/torch_fashion_cnn.py,
and an MLP 784-2048-2048-10), the same steps of the same data are trained
by DDP (gloo, 2 worker processes, one torch thread each, Adam run on every
rank) and by fsps.torch (W = 2 worker processes, one torch thread each,
S = 2 fsps-server processes, Adam run on the servers), all on this
machine's cores. Prints one JSON line per model:

  {"bench":"torch_ddp","model":...,"fsps_samples_per_s":...,
   "ddp_samples_per_s":...,"ratio":...,"fsps_peak_rss_bytes":...,
   "ddp_peak_rss_bytes":...}

samples_per_s counts both workers' samples over the slower worker's time
for the measured steps (after warm-up); peak RSS is the larger of the two
workers' (ru_maxrss); fsps's servers are reported apart. The BLAS torch
loaded is printed first: it must be OpenBLAS (Debian's reference libblas
is ~30x slower and would make any comparison meaningless).

Usage: bench/torch_ddp.py [--build DIR] [--steps N] [--models cnn,mlp]
"""
import argparse
import json
import os
import re
import resource
import socket
import subprocess
import sys
import tempfile
import time

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"cnn": 64, "mlp": 256}  # batch per worker


def build_model(name):
    import torch
    torch.manual_seed(0)
    if name == "cnn":
        sys.path.insert(0, os.path.join(ROOT, "examples"))
        from torch_fashion_cnn import CNN
        return CNN()
    return torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 2048), torch.nn.ReLU(),
        torch.nn.Linear(2048, 2048), torch.nn.ReLU(),
        torch.nn.Linear(2048, 10))


def batches(batch, rank):
    """Eight fixed batches of Fashion-MNIST-shaped data for this rank."""
    import torch
    g = torch.Generator().manual_seed(100 + rank)
    return [(torch.randn(batch, 1, 28, 28, generator=g),
             torch.randint(0, 10, (batch,), generator=g)) for _ in range(8)]


def timed_steps(step, steps, warmup):
    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + steps):
        step(i)
    return time.perf_counter() - t0


def ddp_worker(args):
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=args.init, rank=args.rank,
                            world_size=2)
    model = torch.nn.parallel.DistributedDataParallel(build_model(args.model))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    data = batches(MODELS[args.model], args.rank)

    def step(i):
        x, y = data[i % len(data)]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    secs = timed_steps(step, args.steps, args.warmup)
    dist.destroy_process_group()
    return secs


def fsps_worker(args):
    import torch
    import fsps.torch
    torch.set_num_threads(1)
    model = fsps.torch.shard(build_model(args.model), args.servers,
                             rank=args.rank, world=2,
                             optimizer=("adam", {"lr": 1e-3}))
    data = batches(MODELS[args.model], args.rank)

    def step(i):
        x, y = data[i % len(data)]
        torch.nn.functional.cross_entropy(model(x), y).backward()
        model.step()
    secs = timed_steps(step, args.steps, args.warmup)
    model.close()
    return secs


def worker_main(args):
    secs = (ddp_worker if args.role == "ddp" else fsps_worker)(args)
    print(json.dumps({"seconds": secs, "blas": benchlib.blas_loaded(),
                      "peak_rss_bytes": resource.getrusage(
                          resource.RUSAGE_SELF).ru_maxrss * 1024}))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(role, model, steps, warmup, env, extra):
    procs = [subprocess.Popen(
        [sys.executable, __file__, "--role", role, "--model", model,
         "--rank", str(r), "--steps", str(steps), "--warmup", str(warmup)]
        + extra, stdout=subprocess.PIPE, env=env) for r in range(2)]
    outs = [json.loads(p.communicate()[0].decode().strip().splitlines()[-1])
            for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit("a %s worker failed" % role)
    return outs


class Servers:
    """S = 2 fsps-servers for W = 2 workers on loopback."""

    def __init__(self, build):
        self.tmp = tempfile.TemporaryDirectory()
        self.procs, self.addr = benchlib.start_servers(
            build, self.tmp.name, 2, 2, "bench/torch_ddp")

    def peak_rss(self):
        peaks = []
        for p in self.procs:
            with open("/proc/%d/status" % p.pid) as f:
                peaks.append(int(re.search(r"VmHWM:\s+(\d+)", f.read())
                                 .group(1)) * 1024)
        return peaks

    def stop(self):
        benchlib.stop_servers(self.procs)
        self.tmp.cleanup()


def bench_model(model, args, env):
    ddp = run_workers("ddp", model, args.steps, args.warmup, env,
                      ["--init", "tcp://127.0.0.1:%d" % free_port()])
    servers = Servers(args.build)
    try:
        ours = run_workers("fsps", model, args.steps, args.warmup, env,
                           ["--servers", servers.addr])
        server_rss = servers.peak_rss()
    finally:
        servers.stop()
    for out in ddp + ours:
        if not any("openblas" in lib for lib in out["blas"]):
            raise SystemExit("torch did not load OpenBLAS: %s" % out["blas"])
    samples = 2 * MODELS[model] * args.steps
    f = samples / max(o["seconds"] for o in ours)
    d = samples / max(o["seconds"] for o in ddp)
    print(json.dumps({
        "bench": "torch_ddp", "model": model,
        "batch_per_worker": MODELS[model], "steps": args.steps,
        "fsps_samples_per_s": round(f, 1), "ddp_samples_per_s": round(d, 1),
        "ratio": round(f / d, 3),
        "fsps_peak_rss_bytes": max(o["peak_rss_bytes"] for o in ours),
        "ddp_peak_rss_bytes": max(o["peak_rss_bytes"] for o in ddp),
        "fsps_server_peak_rss_bytes": max(server_rss)}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"),
                    help="the build folder (fsps-server, libfsps.so)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--models", default="cnn,mlp")
    ap.add_argument("--role", choices=("ddp", "fsps"), help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--init", help=argparse.SUPPRESS)
    ap.add_argument("--servers", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        return worker_main(args)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               FSPS_LIBRARY=os.path.join(os.path.abspath(args.build),
                                         "client", "libfsps.so.0"),
               PYTHONPATH=os.path.join(ROOT, "python"))
    print(json.dumps({"bench": "torch_ddp", "cores": os.cpu_count(),
                      "torch_blas": benchlib.run_blas_probe(env)}), flush=True)
    for model in args.models.split(","):
        if model not in MODELS:
            raise SystemExit("unknown model %r (cnn, mlp)" % model)
        bench_model(model, args, env)


if __name__ == "__main__":
    main()
