#!/usr/bin/python3
"""bench/train: training throughput of real fsps-server and fsps-worker
processes on loopback, beside the limit measured in the same run: the same
workers' compute alone (--local: the parameters are a local copy, nothing
crosses the network), run side by side as many as in the real run.

Each repetition runs the local workers, then the real cluster, back to
back, so the two see the same machine; the overlap is their ratio. Other
processes on the machine (builds, another benchmark) skew either run: a
repetition during which they took more than --max-other cores (0.25) is
run again, up to --retries times (3), and each line reports how many
cores they took in the repetitions kept (other_cores) and how many were
run again (rerun), so a figure taken on a busy machine shows as such.

Rates are taken after each worker's first step, which also faults in
every buffer it allocates (a one-time cost that would weigh on a short run
and not on training); overlap_all_steps includes it.

For each model prints one JSON object per line, with the median and the
range [min, max] over the repetitions where there are several:
  samples_per_s               both workers together, through the servers
  compute_only_samples_per_s  the same workers with --local
  overlap                     samples_per_s / compute_only_samples_per_s,
                              per repetition
  overlap_all_steps           the same with the first step included
  cpu_s_per_step              CPU seconds per step (workers' start-up
                              included): workers and servers of the real
                              run, workers of the local run
  cpu_overlap                 local / (workers + servers) of those: the
                              overlap if the cores were busy all along in
                              both runs, which other load skews less
  other_cores                 cores used by other processes meanwhile
  moved_mb_per_step           per worker: MB of layers gathered and of
                              gradients pushed per step
  peak_rss_bytes              the largest worker's peak resident set
  peak_buffer_bytes           the most layer and gradient buffers it held
  model_bytes                 the model's parameters

Each worker runs OpenBLAS on cores / workers threads (--blas-threads; 0
leaves OpenBLAS its default, one per core, which oversubscribes the cores
and spins in sched_yield while a worker waits).

An entry of --models may set its own batch, --piece-mb (the workers
gather, compute and push layers above that size in row blocks, so that
they never hold a whole layer) and --wire-dtype (wire=bf16: parameters
gathered and gradients pushed as bfloat16, half the bytes; the local run,
which moves nothing, is the same): "mlp:784,4096,10 batch=1024
piece_mb=2 wire=bf16". The default list runs the demo's and the wide
model in bf16 right after fp32, so the two print side by side.

Usage: bench/train.py [--build build] [--steps 30] [--batch 256]
                      [--repeat 1] [--models "mlp:... [batch=B]
                      [piece_mb=P] [wire=bf16];..."] [--piece-mb P]
                      [--wire-dtype fp32|bf16]
                      [--no-reshard] [--blas-threads N]
                      [--max-other 0.25] [--retries 3]
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

WIDE = "mlp:784,4096,4096,4096,10"                     # the example
DEFAULT_MODELS = ";".join([
    "mlp:784,512,256,10",                              # the demo's model
    "mlp:784,512,256,10 wire=bf16",
    WIDE,
    WIDE + " wire=bf16",           # half the bytes on the wire
    WIDE + " batch=1024",          # compute enough to hide the network
    WIDE + " piece_mb=1",          # never a whole layer: memory bound
    WIDE + " piece_mb=2 batch=128",
    "mlp:784," + ",".join(["4096"] * 9) + ",10",       # deep enough to shard
])

TICK = os.sysconf("SC_CLK_TCK")


def model_bytes(desc):
    w = [int(x) for x in desc.split(":")[1].split(",")]
    return 4 * sum(w[i] * w[i + 1] + w[i + 1] for i in range(len(w) - 1))


def proc_cpu(pid):
    """CPU seconds (user + system) process pid has used so far."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_busy():
    """CPU seconds every process on the machine has used so far."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (sum(v[:8]) - v[3] - v[4]) / TICK  # all but idle and iowait


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


def run_workers(a, flags):
    """Runs the workers to completion; returns their JSON summaries."""
    env = dict(os.environ)
    if a.blas_threads:
        env["OPENBLAS_NUM_THREADS"] = str(a.blas_threads)
    procs = [subprocess.Popen(
        [os.path.join(a.build, "worker", "fsps-worker"), "--rank", str(r),
         "--world", str(a.workers), "--progress-secs", "1000000",
         "--no-eval"] + flags,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for r in range(a.workers)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate()
        if p.returncode != 0:
            sys.exit("bench/train: worker failed: " + stderr)
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def timed_workers(a, flags, extra_pids=()):
    """run_workers, plus the CPU seconds the workers (reaped children) and
    extra_pids used, and the cores everything else used meanwhile."""
    busy0, wall0 = machine_busy(), time.monotonic()
    extra0 = [proc_cpu(p) for p in extra_pids]
    ru0 = os.times()
    out = run_workers(a, flags)
    ru1 = os.times()
    extra = sum(proc_cpu(p) - c for p, c in zip(extra_pids, extra0))
    wall, busy = time.monotonic() - wall0, machine_busy() - busy0
    workers = (ru1.children_user - ru0.children_user +
               ru1.children_system - ru0.children_system)
    other = max(0.0, busy - workers - extra) / wall
    return out, workers, extra, other


def once(a, flags):
    """One repetition: the local workers, then the real cluster."""
    local, lcpu, _, lother = timed_workers(a, flags + ["--local"])
    with tempfile.TemporaryDirectory() as tmp:
        procs, servers = start_servers(a.build, tmp, a.servers, a.workers)
        try:
            real, wcpu, scpu, rother = timed_workers(
                a, flags + ["--servers", servers], [p.pid for p in procs])
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait()
    # Older workers report only the whole run's rate.
    sps = sum(w.get("steady_samples_per_s", w["samples_per_s"]) for w in real)
    lim = sum(w.get("steady_samples_per_s", w["samples_per_s"])
              for w in local)
    steps = a.steps
    return {
        "samples_per_s": sps, "compute_only_samples_per_s": lim,
        "overlap": sps / lim,
        "overlap_all_steps": sum(w["samples_per_s"] for w in real) /
        sum(w["samples_per_s"] for w in local),
        "comm_wait_fraction": max(w["comm_wait_fraction"] for w in real),
        "cpu_workers": wcpu / steps, "cpu_servers": scpu / steps,
        "cpu_local": lcpu / steps, "other_cores": max(lother, rother),
        "cpu_overlap": lcpu / (wcpu + scpu),
        "gathered_mb": max(w.get("gathered_bytes", 0) for w in real) /
        1e6 / steps,
        "pushed_mb": max(w.get("pushed_bytes", 0) for w in real) / 1e6 / steps,
        "peak_rss_bytes": max(w["peak_rss_bytes"] for w in real),
        "peak_buffer_bytes": max(w["peak_buffer_bytes"] for w in real)}


def summary(values, digits):
    """The median, and [min, max] when there are several values."""
    med = round(statistics.median(values), digits)
    if len(values) == 1:
        return med, None
    return med, [round(min(values), digits), round(max(values), digits)]


def parse_entry(a, entry):
    """An entry of --models: MODEL [batch=B] [piece_mb=P] [wire=fp32|bf16];
    returns (model, batch, piece_mb, wire)."""
    words = entry.split()
    opts = {"batch": a.batch, "piece_mb": a.piece_mb, "wire": a.wire_dtype}
    for w in words[1:]:
        key, _, value = w.partition("=")
        if key not in opts or not value or \
                (key == "wire" and value not in ("fp32", "bf16")):
            sys.exit("bench/train: bad setting %r in %r (batch=B, "
                     "piece_mb=P, wire=fp32|bf16)" % (w, entry))
        opts[key] = type(opts[key])(value)
    return words[0], opts["batch"], opts["piece_mb"], opts["wire"]


def measure(a, entry, reshard):
    model, batch, piece_mb, wire = parse_entry(a, entry)
    flags = ["--model", model, "--synthetic", str(batch * a.workers * 8),
             "--batch", str(batch), "--max-steps", str(a.steps),
             "--epochs", "1000", "--optimizer", "sgd", "--lr", "0.001",
             "--prefetch", "1", "--piece-mb", str(piece_mb),
             "--wire-dtype", wire]
    if reshard:
        flags.append("--reshard-after-forward")
    runs, rerun = [], 0
    for _ in range(a.repeat):
        r = once(a, flags)
        for _ in range(a.retries):
            if r["other_cores"] <= a.max_other:
                break
            rerun += 1
            r = once(a, flags)
        runs.append(r)
    line = {"bench": "train", "model": model, "servers": a.servers,
            "workers": a.workers, "batch": batch, "steps": a.steps,
            "repeat": a.repeat, "rerun": rerun,
            "reshard_after_forward": reshard, "piece_mb": piece_mb,
            "wire_dtype": wire, "blas_threads": a.blas_threads or None}
    for key, digits in (("samples_per_s", 1),
                        ("compute_only_samples_per_s", 1), ("overlap", 3),
                        ("overlap_all_steps", 3),
                        ("cpu_overlap", 3), ("comm_wait_fraction", 3),
                        ("other_cores", 2)):
        line[key], rng = summary([r[key] for r in runs], digits)
        if rng is not None:
            line[key + "_range"] = rng
    line["cpu_s_per_step"] = {
        k: summary([r["cpu_" + k] for r in runs], 3)[0]
        for k in ("workers", "servers", "local")}
    line["moved_mb_per_step"] = {
        k: summary([r[k + "_mb"] for r in runs], 1)[0]
        for k in ("gathered", "pushed")}
    line["peak_rss_bytes"] = max(r["peak_rss_bytes"] for r in runs)
    line["peak_buffer_bytes"] = max(r["peak_buffer_bytes"] for r in runs)
    line["model_bytes"] = model_bytes(model)
    print(json.dumps(line), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1,
                    help="repetitions per model (median and range)")
    ap.add_argument("--max-other", type=float, default=0.25,
                    help="cores other processes may take during a "
                         "repetition before it is run again")
    ap.add_argument("--retries", type=int, default=3)
    ap.add_argument("--models", default=DEFAULT_MODELS)
    ap.add_argument("--no-reshard", action="store_true")
    ap.add_argument("--piece-mb", type=float, default=0.0,
                    help="the workers' --piece-mb where an entry of "
                         "--models sets none (0: whole layers)")
    ap.add_argument("--wire-dtype", choices=("fp32", "bf16"),
                    default="fp32",
                    help="the workers' --wire-dtype where an entry of "
                         "--models sets none (wire=)")
    ap.add_argument("--blas-threads", type=int, default=-1,
                    help="OPENBLAS_NUM_THREADS for the workers (default: "
                         "cores / workers; 0: OpenBLAS's own choice)")
    a = ap.parse_args()
    if a.blas_threads < 0:
        a.blas_threads = max(1, (os.cpu_count() or 1) // a.workers)
    version = subprocess.run(
        [os.path.join(a.build, "worker", "fsps-worker"), "--version"],
        capture_output=True, text=True, check=True).stdout.strip()
    print(json.dumps({"bench": "train", "worker": version,
                      "cores": os.cpu_count()}), flush=True)
    for model in a.models.split(";"):
        measure(a, model, not a.no_reshard)


if __name__ == "__main__":
    main()
