#!/usr/bin/python3
"""bench/serve_batch.py: fsps-serve's batch scoring beside plain PyTorch on
the same weights, the same inputs and the same batch size, in one run.

A 1-server, 1-worker fsps run trains the demo's MLP (784-512-256-10) for a
few steps on Fashion-MNIST and checkpoints it; fsps-export writes it as
safetensors. The Fashion-MNIST test images (pixel/255, float32), repeated
up to --rows rows, are written once to a raw .f32 file. Then, interleaved in
every repetition and for every --max-batch B:

- fsps-serve --checkpoint-dir --input rows.f32 --output a.csv --max-batch B
  (OPENBLAS_NUM_THREADS=2); its rate is its own final progress line's
  rows/s, timed from after the model is loaded to the last row written
  (reading, scoring and CSV formatting included; loading the model and the
  final fsync are not).
- plain PyTorch in a child process started once (torch.set_num_threads(2),
  OPENBLAS_NUM_THREADS=2, torch.no_grad(), the nn.Sequential loaded from the
  export, the same rows already in one tensor): per chunk of B rows
  net(x), softmax, argmax, and the same CSV lines written to a file
  (np.savetxt with the same "%.9g"): torch_samples_per_s. The same
  without writing is torch_nowrite_samples_per_s (fsps-serve still writes:
  the comparison least kind to fsps).

Both files are compared row by row: classes_equal and max_prob_diff.
Prints the BLAS torch loaded first and refuses a ratio unless it is
OpenBLAS; then one JSON line per B, medians and [min, max] over --reps,
with other_cores (what other processes on the machine took meanwhile).

Usage: bench/serve_batch.py [--build DIR] [--rows N] [--reps N]
                            [--max-batch 64,256,1024] [--steps N]
"""
import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "python"))
import benchlib  # noqa: E402

MODEL = [784, 512, 256, 10]
DATA = "/usr/share/datasets/fashion-mnist"
IMAGES = os.path.join(DATA, "t10k-images-idx3-ubyte.gz")
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]


# ---- the torch side (a child process: --role torch) ----

def torch_model(path):
    import torch
    import fsps.safetensors
    layers = []
    for i in range(len(MODEL) - 1):
        layers.append(torch.nn.Linear(MODEL[i], MODEL[i + 1]))
        if i < len(MODEL) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    net.load_state_dict(fsps.safetensors.load(path))
    return net.eval()


def torch_score(net, x, batch, out):
    """Scores every row of x in chunks of batch rows; writes the CSV lines
    fsps-serve writes to out (None: no writing). Returns seconds taken."""
    import numpy as np
    import torch
    k = MODEL[-1]
    fmt = ["%d", "%d"] + ["%.9g"] * k
    t0 = time.monotonic()
    f = open(out, "w") if out else None
    if f:
        f.write("index,class," + ",".join("p%d" % j for j in range(k)) + "\n")
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            p = torch.softmax(net(x[i:i + batch]), 1)
            c = torch.argmax(p, 1)
            if f:
                n = p.shape[0]
                rows = np.empty((n, k + 2), dtype=np.float64)
                rows[:, 0] = np.arange(i, i + n)
                rows[:, 1] = c.numpy()
                rows[:, 2:] = p.numpy()
                np.savetxt(f, rows, fmt=fmt, delimiter=",")
    if f:
        f.close()
    return time.monotonic() - t0


def torch_main(a):
    """Loads the model and the rows once, then scores on each command
    read from stdin ("B OUT|-") and answers {"seconds": s}."""
    import numpy as np
    import torch
    torch.set_num_threads(2)
    net = torch_model(a.model)
    x = torch.from_numpy(np.fromfile(a.rows_file, dtype="<f4").reshape(
        -1, MODEL[0]))
    torch_score(net, x[:4096], 256, None)  # warm-up, untimed
    libs = benchlib.blas_loaded()
    print(json.dumps({"blas": libs, "openblas_config":
                      openblas_config(libs), "rows": x.shape[0]}),
          flush=True)
    for line in sys.stdin:
        b, out = line.split()
        s = torch_score(net, x, int(b), None if out == "-" else out)
        print(json.dumps({"seconds": s}), flush=True)


def openblas_config(libs):
    import ctypes
    for lib in libs:
        try:
            f = ctypes.CDLL(lib).openblas_get_config
        except (OSError, AttributeError):
            continue
        f.restype = ctypes.c_char_p
        return "%s: %s" % (lib, f().decode())
    return None


