#!/usr/bin/python3
"""bench/vs_torch: fsps-worker beside plain PyTorch, in one run.

Trains the demo's model (784-512-256-10, ReLU, as scripts/demo.sh) on
Fashion-MNIST with Adam (lr 0.001, constant) at a global batch of 256:

  torch  one process, torch.set_num_threads(2) (and OpenBLAS on 2
         threads), nn.Sequential of Linear and ReLU, the whole data set
         loaded into one tensor up front (no DataLoader: each step indexes
         its 256 rows out of that tensor, the same gather fsps-worker does),
         torch.optim.Adam's defaults;
  S1W1   1 fsps-server, 1 fsps-worker on 2 OpenBLAS threads, batch 256;
  S2W2   2 fsps-servers, 2 fsps-workers on 1 OpenBLAS thread each, batch
         128 per worker (the same global batch).

Same data: inputs normalised as fsps-worker --normalize does, and the
samples of each step are the ones fsps-worker's sampler picks (its
splitmix64 Fisher-Yates shuffle, re-implemented here), so every run sees
the same batches in the same order. Same init scheme: weights
kaiming-uniform for ReLU (fsps's he_uniform), biases uniform in
+-1/sqrt(fan_in) (nn.Linear's); the values themselves differ.

Rates are samples/s after each process's first step (fsps-worker's
steady_samples_per_s, summed over workers; torch timed the same way), so
start-up, data loading and evaluation are outside them. After the run
each side's final parameters (fsps-worker --dump, torch's tensors) are
scored on the 10 000 test images by the same numpy forward pass, so a
fast run that learned nothing shows as such.

Each repetition runs torch, then S1W1, then S2W2, back to back; each ratio
is fsps / torch within one repetition. With --reps N each line gives the
median and [min, max]. other_cores is the most cores other processes took
during any of the repetition's runs (a busy machine skews the figures).

Prints first the BLAS torch loaded and OpenBLAS's configuration (a ratio
is refused unless torch runs on OpenBLAS: Debian's reference BLAS is ~30x
slower), then one JSON line per config:
  {"bench":"vs_torch","model":...,"torch_samples_per_s":...,
   "fsps_samples_per_s":...,"ratio":...,"config":"S1W1",...}

Usage: bench/vs_torch.py [--build DIR] [--epochs 1] [--reps 1]
                         [--steps N] [--configs S1W1,S2W2]
"""
import argparse
import ctypes
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import benchlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = "mlp:784,512,256,10"
WIDTHS = [784, 512, 256, 10]
BATCH = 256
MEAN, STD = 0.2860, 0.3530  # fsps-worker --normalize
CONFIGS = {"S1W1": (1, 1, 2), "S2W2": (2, 2, 1)}  # servers, workers, threads
GOALS = {"S1W1": 2.0, "S2W2": 1.5}
M64 = (1 << 64) - 1


# ---- fsps-worker's data: IDX files, normalisation, sampler ----

