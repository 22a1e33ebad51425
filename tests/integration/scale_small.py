#!/usr/bin/python3
"""A small bench/scale sweep (W in {1, 2}, S in {1, 2}, 3 steps) on the
emulated cluster network: every line has its fields, the aggregate
throughput at W = 2 grows from S = 1 to S = 2 where the servers' links are
the bottleneck (the two points measured in the same run, with a generous
margin: 1.3x where the links allow 2x), and no namespace or process of the
run is left behind, also when the run is stopped with SIGTERM mid-sweep.

Exits 77 (ctest's skip) when network namespaces cannot be made here (not
root). Usage: scale_small.py --build DIR
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
RUN = os.path.join(ROOT, "bench", "scale", "run")
SKIP = 77
POINT_KEYS = {
    "bench": str, "workers": int, "servers": int, "link_gbit": float,
    "wire_dtype": str, "step_seconds": float,
    "throughput_bytes_per_s": int, "predicted_step_seconds": float,
    "gathered_bytes_per_s": int, "pushed_bytes_per_s": int,
    "link_util": dict, "idle_fraction": list, "cpu_cores": dict,
    "model_error": float, "off_model": bool, "limit": str}


def tagged_pids(tag):
    """Pids of processes whose environment holds FSPS_SCALE_TEST=tag."""
    found = []
    needle = ("FSPS_SCALE_TEST=%s" % tag).encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/environ" % pid, "rb") as f:
                if needle in f.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            continue
    return found


def namespaces(pid):
    out = subprocess.run(["ip", "netns", "list"], capture_output=True,
                         text=True).stdout
    pre = "fsps-scale-%d-" % pid
    return [x.split()[0] for x in out.splitlines() if x.startswith(pre)]


def check_left(p, tag, what):
    left = namespaces(p.pid)
    if left:
        sys.exit("%s: namespaces left behind: %s" % (what, left))
    deadline = time.monotonic() + 10  # SIGKILLed children being reaped
    while tagged_pids(tag) and time.monotonic() < deadline:
        time.sleep(0.1)
    if tagged_pids(tag):
        sys.exit("%s: processes left behind: %s" % (what, tagged_pids(tag)))


def check_point(d):
    for k, t in POINT_KEYS.items():
        v = d.get(k)
        ok = isinstance(v, t) or (t is float and isinstance(v, int))
        if not ok or isinstance(v, bool) != (t is bool):
            sys.exit("point %s: %r is %r, not a %s" % (
                (d.get("workers"), d.get("servers")), k, v, t.__name__))
    if d["bench"] != "scale" or d["wire_dtype"] != "fp32":
        sys.exit("point: bench or wire_dtype wrong: %r" % d)
    if len(d["idle_fraction"]) != d["workers"]:
        sys.exit("point: one idle fraction per worker: %r" % d)
    for side, n in (("server", d["servers"]), ("worker", d["workers"])):
        for way in ("up", "down"):
            u = d["link_util"]["%s_%s" % (side, way)]
            if len(u) != n or not all(0 < x < 1.2 for x in u):
                sys.exit("point: link_util %s_%s is %r" % (side, way, u))
    if not d["step_seconds"] > 0 or not d["predicted_step_seconds"] > 0:
        sys.exit("point: step times must be positive: %r" % d)


def sweep(build, env, tag):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "scale.jsonl")
        p = subprocess.Popen([RUN, "--build", build, "--workers", "1,2",
                              "--servers", "1,2", "--steps", "3", "--fit",
                              "1x1,2x1", "--out", out], env=env)
        rc = p.wait(timeout=900)
        if rc == SKIP:
            print("scale_small: SKIP: bench/scale cannot make network "
                  "namespaces here (needs root)")
            sys.exit(SKIP)
        check_left(p, tag, "sweep")
        if rc != 0:
            sys.exit("bench/scale/run exited %d" % rc)
        with open(out) as f:
            return [json.loads(x) for x in f]


def check_sweep(lines):
    cal = [x for x in lines if x.get("calibration")]
    pts = [x for x in lines if "step_seconds" in x]
    fits = [x for x in lines if x.get("fit")]
    proj = [x for x in lines if x.get("projection")]
    if len(cal) != 1 or not cal[0]["link_goodput_bytes_per_s"] > 0:
        sys.exit("one calibration line with a goodput: %r" % cal)
    if sorted((x["workers"], x["servers"]) for x in pts) != \
            [(1, 1), (1, 2), (2, 1), (2, 2)]:
        sys.exit("points: %r" % [(x["workers"], x["servers"]) for x in pts])
    for d in pts:
        check_point(d)
    if len(fits) != 1 or not fits[0]["eta"] > 0 or not proj:
        sys.exit("fit and projection lines: %r %r" % (fits, proj[:1]))
    by = {(x["workers"], x["servers"]): x for x in pts}
    t1 = by[(2, 1)]["throughput_bytes_per_s"]
    t2 = by[(2, 2)]["throughput_bytes_per_s"]
    if by[(2, 1)]["limit"] != "servers links" or not t2 > 1.3 * t1:
        sys.exit("W=2: throughput %d at S=2 is not above 1.3 x %d at S=1 "
                 "(links allow 2x)" % (t2, t1))
    print("scale_small: %d points; W=2: %.1f MB/s at S=1, %.1f MB/s at "
          "S=2 (%.2fx)" % (len(pts), t1 / 1e6, t2 / 1e6, t2 / t1))


def interrupted(build, env, tag):
    """SIGTERM once the first point is under way: the run ends non-zero
    and takes its namespaces and processes with it."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "scale.jsonl")
        p = subprocess.Popen([RUN, "--build", build, "--workers", "2",
                              "--servers", "2", "--steps", "20", "--out",
                              out], env=env)
        deadline = time.monotonic() + 300
        while not (os.path.exists(out) and os.path.getsize(out)):
            if p.poll() is not None or time.monotonic() > deadline:
                sys.exit("interrupted: the run ended before its first line")
            time.sleep(0.1)
        time.sleep(1.0)  # the point's servers and workers are running
        if not namespaces(p.pid) or not tagged_pids(tag):
            sys.exit("interrupted: nothing running to interrupt")
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=120)
        check_left(p, tag, "interrupted")
        if rc == 0:
            sys.exit("interrupted: the run exited 0 after SIGTERM")
        print("scale_small: SIGTERM mid-point: exit %d, nothing left" % rc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    a = ap.parse_args()
    tag = uuid.uuid4().hex
    env = dict(os.environ, FSPS_SCALE_TEST=tag)
    check_sweep(sweep(a.build, env, tag))
    interrupted(a.build, env, tag)


if __name__ == "__main__":
    main()