class Torch:
    """The torch child, started once; score() times one pass."""

    def __init__(self, a, model, rows_file, env):
        # torch's OpenMP pool (set_num_threads(2)) spins between ops by
        # default, fighting OpenBLAS's own 2 threads for the 2 cores: at
        # batch >= 256 that cost torch up to 30x here. Passive waiting is
        # torch's best setting, so torch gets it.
        env = dict(env, OMP_WAIT_POLICY="PASSIVE")
        self.p = subprocess.Popen(
            DIE_WITH_PARENT + [sys.executable, os.path.abspath(__file__),
                               "--role", "torch", "--model", model,
                               "--rows-file", rows_file],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.hello = self.answer()

    def answer(self):
        line = self.p.stdout.readline()
        if not line:
            sys.exit("bench/serve_batch: the torch process failed")
        return json.loads(line)

    def score(self, batch, out):
        self.p.stdin.write("%d %s\n" % (batch, out or "-"))
        self.p.stdin.flush()
        return self.answer()["seconds"]

    def close(self):
        self.p.stdin.close()
        self.p.wait()


# ---- the model, the rows, fsps-serve ----

def train_and_export(a, tmp, env):
    """Trains --steps steps at S=1, W=1; the server's final checkpoint (on
    SIGTERM) is the model. Returns (checkpoint dir, safetensors file)."""
    ckpt = os.path.join(tmp, "ckpt")
    os.mkdir(ckpt)
    pf = os.path.join(tmp, "port")
    srv = subprocess.Popen(DIE_WITH_PARENT + [
        os.path.join(a.build, "server", "fsps-server"), "--listen",
        "127.0.0.1:0", "--index", "0", "--num-servers", "1", "--workers", "1",
        "--port-file", pf, "--log-level", "warn", "--checkpoint-dir", ckpt])
    try:
        while not os.path.exists(pf) or not os.path.getsize(pf):
            if srv.poll() is not None:
                sys.exit("bench/serve_batch: fsps-server did not start")
            time.sleep(0.02)
        with open(pf) as f:
            addr = "127.0.0.1:" + f.read().strip()
        w = subprocess.run(DIE_WITH_PARENT + [
            os.path.join(a.build, "worker", "fsps-worker"), "--servers",
            addr, "--model", "mlp:" + ",".join(map(str, MODEL)),
            "--max-steps", str(a.steps), "--no-eval", "--progress-secs",
            "1000"], env=env, capture_output=True, text=True)
        if w.returncode != 0:
            sys.exit("bench/serve_batch: fsps-worker failed: " + w.stderr)
    finally:
        benchlib.stop_servers([srv])
    if srv.returncode != 0:
        sys.exit("bench/serve_batch: fsps-server exited %d" % srv.returncode)
    st = os.path.join(tmp, "model.safetensors")
    e = subprocess.run([os.path.join(a.build, "serve", "fsps-export"),
                        "--checkpoint-dir", ckpt, "--output", st],
                       capture_output=True, text=True)
    if e.returncode != 0:
        sys.exit("bench/serve_batch: fsps-export failed: " + e.stderr)
    return ckpt, st


def write_rows(n, path):
    """The test images as pixel/255 float32 rows, repeated up to n rows."""
    import numpy as np
    with gzip.open(IMAGES) as f:
        px = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    x = px.astype(np.float32) / np.float32(255.0)
    reps = -(-n // x.shape[0])
    np.tile(x, (reps, 1))[:n].tofile(path)


def run_serve(a, ckpt, rows_file, batch, out, env):
    """fsps-serve's rows/s from its final progress line."""
    p = subprocess.run(DIE_WITH_PARENT + [
        os.path.join(a.build, "serve", "fsps-serve"), "--checkpoint-dir",
        ckpt, "--input", rows_file, "--input-format", "f32", "--output", out,
        "--max-batch", str(batch), "--progress-secs", "100000"],
        env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit("bench/serve_batch: fsps-serve failed: " + p.stderr)
    rates = [ln for ln in p.stderr.splitlines() if " rows/s" in ln]
    if not rates:
        sys.exit("bench/serve_batch: no rows/s line from fsps-serve: " +
                 p.stderr)
    return float(rates[-1].split(" rows/s")[0].rsplit(", ", 1)[1])


def compare(fsps_csv, torch_csv, n):
    """(classes equal on every row, max |p difference|) of two CSVs."""
    import numpy as np
    f = np.loadtxt(fsps_csv, delimiter=",", skiprows=1, ndmin=2)
    t = np.loadtxt(torch_csv, delimiter=",", skiprows=1, ndmin=2)
    if f.shape != (n, MODEL[-1] + 2) or t.shape != f.shape:
        return False, float("inf")
    same = bool((f[:, :2] == t[:, :2]).all() and
                (f[:, 0] == np.arange(n)).all())
    return same, float(np.abs(f[:, 2:] - t[:, 2:]).max())


# ---- the run ----

def one(a, ckpt, torch, rows_file, batch, tmp, env):
    fcsv, tcsv = os.path.join(tmp, "fsps.csv"), os.path.join(tmp, "torch.csv")
    rate, _, _, other_f = benchlib.timed(
        lambda: run_serve(a, ckpt, rows_file, batch, fcsv, env))
    secs, _, _, other_t = benchlib.timed(
        lambda: torch.score(batch, tcsv), [torch.p.pid])
    secs_nw, _, _, other_n = benchlib.timed(
        lambda: torch.score(batch, None), [torch.p.pid])
    same, diff = compare(fcsv, tcsv, a.rows)
    return {"fsps": rate, "torch": a.rows / secs, "torch_nw": a.rows / secs_nw,
            "same": same, "diff": diff,
            "other": max(other_f, other_t, other_n)}


def spread(values, digits=0):
    m = statistics.median(values)
    return round(m, digits), [round(min(values), digits),
                              round(max(values), digits)]


def report(a, batch, reps):
    line = {"bench": "serve", "mode": "batch", "model": "mlp:" +
            ",".join(map(str, MODEL)), "max_batch": batch, "rows": a.rows,
            "reps": len(reps)}
    for key, name, d in (("fsps", "samples_per_s", 0),
                         ("torch", "torch_samples_per_s", 0),
                         ("torch_nw", "torch_nowrite_samples_per_s", 0)):
        line[name], line[name + "_range"] = spread([r[key] for r in reps], d)
    line["ratio"], line["ratio_range"] = spread(
        [r["fsps"] / r["torch"] for r in reps], 3)
    line["ratio_vs_nowrite"], line["ratio_vs_nowrite_range"] = spread(
        [r["fsps"] / r["torch_nw"] for r in reps], 3)
    line["classes_equal"] = all(r["same"] for r in reps)
    line["max_prob_diff"] = max(r["diff"] for r in reps)
    line["other_cores"], line["other_cores_range"] = spread(
        [r["other"] for r in reps], 2)
    line["goal"] = 1.0
    print(json.dumps(line), flush=True)


def parse():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--build", default=os.path.join(HERE, "..", "build"))
    p.add_argument("--rows", type=int, default=10000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--max-batch", default="64,256,1024")
    p.add_argument("--steps", type=int, default=50,
                   help="training steps of the model (its values do not "
                   "affect speed)")
    p.add_argument("--role", default="bench", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--rows-file", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.role == "bench":
        a.batches = [int(b) for b in a.max_batch.split(",")]
        if a.rows < 1 or a.reps < 1 or a.steps < 1 or \
                min(a.batches) < 1:
            sys.exit("bench/serve_batch: --rows, --reps, --steps and "
                     "--max-batch must be >= 1")
    return a


def main():
    a = parse()
    if a.role == "torch":
        return torch_main(a)
    # fsps.safetensors imports the fsps package, which loads libfsps.
    env = dict(os.environ, OPENBLAS_NUM_THREADS="2", FSPS_LIBRARY=os.path.join(
        os.path.abspath(a.build), "client", "libfsps.so.0"))
    with tempfile.TemporaryDirectory(prefix="serve_batch-") as tmp:
        ckpt, st = train_and_export(a, tmp, env)
        rows_file = os.path.join(tmp, "rows.f32")
        write_rows(a.rows, rows_file)
        os.sync()  # no writeback of the rows file during the timed runs
        torch = Torch(a, st, rows_file, env)
        try:
            h = torch.hello
            print(json.dumps({"bench": "serve", "mode": "batch_header",
                              "cores": os.cpu_count(), "torch_blas":
                              h["blas"], "torch_openblas_config":
                              h["openblas_config"]}), flush=True)
            if not any("openblas" in lib for lib in h["blas"]):
                sys.exit("bench/serve_batch: torch does not use OpenBLAS "
                         "(%s): no ratio reported" % h["blas"])
            reps = {b: [] for b in a.batches}
            for _ in range(a.reps):
                for b in a.batches:
                    reps[b].append(one(a, ckpt, torch, rows_file, b, tmp,
                                       env))
            for b in a.batches:
                report(a, b, reps[b])
        finally:
            torch.close()


if __name__ == "__main__":
    main()