def load_idx(data_dir, split):
    """Images (n x 784 float32, normalised as fsps-worker --normalize)
    and labels (n int64) of split "train" or "t10k"."""
    import numpy as np
    with gzip.open(os.path.join(data_dir, split + "-images-idx3-ubyte.gz")) as f:
        px = np.frombuffer(f.read(), np.uint8, offset=16)
    with gzip.open(os.path.join(data_dir, split + "-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    inv = np.float32(1.0) / np.float32(STD)
    mul = np.float32(1.0 / 255.0) * inv
    add = (np.float32(0.0) - np.float32(MEAN)) * inv
    x = px.reshape(len(y), 784).astype(np.float32) * mul + add
    return x, y


def mix64(z):
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


def epoch_order(n, seed, epoch):
    """worker/data.c's worker_data_sampler_epoch: the permutation of the
    n training samples every rank draws for this epoch."""
    st = mix64(seed ^ mix64(0xE90C0000 + epoch))
    perm = list(range(n))
    for i in range(n, 1, -1):
        while True:  # Lemire's bounded integer, as data.c's bounded()
            st = (st + 0x9E3779B97F4A7C15) & M64
            m = (mix64(st) >> 32) * i
            if (m & 0xFFFFFFFF) >= (-i & 0xFFFFFFFF) % i:
                break
        j = m >> 32
        perm[i - 1], perm[j] = perm[j], perm[i - 1]
    return perm


def test_accuracy(params, x, y):
    """Share of the test samples params (one flat float32 vector per layer:
    weight [out, in] row-major, then bias) classify right."""
    import numpy as np
    h = x
    for l, p in enumerate(params):
        i, o = WIDTHS[l], WIDTHS[l + 1]
        h = h @ p[:i * o].reshape(o, i).T + p[i * o:]
        if l + 1 < len(params):
            h = np.maximum(h, 0)
    return float((h.argmax(1) == y).mean())


def read_dump(path):
    import numpy as np
    flat = np.fromfile(path, np.float32)
    out, at = [], 0
    for l in range(len(WIDTHS) - 1):
        n = WIDTHS[l] * WIDTHS[l + 1] + WIDTHS[l + 1]
        out.append(flat[at:at + n])
        at += n
    if at != len(flat):
        sys.exit("bench/vs_torch: %s holds %d floats, not %d" %
                 (path, len(flat), at))
    return out


# ---- the torch side (a child process: --role torch) ----

def openblas_config(libs):
    """openblas_get_config() of the first mapped library that has it."""
    for lib in libs:
        try:
            f = ctypes.CDLL(lib).openblas_get_config
        except (OSError, AttributeError):
            continue
        f.restype = ctypes.c_char_p
        return "%s: %s" % (lib, f().decode())
    return None


def torch_model(seed):
    import torch
    torch.manual_seed(seed)
    layers = []
    for l in range(len(WIDTHS) - 1):
        lin = torch.nn.Linear(WIDTHS[l], WIDTHS[l + 1])
        torch.nn.init.kaiming_uniform_(lin.weight, nonlinearity="relu")
        b = 1.0 / WIDTHS[l] ** 0.5
        torch.nn.init.uniform_(lin.bias, -b, b)
        layers += [lin, torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1])


def torch_main(a):
    import torch
    torch.set_num_threads(2)
    xs, ys = load_idx(a.data_dir, "train")
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    per_epoch = len(ys) // BATCH
    total = per_epoch * a.epochs
    if a.steps:
        total = min(total, a.steps)
    orders = [torch.tensor(epoch_order(len(ys), a.seed, e))
              for e in range((total + per_epoch - 1) // per_epoch)]
    model = torch_model(a.seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    t0 = t1 = time.perf_counter()
    for g in range(total):
        e, k = divmod(g, per_epoch)
        idx = orders[e][k * BATCH:(k + 1) * BATCH]
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        if g == 0:
            t1 = time.perf_counter()
    end = time.perf_counter()
    flat = [torch.cat([m.weight.detach().reshape(-1), m.bias.detach()])
            for m in model if isinstance(m, torch.nn.Linear)]
    torch.cat(flat).numpy().tofile(a.dump)
    libs = benchlib.blas_loaded()
    steady = BATCH * (total - 1) / (end - t1) if total > 1 else \
        BATCH / (end - t0)
    print(json.dumps({"samples_per_s": steady, "steps": total,
                      "final_loss": float(loss), "blas": libs,
                      "openblas_config": openblas_config(libs),
                      "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


def run_torch(a, dump):
    env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2")
    cmd = [sys.executable, os.path.abspath(__file__), "--role", "torch",
           "--epochs", str(a.epochs), "--steps", str(a.steps), "--seed",
           str(a.seed), "--data-dir", a.data_dir, "--dump", dump]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("bench/vs_torch: the torch run failed:\n" + p.stderr)
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---- the fsps side ----

def run_fsps(a, config, servers, dump):
    S, W, threads = CONFIGS[config]
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads))
    flags = ["--servers", servers, "--world", str(W), "--model", MODEL,
             "--batch", str(BATCH // W), "--epochs", str(a.epochs),
             "--optimizer", "adam", "--lr", "0.001", "--seed", str(a.seed),
             "--normalize", "--no-eval", "--progress-secs", "1000000",
             "--data-dir", a.data_dir]
    if a.steps:
        flags += ["--max-steps", str(a.steps)]
    procs = [subprocess.Popen(
        [os.path.join(a.build, "worker", "fsps-worker"), "--rank", str(r)] +
        flags + (["--dump", dump] if r == 0 else []),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for r in range(W)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            sys.exit("bench/vs_torch: fsps-worker failed: " + stderr)
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def fsps_once(a, config, tmp, dump):
    S, W, _ = CONFIGS[config]
    procs, servers = benchlib.start_servers(a.build, tmp, S, W,
                                            "bench/vs_torch")
    try:
        out, wcpu, scpu, other = benchlib.timed(
            lambda: run_fsps(a, config, servers, dump),
            [p.pid for p in procs])
    finally:
        benchlib.stop_servers(procs)
    steps = out[0]["steps"]
    return {"sps": sum(w["steady_samples_per_s"] for w in out),
            "steps": steps, "other": other,
            "cpu_workers": wcpu / steps, "cpu_servers": scpu / steps,
            "loss": out[0]["final_loss"]}


def one_rep(a, configs, test):
    """torch, then each config, back to back."""
    with tempfile.TemporaryDirectory() as tmp:
        dump = os.path.join(tmp, "torch.f32")
        t, tcpu, _, tother = benchlib.timed(lambda: run_torch(a, dump))
        if not any("openblas" in lib for lib in t["blas"]):
            sys.exit("bench/vs_torch: torch did not load OpenBLAS (%s): "
                     "no ratio reported" % t["blas"])
        t["acc"] = test_accuracy(read_dump(dump), *test)
        t["cpu"], t["other"] = tcpu / t["steps"], tother
        rep = {"torch": t}
        for c in configs:
            dump = os.path.join(tmp, c + ".f32")
            os.mkdir(os.path.join(tmp, c))  # fresh port files
            rep[c] = fsps_once(a, c, os.path.join(tmp, c), dump)
            rep[c]["acc"] = test_accuracy(read_dump(dump), *test)
    return rep


def spread(values, digits):
    """The median, and [min, max] when there are several values."""
    med = round(statistics.median(values), digits)
    rng = [round(min(values), digits), round(max(values), digits)]
    return med, (rng if len(values) > 1 else None)


def report(a, config, reps):
    S, W, threads = CONFIGS[config]
    line = {"bench": "vs_torch", "model": MODEL, "config": config,
            "servers": S, "workers": W, "blas_threads_per_worker": threads,
            "global_batch": BATCH, "steps": reps[0][config]["steps"],
            "reps": len(reps)}
    series = {
        "torch_samples_per_s": ([r["torch"]["samples_per_s"] for r in reps],
                                1),
        "fsps_samples_per_s": ([r[config]["sps"] for r in reps], 1),
        "ratio": ([r[config]["sps"] / r["torch"]["samples_per_s"]
                   for r in reps], 3),
        "torch_test_accuracy": ([r["torch"]["acc"] for r in reps], 4),
        "fsps_test_accuracy": ([r[config]["acc"] for r in reps], 4),
        "other_cores": ([max(r["torch"]["other"], r[config]["other"])
                         for r in reps], 2)}
    for key, (values, digits) in series.items():
        line[key], rng = spread(values, digits)
        if rng is not None:
            line[key + "_range"] = rng
    line["cpu_s_per_step"] = {
        "torch": spread([r["torch"]["cpu"] for r in reps], 4)[0],
        "fsps_workers": spread([r[config]["cpu_workers"] for r in reps], 4)[0],
        "fsps_servers": spread([r[config]["cpu_servers"] for r in reps], 4)[0]}
    line["goal"] = GOALS[config]
    print(json.dumps(line), flush=True)


def header(a, env):
    worker = os.path.join(a.build, "worker", "fsps-worker")
    version = subprocess.run([worker, "--version"], capture_output=True,
                             text=True, check=True).stdout.strip()
    ldd = subprocess.run(["ldd", worker], capture_output=True,
                         text=True).stdout
    wlibs = [w for w in ldd.split() if "blas" in w and w.startswith("/")]
    probe = json.loads(benchlib.run_blas_probe(env).replace("'", '"'))
    print(json.dumps({"bench": "vs_torch", "worker": version,
                      "cores": os.cpu_count(), "torch_blas": probe,
                      "torch_openblas_config": openblas_config(probe),
                      "worker_blas": wlibs,
                      "worker_openblas_config": openblas_config(wlibs)}),
          flush=True)
    if not any("openblas" in lib for lib in probe):
        sys.exit("bench/vs_torch: torch does not use OpenBLAS (%s): no ratio "
                 "reported" % probe)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0,
                    help="stop after N global steps (0: whole epochs)")
    ap.add_argument("--reps", type=int, default=1,
                    help="repetitions (median and range)")
    ap.add_argument("--configs", default="S1W1,S2W2")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--role", choices=("torch",), help=argparse.SUPPRESS)
    ap.add_argument("--dump", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.role:
        return torch_main(a)
    configs = a.configs.split(",")
    for c in configs:
        if c not in CONFIGS:
            sys.exit("bench/vs_torch: unknown config %r (S1W1, S2W2)" % c)
    if a.epochs < 1 or a.reps < 1 or a.steps < 0:
        sys.exit("bench/vs_torch: --epochs and --reps must be >= 1, "
                 "--steps >= 0")
    a.build = os.path.abspath(a.build)
    header(a, dict(os.environ, OMP_NUM_THREADS="2",
                   OPENBLAS_NUM_THREADS="2"))
    test = load_idx(a.data_dir, "t10k")
    reps = [one_rep(a, configs, test) for _ in range(a.reps)]
    for c in configs:
        report(a, c, reps)


if __name__ == "__main__":
    main()
