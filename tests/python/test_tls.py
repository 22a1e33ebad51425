"""The fsps package over TLS and mutual TLS (Client's tls_* arguments)
against real servers, with certificates made by the openssl tool: a whole
round of declare, gather, push and status; refusals; bad files and bad
arguments raise exceptions naming the problem."""
import os
import sys

import numpy as np
import pytest

import fsps

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                ".."))
from tls_certs import Pki  # noqa: E402


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    p = Pki(str(tmp_path_factory.mktemp("pki")))
    p.ca1, p.ca2 = p.ca("ca1"), p.ca("ca2")
    p.server = p.leaf("server", p.ca1)
    p.client = p.leaf("client", p.ca1)
    p.client2 = p.leaf("client2", p.ca2)
    return p


@pytest.fixture
def mtls(cluster, pki):
    """Two servers requiring client certificates of CA 1."""
    return cluster(2, 1, "--tls-cert", pki.server.cert, "--tls-key",
                   pki.server.key, "--tls-client-ca", pki.ca1.cert)


def spec():
    s = fsps.Spec(seed=3)
    s.add_layer("fc", {"weight": (4, 3), "bias": (4,)}, init="constant",
                a=0.5)
    return s.set_optimizer("sgd", lr=0.5)


def test_round_over_mutual_tls(mtls, pki):
    with fsps.Client(mtls.addr, timeout=60, tls_ca=pki.ca1.cert,
                     tls_cert=pki.client.cert,
                     tls_key=pki.client.key) as c:
        c.declare(spec())
        w, version = c.gather(0)
        assert version == 0
        assert np.array_equal(w, np.full(16, 0.5, np.float32))
        c.push(0, 0, np.ones(16, np.float32))
        c.push_wait()
        w, version = c.gather(0, min_version=1)
        assert version == 1
        assert np.array_equal(w, np.zeros(16, np.float32))
        assert {l["version"] for s in c.status()
                for l in s["layers"] if l["slice_count"]} == {1}


def test_path_like_and_server_name(mtls, pki, tmp_path):
    import pathlib
    with fsps.Client(mtls.addr, timeout=60,
                     tls_ca=pathlib.Path(pki.ca1.cert),
                     tls_cert=pathlib.Path(pki.client.cert),
                     tls_key=pki.client.key.encode(),
                     tls_server_name="localhost") as c:
        assert all(s["error"] is None for s in c.status())


@pytest.mark.parametrize("case", ["plaintext", "other CA", "no client cert",
                                  "client cert of another CA"])
def test_refused(mtls, pki, case):
    kw = {"plaintext": {},
          "other CA": dict(tls_ca=pki.ca2.cert, tls_cert=pki.client.cert,
                           tls_key=pki.client.key),
          "no client cert": dict(tls_ca=pki.ca1.cert),
          "client cert of another CA": dict(
              tls_ca=pki.ca1.cert, tls_cert=pki.client2.cert,
              tls_key=pki.client2.key)}[case]
    with fsps.Client(mtls.addr, timeout=10, retries=0, **kw) as c:
        with pytest.raises(fsps.Unavailable):
            c.declare(spec())


def test_bad_files_and_arguments(pki, tmp_path):
    missing = str(tmp_path / "missing.crt")
    with pytest.raises(fsps.InputOutputError, match=missing):
        fsps.Client("127.0.0.1:1", tls_ca=missing)
    with pytest.raises(fsps.InvalidArgument, match="does not match"):
        fsps.Client("127.0.0.1:1", tls_ca=pki.ca1.cert,
                    tls_cert=pki.client.cert, tls_key=pki.server.key)
    with pytest.raises(fsps.InvalidArgument, match="holds no PEM certificate"):
        fsps.Client("127.0.0.1:1", tls_ca=pki.ca1.key)
    with pytest.raises(fsps.InvalidArgument, match="go together"):
        fsps.Client("127.0.0.1:1", tls_ca=pki.ca1.cert,
                    tls_cert=pki.client.cert)
    with pytest.raises(fsps.InvalidArgument, match="need tls_ca"):
        fsps.Client("127.0.0.1:1", tls_cert=pki.client.cert,
                    tls_key=pki.client.key)
    with pytest.raises(TypeError, match="tls_ca must be a path"):
        fsps.Client("127.0.0.1:1", tls_ca=3)
