"""The fsps package's API against real servers: errors, bad input of every
kind (a Python exception with the reason, never a crash), views and their
lifetime, Ctrl-C, and that the package, the header and the library agree."""
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest

import fsps

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


@contextlib.contextmanager
def sigint_after(seconds):
    """Ctrl-C (SIGINT to this process) after seconds, unless the block
    ended first: never a stray one into the next test."""
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def small_spec(init="client", optimizer="sgd"):
    spec = fsps.Spec(seed=3)
    spec.add_layer("fc1", {"weight": (4, 3), "bias": (4,)}, init=init)
    spec.add_layer("fc2", [("weight", (2, 4)), ("bias", 2)], init=init)
    return spec.set_optimizer(optimizer, lr=0.5)


def ramp(n, base=0.0):
    return (base + np.arange(n, dtype=np.float32) / 8).astype(np.float32)


@pytest.fixture
def client(cluster):
    with fsps.Client(cluster(S=2).addr, timeout=20) as c:
        c.declare(small_spec())
        c.set_values(0, ramp(16))
        c.set_values(1, ramp(10, 1.0))
        yield c


def header_defines(name):
    with open(os.path.join(ROOT, name)) as f:
        return f.read()


def test_versions_agree():
    h = header_defines("client/include/fsps/fsps.h")
    v = [re.search(r"#define FSPS_VERSION_%s (\d+)" % k, h).group(1)
         for k in ("MAJOR", "MINOR", "PATCH")]
    assert fsps.__version__ == ".".join(v) == fsps.library_version()


