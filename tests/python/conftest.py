"""Fixtures for the fsps Python package's tests: real fsps-server
processes on loopback ports (the binary named by $FSPS_SERVER), and the
package itself (python/ on sys.path, libfsps.so from $FSPS_LIBRARY), both
set by ctest (tests/CMakeLists.txt)."""
import ctypes
import os
import signal
import subprocess
import tempfile
import time

import pytest


def _die_with_parent():
    """Each server gets SIGKILL if the test process dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Cluster:
    """S real fsps-servers for W workers; ``addr`` is the servers string."""

    def __init__(self, S=1, W=1, *flags):
        self.tmp = tempfile.TemporaryDirectory()
        self.procs, ports = [], []
        for s in range(S):
            port_file = os.path.join(self.tmp.name, "port-%d" % s)
            self.procs.append(subprocess.Popen(
                [os.environ["FSPS_SERVER"], "--listen", "127.0.0.1:0",
                 "--port-file", port_file, "--log-level", "warn",
                 "--num-servers", str(S), "--index", str(s), "--workers",
                 str(W)] + list(flags), preexec_fn=_die_with_parent))
            ports.append(self._port(port_file, self.procs[-1]))
        self.addr = ",".join("127.0.0.1:%d" % p for p in ports)

    @staticmethod
    def _port(port_file, proc):
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file) or not os.path.getsize(port_file):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("fsps-server did not start")
            time.sleep(0.02)
        with open(port_file) as f:
            return int(f.read())

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            p.wait(timeout=30)
        self.tmp.cleanup()


@pytest.fixture
def cluster():
    """A factory: cluster(S, W, *flags) starts servers, stopped after the
    test."""
    made = []

    def make(S=1, W=1, *flags):
        made.append(Cluster(S, W, *flags))
        return made[-1]
    yield make
    for c in made:
        c.stop()
