"""benchlib: what bench/train.py, bench/torch_ddp.py and bench/vs_torch.py
share: CPU-time accounting from /proc, real fsps-server processes on
loopback, and which BLAS library a process (torch) has loaded."""
import os
import re
import signal
import subprocess
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")
BLAS_RE = r"\S*blas\S*\.so\S*"


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


def timed(fn, extra_pids=()):
    """Runs fn(), which runs child processes to completion; returns its
    result, the CPU seconds those (reaped) children used, the CPU seconds
    extra_pids (live processes, e.g. servers) used, and the cores every
    other process on the machine used meanwhile."""
    busy0, wall0 = machine_busy(), time.monotonic()
    extra0 = [proc_cpu(p) for p in extra_pids]
    ru0 = os.times()
    out = fn()
    ru1 = os.times()
    extra = sum(proc_cpu(p) - c for p, c in zip(extra_pids, extra0))
    wall, busy = time.monotonic() - wall0, machine_busy() - busy0
    children = (ru1.children_user - ru0.children_user +
                ru1.children_system - ru0.children_system)
    other = max(0.0, busy - children - extra) / wall
    return out, children, extra, other


def start_servers(build, tmp, S, W, name="bench"):
    """Starts S fsps-servers for W workers on 127.0.0.1 ports the system
    picks; returns their Popen objects and the --servers list."""
    procs, servers = [], []
    for s in range(S):
        pf = os.path.join(tmp, "port%d" % s)
        procs.append(subprocess.Popen(
            [os.path.join(build, "server", "fsps-server"), "--listen",
             "127.0.0.1:0", "--index", str(s), "--num-servers", str(S),
             "--workers", str(W), "--port-file", pf, "--log-level", "warn"]))
        while not os.path.exists(pf) or not os.path.getsize(pf):
            if procs[-1].poll() is not None:
                stop_servers(procs)
                sys.exit("%s: fsps-server did not start" % name)
            time.sleep(0.02)
        with open(pf) as f:
            servers.append("127.0.0.1:%s" % f.read().strip())
    return procs, ",".join(servers)


def stop_servers(procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait()


def blas_loaded():
    """The BLAS libraries this process has mapped."""
    with open("/proc/self/maps") as f:
        return sorted(set(re.findall(BLAS_RE, f.read())))


def run_blas_probe(env):
    """The BLAS libraries torch maps once it has multiplied matrices, in a
    fresh /usr/bin/python3 with environment env."""
    code = ("import torch, re; torch.ones(64, 64) @ torch.ones(64, 64); "
            "print(sorted(set(re.findall(%r, "
            "open('/proc/self/maps').read()))))" % BLAS_RE)
    return subprocess.run([sys.executable, "-c", code], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