def test_import_from_any_folder(tmp_path):
    out = subprocess.run([sys.executable, "-c",
                          "import fsps; print(fsps.__version__)"],
                         cwd=tmp_path, capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == fsps.__version__


def test_missing_library_is_a_clear_import_error(tmp_path):
    env = dict(os.environ, FSPS_LIBRARY=str(tmp_path / "libfsps.so.0"))
    out = subprocess.run([sys.executable, "-c", "import fsps"], env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "cannot load libfsps.so.0" in out.stderr
    assert "FSPS_LIBRARY" in out.stderr


def normalise(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"^#(?:.*\\\n)*.*$", "", text, flags=re.M)
    return re.sub(r"\s+", " ", text).strip()


def test_cdef_matches_header():
    """Every declaration cffi is given stands in fsps.h or fsps_err.h, and
    every function of the headers is declared (comments and spacing
    aside; the enum and struct are compared field by field)."""
    headers = normalise(header_defines("client/include/fsps/fsps.h") +
                        header_defines("err/fsps_err.h"))
    protos = re.findall(r"(?:^|(?<=[;{}] ))([a-z_0-9 ]+\*? ?fsps_[a-z_]+"
                        r"\([^;]*\);)", headers)
    assert len(protos) > 40  # the whole API was found
    cdef = normalise(fsps._ffi.CDEF)
    for p in protos:
        assert p.strip() in cdef, p
    fields = re.search(r"typedef struct \{(.*?)\} fsps_options;",
                       headers).group(1)
    assert normalise(fields) in cdef
    assert len(re.findall(r"fsps_[a-z_]+\(", cdef)) == len(protos)


def test_every_error_code_has_a_class():
    text = header_defines("err/fsps_err.h")
    codes = [int(c) for c in re.findall(r"X\([A-Z_]+, (\d+),", text)]
    for code in codes:
        if code == 0:
            continue
        e = fsps.error_for(code, "why")
        assert type(e) is not fsps.Error and e.code == code
        assert e.message == "why" and e.name in str(e)


def test_spec_bad_input():
    s = fsps.Spec()
    with pytest.raises(fsps.InvalidArgument, match="add a layer"):
        s.add_tensor("w", (2,))
    with pytest.raises(TypeError):
        fsps.Spec(seed=-1)
    with pytest.raises(TypeError):
        s.add_layer(5)
    s.add_layer("fc")
    with pytest.raises(fsps.InvalidArgument, match="positive"):
        s.add_tensor("w", (2, 0))
    with pytest.raises(TypeError, match="shape"):
        s.add_tensor("w", object())
    with pytest.raises(fsps.InvalidArgument, match="init"):
        s.add_tensor("w", (2,), init="gaussian")
    with pytest.raises(TypeError):
        s.add_layer("fc2", {"w": (2,)}, a="x")
    with pytest.raises(fsps.InvalidArgument, match="finite"):
        s.add_tensor("w", (2,), init="constant", a=float("nan"))
    with pytest.raises(fsps.InvalidArgument, match="optimizer"):
        s.set_optimizer("rmsprop")
    with pytest.raises(fsps.InvalidArgument, match="needs lr"):
        s.set_optimizer("sgd")
    with pytest.raises(fsps.InvalidArgument, match="unknown"):
        s.set_param("betaa", 0.5)
    with pytest.raises(fsps.InvalidArgument, match="schedule"):
        s.set_schedule("linear")
    with pytest.raises(fsps.InvalidArgument, match="out of range"):
        s.layer_size(3)
    with pytest.raises(fsps.InvalidArgument):  # a layer without tensors
        s.validate()


def test_spec_defaults_and_split():
    s = small_spec(optimizer="adam")
    assert s.params == {"lr": 0.5}
    assert [l.size for l in s.layers] == [16, 10] and len(s) == 2
    assert s.layer_size(1) == 10 and s.hash == small_spec("client",
                                                          "adam").hash
    parts = s.split(0, ramp(16))
    assert parts["weight"].shape == (4, 3) and parts["bias"][0] == 1.5
    with pytest.raises(fsps.InvalidArgument):
        s.split(0, ramp(15))


def test_client_bad_options():
    with pytest.raises(TypeError, match="servers"):
        fsps.Client(5)
    with pytest.raises(fsps.InvalidArgument, match="host:port"):
        fsps.Client("localhost")
    with pytest.raises(TypeError, match="rank"):
        fsps.Client("127.0.0.1:1", rank="0")
    with pytest.raises(fsps.InvalidArgument, match="out of range"):
        fsps.Client("127.0.0.1:1", world=-1)
    with pytest.raises(fsps.InvalidArgument, match="mode"):
        fsps.Client("127.0.0.1:1", mode="sync")
    with pytest.raises(fsps.InvalidArgument, match="timeout"):
        fsps.Client("127.0.0.1:1", timeout=0)
    with pytest.raises(fsps.InvalidArgument) as e:  # libfsps's own check
        fsps.Client("127.0.0.1:1", rank=2, world=2)
    assert e.value.code == 3 and "rank" in e.value.message


def test_arrays_are_checked(client):
    with pytest.raises(TypeError, match="ndarray"):
        client.set_values(0, [0.0] * 16)
    with pytest.raises(TypeError, match="float32"):
        client.set_values(0, np.zeros(16))
    with pytest.raises(fsps.InvalidArgument, match="15 elements"):
        client.set_values(0, np.zeros(15, dtype=np.float32))
    with pytest.raises(fsps.InvalidArgument, match="C-contiguous"):
        client.set_values(0, np.zeros(32, dtype=np.float32)[::2])
    with pytest.raises(fsps.InvalidArgument, match="read-only"):
        ro = np.zeros(16, dtype=np.float32)
        ro.flags.writeable = False
        client.gather(0, out=ro)
    with pytest.raises(fsps.InvalidArgument, match="out of range"):
        client.gather(2)
    with pytest.raises(TypeError, match="layer"):
        client.gather("0")
    with pytest.raises(fsps.InvalidArgument, match="outside"):
        client.gather(0, offset=10, count=7)
    with pytest.raises(fsps.InvalidArgument, match="NaN"):  # the library's
        bad = ramp(16)
        bad[5] = np.nan
        client.push(0, 0, bad)
        client.push_wait()
    # None of it changed anything:
    values, version = client.gather(0)
    assert version == 0 and np.array_equal(values, ramp(16))


def test_values_refusals(client):
    with pytest.raises(fsps.AlreadyExists):
        client.set_values(0, ramp(16, 2.0))
    client.set_values(0, ramp(16))  # the same again: fine
    with pytest.raises(fsps.InvalidArgument, match="NaN|Inf|finite"):
        v = ramp(10, 1.0)
        v[3] = np.inf
        client.set_values(1, v)
    with pytest.raises(ValueError):  # InvalidArgument is a ValueError
        client.set_values(1, np.zeros((2, 4), dtype=np.float32))


def test_closed_client_and_no_model(cluster):
    c = fsps.Client(cluster().addr)
    with pytest.raises(fsps.FailedPrecondition, match="no model"):
        c.gather(0)
    with pytest.raises(TypeError, match="fsps.Spec"):
        c.declare("model")
    c.close()
    c.close()  # twice is fine
    assert c.closed
    for call in (lambda: c.gather(0), lambda: c.declare(small_spec()),
                 lambda: c.step_begin(0), lambda: c.bytes_moved):
        with pytest.raises(fsps.FailedPrecondition, match="closed"):
            call()


def one_step(c, t, grad_value=1.0):
    with c.step(t):
        seen = []
        for l in range(2):
            w = c.forward(l)
            seen.append(w.copy())
            c.forward_done(l)
        for l in (1, 0):
            p, g = c.backward(l)
            g[:] = grad_value
            c.backward_done(l)
    return seen


def test_views_lifetime(client):
    with client.step(0):
        w = client.forward(0)
        tensors = client.spec.split(0, w)
        assert isinstance(w, fsps.View) and w.valid
        assert np.array_equal(w, ramp(16)) and not w.flags.writeable
        with pytest.raises(ValueError):  # forward parameters: read-only
            w[0] = 1.0
        doubled, total = w * 2, w.sum()
        part = w[2:5]
        client.forward_done(0)
        assert not w.valid and not part.valid
        for touch in (lambda: w[0], lambda: w + 1, lambda: np.sum(w),
                      lambda: w.tolist(), lambda: str(w), lambda: list(w),
                      lambda: part[0], lambda: tensors["bias"] * 1,
                      lambda: w.astype(np.float64), lambda: w.copy()):
            with pytest.raises(fsps.StaleView, match="forward_done"):
                touch()
        assert "released by forward_done(0)" in repr(w)
        # What was computed from it lives on.
        assert doubled[1] == 0.25 and total == ramp(16).sum()
        w1 = client.forward(1)
        client.forward_done(1)
        for l in (1, 0):
            p, g = client.backward(l)
            assert p.shape == g.shape == (client.spec.layer_size(l),)
            g[:] = 1.0
            client.backward_done(l)
            with pytest.raises(fsps.StaleView):
                g[0] = 2.0
    assert not w1.valid
    values, version = client.gather(0, min_version=1)
    assert version == 1
    assert np.array_equal(values, ramp(16) - np.float32(0.5))


def test_push_and_gather_building_blocks(client):
    grad = np.full(16, 2.0, dtype=np.float32)
    client.push(0, 0, grad)
    client.push(1, 0, np.ones(10, dtype=np.float32))
    client.push_wait()
    out = np.empty(3, dtype=np.float32)
    got, version = client.gather(0, min_version=1, out=out, offset=13,
                                 count=3)
    assert got is out and version == 1
    assert np.array_equal(out, ramp(16)[13:] - np.float32(1.0))
    assert client.layer_version(0) == 1
    gathered, pushed = client.bytes_moved
    assert pushed == 26 * 4 and gathered >= 12


def test_pieces(client):
    client.set_pieces(0, [0, 5, 16])
    assert client.num_pieces(0) == 2
    with pytest.raises(fsps.InvalidArgument, match="piece 2"):
        client.forward_piece(0, 2)
    with client.step(0):
        for p in range(2):
            v = client.forward_piece(0, p)
            assert v.shape == ((5,), (11,))[p]
            client.forward_piece_done(0, p)
        w = client.forward(1)
        client.forward_done(1)
        _, g = client.backward(1)
        g[:] = 0
        client.backward_done(1)
        for p in (1, 0):
            b = client.backward_piece(0, p)
            b[:] = 4.0
            client.backward_piece_done(0, p)
    values, _ = client.gather(0, min_version=1)
    assert np.array_equal(values, ramp(16) - np.float32(2.0))
    client.set_pieces(0, None)
    assert client.num_pieces(0) == 1


def test_ctrl_c_interrupts_a_blocked_gather(cluster):
    """A gather parked on the next version, which no one pushes, blocks
    in libfsps; SIGINT reaches Python at once (while the call still runs),
    the client is then refused, and close() returns without waiting for
    it."""
    c = fsps.Client(cluster().addr, timeout=10)
    c.declare(small_spec(init="zeros"))
    with sigint_after(0.3), pytest.raises(KeyboardInterrupt):
        c.gather(0, min_version=1)
    assert c._runner.busy  # interrupted before libfsps returned
    with pytest.raises(fsps.Cancelled, match="interrupted"):
        c.gather(0)
    c.close()
    assert c.closed
    c._runner._thread.join(timeout=30)  # the background close ends too
    assert not c._runner._thread.is_alive()


def test_error_carries_code_and_server_message(cluster):
    addr = cluster().addr
    with fsps.Client(addr) as c:
        c.declare(small_spec())
        other = small_spec(optimizer="adam")
        with pytest.raises(fsps.FailedPrecondition) as e:
            c.declare(other)
        assert e.value.code == 9 and "hash" in e.value.message
    with fsps.Client(addr, timeout=2) as c:
        c.declare(small_spec())
        c.set_values(0, ramp(16))
        with pytest.raises(fsps.DeadlineExceeded):
            c.gather(1)  # layer 1 still awaits its values


def test_every_public_name_has_a_docstring():
    import inspect
    missing = []
    for name in fsps.__all__:
        obj = getattr(fsps, name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue  # constants
        if not inspect.getdoc(obj):
            missing.append(name)
        if inspect.isclass(obj) and not issubclass(obj, BaseException):
            for attr, member in vars(obj).items():
                if attr.startswith("_"):
                    continue
                if callable(member) or isinstance(member, property):
                    if not inspect.getdoc(member):
                        missing.append("%s.%s" % (name, attr))
    assert not missing, missing


def test_direct_calls_without_the_runner(cluster):
    with fsps.Client(cluster().addr, interruptible=False) as c:
        c.declare(small_spec())
        c.set_values(0, ramp(16))
        c.set_values(1, ramp(10))
        assert c.gather(1)[1] == 0


def test_step_begin_ends_the_views_of_an_abandoned_step(client):
    """fsps_step_begin takes back every buffer of a step left without
    fsps_step_end, so the views of that step must go stale with them."""
    client.step_begin(0)
    w = client.forward(0)
    client.step_begin(0)  # the first step abandoned
    assert not w.valid
    with pytest.raises(fsps.StaleView, match="step_begin"):
        w[0]
    client.step_end()


def runner_threads():
    return [t for t in threading.enumerate() if t.name == "fsps-call"]


def test_clients_left_to_the_garbage_collector_end_their_threads(cluster):
    """A Client deleted without close() is closed, runner thread and all:
    a loop making clients must not pile up threads."""
    import gc
    import time
    addr = cluster().addr
    before = len(runner_threads())
    for _ in range(5):
        c = fsps.Client(addr)
        c.declare(small_spec())
        del c
    gc.collect()
    deadline = time.monotonic() + 30
    while len(runner_threads()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(runner_threads()) == before


@pytest.mark.parametrize("interruptible", [False, True])
def test_close_from_another_thread_waits_for_the_call(cluster,
                                                      interruptible):
    """close() while another thread's call runs in libfsps waits for it
    instead of freeing the client under it; later calls are refused."""
    import time
    c = fsps.Client(cluster().addr, timeout=1.5, interruptible=interruptible)
    c.declare(small_spec(init="zeros"))
    errors = []

    def blocked():
        try:
            c.gather(0, min_version=1)  # no one pushes: times out
        except fsps.Error as e:
            errors.append(e)
    t = threading.Thread(target=blocked)
    t.start()
    time.sleep(0.3)
    c.close()
    assert not t.is_alive()
    t.join()
    assert [type(e) for e in errors] == [fsps.DeadlineExceeded]
    with pytest.raises(fsps.FailedPrecondition, match="closed"):
        c.gather(0)


def test_push_keeps_its_array_through_an_interrupted_call(client):
    """A push is in flight once fsps_push started it: its gradient must
    stay referenced even if Ctrl-C lands before the call returned."""
    import weakref
    runner, real_call = client._runner, client._runner.call

    def interrupted(fn, *args):
        real_call(fn, *args)
        raise KeyboardInterrupt  # as if SIGINT came as fsps_push returned
    runner.call = interrupted
    grad = np.ones(16, dtype=np.float32)
    alive = weakref.ref(grad)
    try:  # not pytest.raises, whose traceback would keep grad alive
        client.push(0, 0, grad)
    except KeyboardInterrupt:
        pass
    else:
        pytest.fail("no KeyboardInterrupt")
    del runner.call
    del grad
    assert alive() is not None
    client.close()


def test_background_close_keeps_the_pushed_arrays(cluster):
    """After an interrupted call, close() returns at once and the client
    is closed behind the call; the arrays of pushes in flight must live
    until then, even when the Client object is gone."""
    import gc
    import weakref
    c = fsps.Client(cluster().addr, timeout=8)
    c.declare(small_spec(init="zeros"))
    grad = np.ones(16, dtype=np.float32)
    alive = weakref.ref(grad)
    c.push(0, 0, grad)
    del grad
    with sigint_after(0.3), pytest.raises(KeyboardInterrupt):
        # Layer 1, which no one pushes: a wait for its next version is
        # legal and lasts the whole timeout.
        c.gather(1, min_version=1)
    thread = c._runner._thread
    c.close()
    del c
    gc.collect()
    assert thread.is_alive() and alive() is not None
    thread.join(timeout=60)
    assert not thread.is_alive()


def test_a_call_does_not_keep_its_arrays(client):
    """Once gather returned, its out array is the caller's alone (the
    runner's thread must not hold it until the next call)."""
    import weakref
    out = np.empty(16, dtype=np.float32)
    client.gather(0, out=out)
    alive = weakref.ref(out)
    del out
    assert alive() is None


def stop_process(pid):
    """SIGSTOP, then wait until the process is stopped: kill() returns
    before it is, and a loaded machine left the server running long enough
    to answer the push that was meant to find it stopped."""
    import time
    os.kill(pid, signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] \
            != "T":
        assert time.monotonic() < deadline, "the server did not stop"
        time.sleep(0.005)


def test_ctrl_c_interrupts_close_waiting_for_pushes(cluster):
    """close() waits for pushes in flight; with their server stopped that
    is the whole timeout, which Ctrl-C cuts short like any blocking call."""
    servers = cluster()
    c = fsps.Client(servers.addr, timeout=60, retries=0)
    c.declare(small_spec(init="zeros"))
    stop_process(servers.procs[0].pid)
    try:
        c.push(0, 0, np.ones(16, dtype=np.float32))
        with sigint_after(0.3), pytest.raises(KeyboardInterrupt):
            c.close()  # would wait the push's 60 s
        assert c.closed and c._runner._thread.is_alive()
    finally:
        os.kill(servers.procs[0].pid, signal.SIGCONT)
    c._runner._thread.join(timeout=90)
    assert not c._runner._thread.is_alive()


def test_copies_of_a_view_check_it_and_outlive_it(client):
    """copy.copy and copy.deepcopy go past View.__getattribute__: they
    must still refuse a stale view (after close() its buffer is freed:
    copying it crashed), and copies of a valid one, like astype's, own
    their data and stay usable after the lease."""
    import copy
    with client.step(0):
        w = client.forward(0)
        copies = [copy.copy(w), copy.deepcopy(w), w.astype(np.float64),
                  w.flatten()]
        client.forward_done(0)
        for made in copies:
            assert np.array_equal(made, ramp(16))
        for copier in (copy.copy, copy.deepcopy):
            with pytest.raises(fsps.StaleView):
                copier(w)



def test_odd_arguments_get_clear_errors(client):
    """Values C would truncate, or Python could not convert, are refused
    with the reason (not an OverflowError, IndexError or a numpy error),
    and nothing reaches libfsps."""
    spec = fsps.Spec()
    with pytest.raises(fsps.InvalidArgument, match="NUL"):
        spec.add_layer("fc\0x")  # C would name it "fc"
    spec.add_layer("fc")
    with pytest.raises(fsps.InvalidArgument, match="NUL"):
        spec.add_tensor("w\0", 2)
    with pytest.raises(fsps.InvalidArgument, match="2\\*\\*64"):
        spec.add_tensor("w", (2 ** 70,))
    with pytest.raises(fsps.InvalidArgument, match="range"):
        spec.add_tensor("w", 2, init="constant", a=10 ** 400)
    with pytest.raises(fsps.InvalidArgument, match="NUL"):
        fsps.Client("127.0.0.1:1" + "\0junk")
    for timeout in (float("inf"), 1e300):
        with pytest.raises(fsps.InvalidArgument, match="timeout"):
            fsps.Client("127.0.0.1:1", timeout=timeout)
    with pytest.raises(fsps.InvalidArgument, match="mode"):
        fsps.Client("127.0.0.1:1", mode=["bsp"])
    with pytest.raises(fsps.InvalidArgument, match="outside"):
        client.gather(0, offset=20)  # past the end: count would be < 0
    raw = np.zeros(17 * 4, dtype=np.uint8)
    unaligned = np.frombuffer(raw.data, dtype=np.float32, count=16, offset=1)
    with pytest.raises(fsps.InvalidArgument, match="aligned"):
        client.gather(0, out=unaligned)
    with pytest.raises(fsps.InvalidArgument, match="aligned"):
        client.set_values(0, unaligned)


def test_layers_added_after_declare_are_not_the_models(client):
    """The client serves the model as declared: a layer added to the Spec
    afterwards is out of range (it was an IndexError)."""
    client.spec.add_layer("fc3", {"w": 2})
    with pytest.raises(fsps.InvalidArgument, match="layer 2 is out of range"):
        client.gather(2)


def test_a_refused_builder_call_says_why_and_that_it_sticks():
    """libfsps refuses some values Python lets through (nesterov 0.5);
    the error must give its reason, and say the spec keeps it, since
    every later validate() and declare() fails with it."""
    spec = small_spec()
    with pytest.raises(fsps.InvalidArgument, match="expected 0 or 1.*new"):
        spec.set_param("nesterov", 0.5)
    spec.set_param("nesterov", 1)  # accepted, but the spec stays refused
    with pytest.raises(fsps.InvalidArgument, match="nesterov"):
        spec.validate()
    with pytest.raises(fsps.InvalidArgument, match="earlier.*nesterov"):
        spec.set_param("step_size", 1.5)


def test_status_checkpoint_and_rollback(cluster, tmp_path):
    cl = cluster(2, 2, "--checkpoint-dir", str(tmp_path))
    with fsps.Client(cl.addr, world=2, timeout=20) as admin:
        before = admin.status()
        assert [s["initialized"] for s in before] == [False, False]
        with pytest.raises(fsps.FailedPrecondition, match="no model"):
            admin.rollback(0)
    spec = small_spec(init="zeros")
    w0 = fsps.Client(cl.addr, rank=0, world=2, timeout=20)
    w1 = fsps.Client(cl.addr, rank=1, world=2, timeout=20)
    w0.declare(spec)
    w1.attach(spec)
    for t in range(2):
        for w in (w0, w1):
            w.push(0, t, np.ones(16, dtype=np.float32))
            w.push(1, t, np.ones(10, dtype=np.float32))
            w.push_wait()
    w0.push(0, 2, np.ones(16, dtype=np.float32))
    w0.push_wait()
    st = w0.status()
    assert [s["address"] for s in st] == cl.addr.split(",")
    for s, srv in enumerate(st):
        assert srv["error"] is None and srv["initialized"]
        assert srv["server_index"] == s and srv["num_workers"] == 2
        assert srv["spec_hash"] == spec.hash and srv["epoch"] == 0
        l0, l1 = srv["layers"]
        assert (l0["name"], l0["size"], l1["size"]) == ("fc1", 16, 10)
        # 16-element slices: server 0 holds both layers, server 1 nothing
        assert l0["slice_count"] == (16 if s == 0 else 0)
        if s == 0:
            assert (l0["version"], l0["pending_step"]) == (2, 2)
            assert (l0["pushed"], l0["missing"]) == ([0], [1])
            assert (l1["pushed"], l1["missing"]) == ([], [0, 1])
    files = w0.checkpoint()
    assert [f["min_version"] for f in files] == [2, 0]  # 1 holds no slice
    assert all(os.path.exists(f["path"]) for f in files)
    assert w0.checkpoint(server=1)[0]["path"] == files[1]["path"]
    w0.push(1, 2, np.ones(10, dtype=np.float32))
    w0.push_wait()
    for l, n in ((0, 16), (1, 10)):
        w1.push(l, 2, np.ones(n, dtype=np.float32))
    w1.push_wait()
    assert w0.layer_version(0) == 3
    with pytest.raises(fsps.FailedPrecondition, match="no checkpoint of it"):
        w0.rollback(1)
    epoch = w0.rollback(2)
    assert epoch != 0
    assert all(s["epoch"] == epoch for s in w0.status())
    assert w0.layer_version(0) == 2 and w0.layer_version(1) == 2
    with pytest.raises(fsps.FailedPrecondition):
        w1.push(0, 2, np.ones(16, dtype=np.float32))
        w1.push_wait()
    assert w1.recover() == 2
    w0.close()
    w1.close()


def bf16(a):
    """a rounded to bfloat16 (to nearest, ties to even) and back to
    float32, as the bf16 wire carries it (no NaN here)."""
    u = np.asarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000
    return u.astype(np.uint32).view(np.float32)


def test_bf16_wire(cluster):
    """A bf16 model: values given in float32 and kept so, parameters
    gathered as bf16 of the float32 master, gradients rounded to bf16 before
    the (float32) update; half the bytes; a worker of the other dtype is
    refused, and the client's wire_dtype replaces the spec's."""
    cl = cluster(S=2)
    spec = small_spec()
    fp32_hash = spec.hash
    assert spec.wire_dtype == "fp32"
    assert spec.set_wire_dtype("bf16") is spec and spec.wire_dtype == "bf16"
    assert spec.hash != fp32_hash and "bf16" in repr(spec)
    third = np.float32(1 / 3)
    values, grad = ramp(16) + third, np.full(16, third, dtype=np.float32)
    with fsps.Client(cl.addr, timeout=20) as c:
        c.declare(spec)
        assert c.wire_dtype == "bf16"
        c.set_values(0, values)
        c.set_values(1, ramp(10, 1.0))
        got, _ = c.gather(0)
        assert np.array_equal(got, bf16(values))
        assert not np.array_equal(got, values)  # rounding did happen
        c.push(0, 0, grad)
        c.push(1, 0, np.ones(10, dtype=np.float32))
        c.push_wait()
        got, version = c.gather(0, min_version=1)
        master = values - np.float32(0.5) * bf16(grad)  # SGD, lr 0.5, W 1
        assert version == 1 and np.array_equal(got, bf16(master))
        gathered, pushed = c.bytes_moved
        assert pushed == 26 * 2 and gathered == 32 * 2
    with fsps.Client(cl.addr, timeout=20) as other:
        with pytest.raises(fsps.FailedPrecondition,
                           match="wire dtype bf16, this worker asks for fp32"):
            other.attach(small_spec())
    with fsps.Client(cl.addr, timeout=20, wire_dtype="bf16") as c:
        c.attach(small_spec())
        assert c.wire_dtype == "bf16" and c.spec.wire_dtype == "fp32"
        got, _ = c.gather(0, min_version=1)
        assert np.array_equal(got, bf16(master))
    with pytest.raises(fsps.InvalidArgument, match="fp16"):
        fsps.Spec(wire_dtype="fp16")
    with pytest.raises(fsps.InvalidArgument, match="fp16"):
        fsps.Client(cl.addr, wire_dtype="fp16")
