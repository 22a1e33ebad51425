"""bench/scale/probe: the raw TCP goodput of one shaped link, measured in
the same run as the benchmark it calibrates: one plain TCP stream from a
node to another (no gRPC, no fsps), timed by the receiver from its first
byte to the sender's close.
"""
import os
import subprocess
import time

PROBE_PORT = 5001
RECEIVE = r"""
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", %d))
s.listen(1)
open(sys.argv[1], "w").close()
c, _ = s.accept()
total, t0 = 0, None
while True:
    b = c.recv(1 << 20)
    if t0 is None:
        t0 = time.monotonic()
    if not b:
        break
    total += len(b)
print(total, time.monotonic() - t0)
""" % PROBE_PORT
SEND = r"""
import socket, sys
c = socket.create_connection((sys.argv[1], %d))
buf = b"\0" * (1 << 20)
for _ in range(int(sys.argv[2])):
    c.sendall(buf)
c.close()
""" % PROBE_PORT


def goodput(network, src, dst, tmp, seconds=1.5):
    """Bytes/s one TCP stream carries from node src to node dst: enough
    MiB for about `seconds` at the nominal rate (at least 4)."""
    ready = os.path.join(tmp, "probe-ready")
    if os.path.exists(ready):
        os.unlink(ready)
    mib = max(4, int(network.rate_bit / 8 * seconds / (1 << 20)))
    rx = network.popen(dst, ["/usr/bin/python3", "-c", RECEIVE, ready],
                       stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(ready):
            if rx.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the goodput probe's receiver did not "
                                   "start")
            time.sleep(0.02)
        tx = network.run(src, ["/usr/bin/python3", "-c", SEND,
                               network.addr(dst), str(mib)], timeout=300)
        if tx.returncode != 0:
            raise RuntimeError("the goodput probe's sender failed")
        out, _ = rx.communicate(timeout=60)
        total, dt = out.split()
        return int(total) / float(dt)
    finally:
        if rx.poll() is None:
            rx.kill()
        rx.wait()
