"""Fixtures for the fsps Python package's tests: real fsps-server
processes on loopback ports (the binary named by $FSPS_SERVER), and the
package itself (python/ on sys.path, libfsps.so from $FSPS_LIBRARY), both
set by ctest (tests/CMakeLists.txt)."""
import os
import subprocess
import tempfile
import time

import pytest


# Every child is started through setpriv(1) with PDEATHSIG set, so that no
# server or worker outlives its test (and holds ctest's output pipe). Not
# with a preexec_fn doing prctl: that makes subprocess fork() this threaded
# process (gRPC's threads) and run Python in the child, which hung a launch
# for good now and then under load; without it subprocess uses vfork.
DIE_WITH_PARENT = ["setpriv", "--pdeathsig", "KILL", "--"]


class Cluster:
    """S real fsps-servers for W workers; ``addr`` is the servers string."""

    def __init__(self, S=1, W=1, *flags):
        self.tmp = tempfile.TemporaryDirectory()
        self.procs, ports = [], []
        for s in range(S):
            port_file = os.path.join(self.tmp.name, "port-%d" % s)
            self.procs.append(subprocess.Popen(
                DIE_WITH_PARENT +
                [os.environ["FSPS_SERVER"], "--listen", "127.0.0.1:0",
                 "--port-file", port_file, "--log-level", "warn",
                 "--num-servers", str(S), "--index", str(s), "--workers",
                 str(W)] + list(flags)))
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
