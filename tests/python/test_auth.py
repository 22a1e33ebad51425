"""Tokens from Python: fsps.Client(token=..., token_file=...) against real
servers with --auth-tokens (UNAUTHENTICATED and PERMISSION_DENIED raised
as fsps.Unauthenticated and fsps.PermissionDenied, with a message that
says what was refused and never the token, and never retried),
fsps.load_token, and fsps.torch.shard passing the token through."""
import secrets
import signal
import time

import numpy as np
import pytest

import fsps

TOKENS = {role: "%s-%s" % (role, secrets.token_hex(16))
          for role in ("admin", "worker", "reader", "unknown")}


@pytest.fixture
def files(tmp_path):
    """The servers' token table and one private token file per role."""
    out = {}
    table = tmp_path / "tokens"
    table.write_text("".join("%s %s\n" % (r, TOKENS[r])
                             for r in ("admin", "worker", "reader")))
    table.chmod(0o600)
    out["table"] = str(table)
    for role, token in TOKENS.items():
        path = tmp_path / (role + ".token")
        path.write_text("# %s\n%s\n" % (role, token))
        path.chmod(0o600)
        out[role] = str(path)
    return out


def spec():
    s = fsps.Spec(seed=3)
    s.add_layer("fc", {"weight": (4, 3), "bias": (4,)}, init="constant",
                a=0.5)
    s.set_optimizer("sgd", lr=0.1)
    return s


def no_token_in(err):
    for token in TOKENS.values():
        assert token not in str(err)


def test_roles_from_python(cluster, files):
    addr = cluster(2, 1, "--auth-tokens", files["table"]).addr
    with fsps.Client(addr, token=TOKENS["admin"]) as admin:
        admin.declare(spec())
        assert all(s["initialized"] for s in admin.status())
    with fsps.Client(addr) as anon:
        with pytest.raises(fsps.Unauthenticated) as e:
            anon.attach(spec())
        assert "refused the call (UNAUTHENTICATED): no token" in e.value.message
        assert "this client sends no token" in e.value.message
    with fsps.Client(addr, token_file=files["reader"]) as reader:
        reader.attach(spec())
        values, version = reader.gather(0)
        assert version == 0 and values.tolist() == [0.5] * 16
        reader.push(0, 0, np.ones(16, dtype=np.float32))
        with pytest.raises(fsps.PermissionDenied) as e:
            reader.push_wait()
        assert "role reader may not call Push" in e.value.message
        no_token_in(e.value)
    with fsps.Client(addr, token=TOKENS["worker"]) as worker:
        worker.declare(spec())  # the declared model: a worker may join
        worker.push(0, 0, np.ones(16, dtype=np.float32))
        worker.push_wait()
        assert worker.gather(0, min_version=1)[1] == 1


def test_reload_refuses_a_connected_client(cluster, files):
    """SIGHUP: a client connected with a token the new file drops is
    refused on its next call."""
    cl = cluster(1, 1, "--auth-tokens", files["table"])
    with fsps.Client(cl.addr, token=TOKENS["worker"]) as worker:
        assert worker.status()[0]["error"] is None
        with open(files["table"], "w") as f:  # the worker's token goes
            f.write("admin %s\n" % TOKENS["admin"])
        cl.procs[0].send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 120
        while worker.status()[0]["error"] is None:
            assert time.monotonic() < deadline, "the reload never came"
            time.sleep(0.05)
        err = worker.status()[0]["error"]
        assert isinstance(err, fsps.Unauthenticated)
        assert "token not known" in err.message
    with fsps.Client(cl.addr, token=TOKENS["admin"]) as admin:
        assert admin.status()[0]["error"] is None


def test_refusals_are_not_retried(cluster, files):
    addr = cluster(1, 1, "--auth-tokens", files["table"]).addr
    # 8 retries with backoff would take about 16 s; a refusal returns at
    # once (the bound is loose for a busy machine).
    with fsps.Client(addr, token=TOKENS["unknown"], retries=8) as c:
        t0 = time.monotonic()
        with pytest.raises(fsps.Unauthenticated) as e:
            c.declare(spec())
        assert time.monotonic() - t0 < 8
        assert "token not known" in e.value.message
        no_token_in(e.value)
        # status() reports each server's refusal instead of raising.
        (st,) = c.status()
        assert isinstance(st["error"], fsps.Unauthenticated)
        assert not st["initialized"]
        t0 = time.monotonic()
        with pytest.raises(fsps.Unauthenticated) as e:
            c.attach(spec(), timeout=60)
        assert time.monotonic() - t0 < 8
        assert "token not known" in e.value.message
        no_token_in(e.value)


def test_bad_tokens_are_refused_without_quoting_them(files, tmp_path):
    addr = "127.0.0.1:1"  # connecting is lazy: no server needed
    for bad, exc in (("two words", fsps.InvalidArgument),
                     ("caf\u00e9-token-0123456789", fsps.InvalidArgument),
                     ("", fsps.InvalidArgument),
                     (b"bytes-token-0123456789", TypeError)):
        with pytest.raises(exc) as e:
            fsps.Client(addr, token=bad)
        assert "words" not in str(e.value) and "caf" not in str(e.value)
    with pytest.raises(fsps.InvalidArgument):
        fsps.Client(addr, token=TOKENS["admin"], token_file=files["admin"])
    loose = tmp_path / "loose.token"
    loose.write_text(TOKENS["admin"] + "\n")
    loose.chmod(0o644)
    with pytest.raises(fsps.InvalidArgument) as e:
        fsps.Client(addr, token_file=loose)
    assert "every user" in e.value.message
    no_token_in(e.value)
    with pytest.raises(fsps.InputOutputError):
        fsps.Client(addr, token_file=str(tmp_path / "missing"))


def test_load_token(files, monkeypatch):
    monkeypatch.delenv("FSPS_TOKEN_FILE", raising=False)
    monkeypatch.delenv("FSPS_TOKEN", raising=False)
    assert fsps.load_token() is None
    assert fsps.load_token(files["worker"]) == TOKENS["worker"]
    monkeypatch.setenv("FSPS_TOKEN", TOKENS["reader"])
    assert fsps.load_token() == TOKENS["reader"]
    monkeypatch.setenv("FSPS_TOKEN_FILE", files["admin"])
    assert fsps.load_token() == TOKENS["admin"]
    assert fsps.load_token(files["worker"]) == TOKENS["worker"]


def test_torch_shard_passes_the_token(cluster, files):
    torch = pytest.importorskip("torch")
    import fsps.torch as ft
    addr = cluster(2, 1, "--auth-tokens", files["table"]).addr
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    with pytest.raises(fsps.Unauthenticated):
        ft.shard(model, addr, optimizer=("sgd", {"lr": 0.1}))
    with ft.shard(model, addr, optimizer=("sgd", {"lr": 0.1}),
                  token_file=files["admin"]) as m:
        loss = m(torch.ones(5, 3)).sum()
        loss.backward()
        m.step()
        assert m.step_index == 1
    torch.manual_seed(0)
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    with pytest.raises(fsps.PermissionDenied) as e:  # rank 0 declares
        ft.shard(other, addr, optimizer=("sgd", {"lr": 0.1}),
                 token=TOKENS["reader"])
    no_token_in(e.value)
