"""fsps.Client: one worker's connection to every fsps server, its gathers,
pushes and FSDP step scheduler."""
import math
import numbers
import os
import threading

import numpy as np

from ._ffi import ffi, lib
from ._runner import Runner
from .errors import Cancelled, FailedPrecondition, InvalidArgument, error_for
from .spec import Spec, layer_index
from .views import Lease, View, make_view

MODES = {"bsp": 0, "ssp": 1, "asp": 2}
WIRE_DTYPES = {None: 0, "fp32": 1, "bf16": 2}
_U32 = 2 ** 32


def _uint(value, what, limit=_U32):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError("%s must be an int, not %r" % (what, value))
    if not 0 <= value < limit:
        raise InvalidArgument("%s = %d is out of range [0, %d)"
                              % (what, value, limit))
    return int(value)


def _seconds_ms(value, what):
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, numbers.Real) \
            or not 0 < value < 2 ** 53 or not math.isfinite(value):
        # 2**53 s: far beyond any wait, and an int64 of milliseconds.
        raise InvalidArgument("%s must be a positive number of seconds "
                              "below 2**53, not %r" % (what, value))
    return max(1, int(round(value * 1000)))


def _servers(servers):
    if isinstance(servers, str):
        text = servers
    elif isinstance(servers, (list, tuple)) and servers and \
            all(isinstance(s, str) for s in servers):
        text = ",".join(servers)
    else:
        raise TypeError("servers must be 'host:port,host:port' or a list of "
                        "'host:port' strings, not %r" % (servers,))
    if not text or any(":" not in s for s in text.split(",")):
        raise InvalidArgument("servers %r: each must be host:port" % (text,))
    if "\0" in text:  # C would see only what precedes it
        raise InvalidArgument("servers %r holds a NUL character" % (text,))
    return text


TOKEN_MAX = 4096  # bytes (fsps.h)


def load_token(path=None):
    """Finds a token the way fsps's tools do (``fsps_token_load``): from
    the file ``path`` if given, else from the file the environment variable
    FSPS_TOKEN_FILE names, else from the variable FSPS_TOKEN itself. A token
    file holds the token alone (blank lines and # comments aside) and must
    not be readable by other users. Returns the token (a str), or None when
    no source is set; raises fsps.Error when a source is unusable (the
    message never quotes the token)."""
    if path is not None and not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError("path must be a str or os.PathLike, not %s"
                        % type(path).__name__)
    buf = ffi.new("char[]", TOKEN_MAX + 1)
    err = ffi.new("char[]", 1200)
    c_path = ffi.NULL if path is None else ffi.new("char[]",
                                                    os.fsencode(path))
    rc = lib.fsps_token_load(c_path, buf, TOKEN_MAX + 1, err, 1200)
    try:
        if rc == 5:  # FSPS_NOT_FOUND: no source set
            return None
        if rc != 0:
            raise error_for(rc, ffi.string(err).decode(errors="replace"))
        return ffi.string(buf).decode("ascii")
    finally:
        ffi.memmove(buf, b"\0" * (TOKEN_MAX + 1), TOKEN_MAX + 1)


def _token(token, token_file):
    """The token to send as a C string (or ffi.NULL), from token or
    token_file; errors never quote it."""
    if token is not None and token_file is not None:
        raise InvalidArgument("give token or token_file, not both")
    if token_file is not None:
        if isinstance(token_file, (str, bytes)) and not token_file:
            raise InvalidArgument("token_file is empty")
        token = load_token(token_file)
    if token is None:
        return ffi.NULL
    if not isinstance(token, str):
        raise TypeError("token must be a str, not %s" % type(token).__name__)
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidArgument("the token holds a non-ASCII character, which "
                              "a gRPC header cannot carry") from None
    if not raw or b"\0" in raw:
        raise InvalidArgument("the token is empty or holds a NUL character")
    return ffi.new("char[]", raw)


def _float32(arr, count, what, writable):
    """arr's data as a cffi float pointer, after checking that it is a
    C-contiguous float32 ndarray of count elements (and writable)."""
    if isinstance(arr, View):
        arr._lease.check() if arr._lease is not None else None
        arr = arr.view(np.ndarray)
    if not isinstance(arr, np.ndarray):
        raise TypeError("%s must be a numpy.ndarray of float32, not %s"
                        % (what, type(arr).__name__))
    if arr.dtype != np.float32:
        raise TypeError("%s must have dtype float32, not %s (use "
                        ".astype(numpy.float32))" % (what, arr.dtype))
    if not arr.flags.c_contiguous:
        raise InvalidArgument("%s must be C-contiguous (use "
                              "numpy.ascontiguousarray)" % (what,))
    if not arr.flags.aligned:  # libfsps reads and writes it as float *
        raise InvalidArgument("%s is not aligned to 4 bytes (use .copy())"
                              % (what,))
    if arr.size != count:
        raise InvalidArgument("%s has %d elements, the layer range has %d"
                              % (what, arr.size, count))
    if writable and not arr.flags.writeable:
        raise InvalidArgument("%s is read-only" % (what,))
    return ffi.from_buffer("float[]", arr, require_writable=writable)


def _close(c, pinned):
    """fsps_close(c). pinned holds the arrays that pushes in flight read:
    passed along so that they outlive the wait for those pushes, even when
    the Client is gone before a background close ends."""
    lib.fsps_close(c)


def _ids(fn, st, s, l):
    """A layer's list of worker ranks (pushed, missing or absent)."""
    out = ffi.new("const uint32_t **")
    n = fn(st, s, l, out)
    return [int(out[0][i]) for i in range(n)]


def _layer_status(st, s, l):
    """Layer l of server s in a status object, as a dict."""
    return {
        "name": ffi.string(lib.fsps_status_layer_name(st, s, l)).decode(),
        "size": int(lib.fsps_status_layer_size(st, s, l)),
        "slice_count": int(lib.fsps_status_layer_slice_count(st, s, l)),
        "version": int(lib.fsps_status_layer_version(st, s, l)),
        "pending_step": int(lib.fsps_status_layer_pending_step(st, s, l)),
        "awaiting_values": bool(lib.fsps_status_layer_awaiting_values(st, s,
                                                                      l)),
        "pushed": _ids(lib.fsps_status_layer_pushed, st, s, l),
        "missing": _ids(lib.fsps_status_layer_missing, st, s, l),
        "absent": _ids(lib.fsps_status_layer_absent, st, s, l),
    }


def _server_status(st, s):
    """Server s in a status object, as a dict (see Client.status)."""
    msg = ffi.new("const char **")
    rc = lib.fsps_status_error(st, s, msg)
    ck = ffi.new("const uint64_t **")
    nck = lib.fsps_status_checkpoints(st, s, ck)
    return {
        "address": ffi.string(lib.fsps_status_address(st, s)).decode(),
        "error": error_for(rc, ffi.string(msg[0]).decode(errors="replace"))
        if rc != 0 else None,
        "initialized": bool(lib.fsps_status_initialized(st, s)),
        "server_index": int(lib.fsps_status_server_index(st, s)),
        "num_servers": int(lib.fsps_status_server_count(st, s)),
        "num_workers": int(lib.fsps_status_num_workers(st, s)),
        "mode": ffi.string(lib.fsps_status_mode(st, s)).decode(),
        "spec_hash": int(lib.fsps_status_spec_hash(st, s)),
        "incarnation": int(lib.fsps_status_incarnation(st, s)),
        "epoch": int(lib.fsps_status_epoch(st, s)),
        "checkpoints": [int(ck[0][i]) for i in range(nck)],
        "layers": [_layer_status(st, s, l)
                   for l in range(lib.fsps_status_num_layers(st, s))],
    }


def _set_tls(o, **paths):
    """Sets o's TLS fields from paths (str, bytes, os.PathLike or None);
    returns the C strings, which must live until fsps_connect returns."""
    keep = []
    for name, value in paths.items():
        if value is None:
            continue
        if not isinstance(value, (str, bytes, os.PathLike)):
            raise TypeError("%s must be a path (str or os.PathLike), not %r"
                            % (name, type(value).__name__))
        keep.append(ffi.new("char[]", os.fsencode(value)))
        setattr(o, name, keep[-1])
    return keep


class Client:
    """One worker's connection to the fsps servers (``fsps_connect``).

    Use it as a context manager, or call ``close()``::

        with fsps.Client("127.0.0.1:7070,127.0.0.1:7071") as c:
            c.declare(spec)
            ...

    Arguments (the defaults are libfsps's):
        servers: ``"host:port,host:port"`` or a list, server 0 first.
        rank, world: this worker's index and the number of workers W.
        mode: "bsp", "ssp" or "asp" (must match the servers' --mode).
        staleness: SSP's tau.
        prefetch: layers gathered ahead by the step scheduler.
        reshard_after_forward: free each layer after forward (FSDP).
        timeout: seconds each call may take (None: 120).
        retries: calls made again when a server answers UNAVAILABLE.
        io_threads: threads receiving and copying (1 suits most).
        token: the bearer token sent on every call, for servers started
            with --auth-tokens (None: none). Never printed.
        token_file: read the token from this file instead (the token
            alone on a line, the file private to its owner); see
            ``fsps.load_token`` for the tools' FSPS_TOKEN_FILE and
            FSPS_TOKEN variables.
        tls_ca: path of the PEM file of the CAs that sign the servers'
            certificates; given, every connection is TLS (None: plaintext).
        tls_cert, tls_key: mutual TLS: paths of this client's PEM
            certificate chain and its private key.
        tls_server_name: the name every server's certificate must carry,
            instead of the host of its address (None).
            The files are read once, here; a bad one raises
            ``fsps.InvalidArgument`` (``fsps.InputOutputError`` when
            unreadable) naming it.
        wire_dtype: None (as each spec says), or "fp32" or "bf16" to
            declare and attach specs with that wire dtype instead of their
            own (see ``Spec.set_wire_dtype``).
        interruptible: run blocking calls on a helper thread so Ctrl-C
            interrupts them (the default); False calls libfsps directly,
            which saves the hand-over (~13 us a call) but waits out a
            blocked call.

    Errors are raised as ``fsps.Error`` subclasses (``code``, ``message``).
    Calls on one client are made one at a time: a call from another thread
    (``close()`` too) waits for the one in progress. Use one client from
    one trainer thread; distinct clients are independent.
    """

    def __init__(self, servers, rank=0, world=1, mode="bsp", staleness=0,
                 prefetch=1, reshard_after_forward=True, timeout=None,
                 retries=8, io_threads=1, interruptible=True, token=None,
                 token_file=None, tls_ca=None, tls_cert=None, tls_key=None,
                 tls_server_name=None, wire_dtype=None):
        o = ffi.new("fsps_options *")
        # The header's fsps_options_init is a macro passing the struct's
        # size; cffi calls the function behind it with that size too.
        lib.fsps_options_init_size(o, ffi.sizeof("fsps_options"))
        servers_c = ffi.new("char[]", _servers(servers).encode())
        o.servers = servers_c
        o.rank = _uint(rank, "rank")
        o.world = _uint(world, "world")
        if not isinstance(mode, str) or mode not in MODES:
            raise InvalidArgument("mode %r is not one of bsp, ssp, asp"
                                  % (mode,))
        o.mode = MODES[mode]
        o.staleness = _uint(staleness, "staleness")
        o.prefetch = _uint(prefetch, "prefetch")
        if not isinstance(reshard_after_forward, bool):
            raise TypeError("reshard_after_forward must be a bool")
        o.reshard_after_forward = reshard_after_forward
        o.timeout_ms = _seconds_ms(timeout, "timeout")
        o.retries = _uint(retries, "retries")
        o.io_threads = _uint(io_threads, "io_threads")
        if not isinstance(wire_dtype, (str, type(None))) or \
                wire_dtype not in WIRE_DTYPES:
            raise InvalidArgument("wire_dtype %r is not one of None, fp32, "
                                  "bf16" % (wire_dtype,))
        o.wire_dtype = WIRE_DTYPES[wire_dtype]
        self._wire_dtype = wire_dtype
        token_c = _token(token, token_file)
        o.token = token_c
        keep = _set_tls(o, tls_ca=tls_ca, tls_cert=tls_cert,
                        tls_key=tls_key, tls_server_name=tls_server_name)
        out = ffi.new("fsps_client **")
        err = ffi.new("char[]", 512)
        rc = lib.fsps_connect(o, out, err, 512)
        del keep  # libfsps has read the files
        if token_c != ffi.NULL:  # libfsps holds its own copy now
            n = len(ffi.string(token_c))
            ffi.memmove(token_c, b"\0" * n, n)
        if rc != 0:
            raise error_for(rc, ffi.string(err).decode(errors="replace"))
        self._c = out[0]
        self._closed = False
        self._interrupted = False
        self._spec = None
        self._sizes = []
        self._bounds = {}
        self._leases = {}
        self._pinned = []
        self._runner = Runner("fsps-call") if interruptible else None
        self._mu = threading.Lock()

    # ---- plumbing ----

    def _open(self):
        if self._closed:
            raise FailedPrecondition("the client is closed")
        if self._interrupted:
            raise Cancelled("a call on this client was interrupted "
                            "(KeyboardInterrupt); close() it and connect "
                            "again")

    def _call(self, fn, *args, quick=False):
        """fn(self._c, *args) -> rc, raised as fsps.Error when not 0.

        Holds _mu throughout: calls on one client must not overlap in
        libfsps, and close() from another thread must not free the client
        under a call (nor stop the runner before the call is queued).
        quick marks calls that only start work and never wait on the
        network (forward_done, a whole layer's backward_done):
        they skip the hand-over to the runner's thread (~13 us each)."""
        with self._mu:
            self._open()
            c = self._c
            if self._runner is None or quick:
                rc = fn(c, *args)
            else:
                try:
                    rc = self._runner.call(fn, c, *args)
                except KeyboardInterrupt:
                    self._interrupted = True
                    self._end_leases("an interrupted call")
                    raise
            if rc != 0:
                raise error_for(rc, ffi.string(lib.fsps_last_error(c))
                                .decode(errors="replace"))

    def _layer(self, layer):
        self._open()
        if self._spec is None:
            raise FailedPrecondition("no model: call declare() or attach() "
                                     "first")
        # The model as declared: layers added to the spec since are not
        # the servers' (nor the library's copy of it).
        return layer_index(layer, len(self._sizes))

    def _lease(self, key, what):
        lease = Lease(what)
        self._leases.setdefault(key, []).append(lease)
        return lease

    def _end_leases(self, by, key=None):
        keys = list(self._leases) if key is None else [key]
        for k in keys:
            for lease in self._leases.pop(k, ()):
                lease.end(by)

    def _view(self, ptr, count, key, what, writable):
        return make_view(ffi, ptr, (count,), self._lease(key, what), writable)

    # ---- lifetime ----

    def close(self):
        """Waits for pushes in flight, closes the connections and frees
        every buffer the client handed out; every view becomes stale.
        Calling it again does nothing. After an interrupted call it
        returns at once, and the client is closed in the background when
        that call has ended (at the latest when its timeout passes); the
        wait for pushes in flight is interrupted by Ctrl-C the same way.
        Called from another thread, it waits for the call in progress."""
        with self._mu:
            if self._closed:
                return
            self._end_leases("close()")
            self._closed = True
            c, self._c = self._c, ffi.NULL
            pinned, self._pinned = self._pinned, []
            if self._runner is None:
                _close(c, pinned)
            else:
                self._close_on_runner(c, pinned)

    def _close_on_runner(self, c, pinned):
        """Closes c on the runner's thread, which then ends. After an
        interrupted call, which still runs, the close is queued behind it
        without waiting; else waited for, interruptibly (Ctrl-C leaves it
        to end in the background)."""
        runner = self._runner
        try:
            if runner.busy:
                runner.post(_close, c, pinned)
            else:
                runner.call(_close, c, pinned)
        finally:
            runner.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        if getattr(self, "_closed", True):
            return
        self._end_leases("the client's deletion")
        self._closed = True
        try:
            if self._runner is None:
                _close(self._c, self._pinned)
            else:  # behind any call still running; the thread ends then
                self._runner.post(_close, self._c, self._pinned)
                self._runner.stop()
        except Exception:  # interpreter shutdown: lib may be gone
            pass

    @property
    def closed(self):
        """True after close()."""
        return self._closed

    # ---- model ----

    def _adopt(self, spec):
        self._spec = spec
        self._sizes = [spec.layer_size(i) for i in range(len(spec.layers))]

    def declare(self, spec):
        """Declares spec on every server (Init); the same spec again is
        fine, another raises FailedPrecondition naming both hashes."""
        if not isinstance(spec, Spec):
            raise TypeError("spec must be an fsps.Spec, not %s"
                            % type(spec).__name__)
        self._call(lib.fsps_declare, spec._ptr)
        self._adopt(spec)

    def attach(self, spec, timeout=None):
        """Waits (up to timeout seconds; None: the client's timeout) until
        every server has a model, and checks it is spec (by hash): what
        workers other than the declaring one call."""
        if not isinstance(spec, Spec):
            raise TypeError("spec must be an fsps.Spec, not %s"
                            % type(spec).__name__)
        self._call(lib.fsps_attach, spec._ptr, _seconds_ms(timeout,
                                                           "timeout"))
        self._adopt(spec)

    @property
    def spec(self):
        """The spec declared or attached (None before)."""
        return self._spec

    @property
    def wire_dtype(self):
        """How the model travels, "fp32" or "bf16": the client's
        wire_dtype if given, else the spec's (None before declare or
        attach)."""
        if self._spec is None:
            return None
        return self._wire_dtype or self._spec.wire_dtype

    def layer_version(self, layer):
        """The lowest version of layer over the servers."""
        layer = self._layer(layer)
        out = ffi.new("uint64_t *")
        self._call(lib.fsps_layer_version, layer, out)
        return int(out[0])

    def recover(self):
        """Brings the cluster back to a step every worker can go on from,
        after a step failed (see fsps_recover); returns that step. Every
        view becomes stale."""
        self._end_leases("recover()")
        out = ffi.new("uint64_t *")
        self._call(lib.fsps_recover, out)
        return int(out[0])

    def set_values(self, layer, values):
        """Gives layer's version-0 values (its tensors have init "client"):
        a C-contiguous float32 array of the layer's size (any shape),
        all finite. Blocking; every server takes its slice whole or not at
        all; the same values again are fine, others raise AlreadyExists."""
        layer = self._layer(layer)
        ptr = _float32(values, self._sizes[layer], "values", False)
        self._call(lib.fsps_set_values, layer, ptr)

    # ---- gather and push ----

    def gather(self, layer, min_version=0, out=None, offset=0, count=None):
        """Pulls elements [offset, offset + count) of layer (all of it by
        default) from every server, once each slice is at version >=
        min_version, into out (a new float32 array when None). Returns
        ``(array, version)``, version being the lowest received."""
        layer = self._layer(layer)
        n = self._sizes[layer]
        offset = _uint(offset, "offset", 2 ** 64)
        count = max(n - offset, 0) if count is None else \
            _uint(count, "count", 2 ** 64)
        if count == 0 or offset + count > n:
            raise InvalidArgument("range [%d, +%d) is empty or outside layer "
                                  "%d of %d elements" % (offset, count,
                                                         layer, n))
        if out is None:
            out = np.empty(count, dtype=np.float32)
        ptr = _float32(out, count, "out", True)
        version = ffi.new("uint64_t *")
        self._call(lib.fsps_gather_range, layer,
                   _uint(min_version, "min_version", 2 ** 64), offset, count,
                   ptr, version)
        return out, int(version[0])

    def push(self, layer, step, grad):
        """Sends grad (the layer's gradient, float32, the layer's size) for
        step without waiting: slice s to server s. The client keeps a
        reference to grad; do not change it before ``push_wait()``."""
        layer = self._layer(layer)
        ptr = _float32(grad, self._sizes[layer], "grad", False)
        step = _uint(step, "step", 2 ** 64)
        # Pinned before the call: the push is in flight once fsps_push has
        # started it, even if Ctrl-C cuts the wait for its return.
        self._pinned.append((grad, ptr))
        self._call(lib.fsps_push, layer, step, ptr)

    def push_wait(self):
        """Waits for every push in flight; raises the first error."""
        try:
            self._call(lib.fsps_push_wait)
        finally:
            if not self._interrupted:
                self._pinned = []

    # ---- the step scheduler ----

    def step(self, step):
        """A context manager around one step: ``step_begin(step)`` on
        entry, ``step_end()`` on exit (when the block raised, step_end's
        own error is dropped and the block's propagates)::

            with c.step(t):
                w = c.forward(0); ...; c.forward_done(0)
                ...
        """
        return _Step(self, step)

    def step_begin(self, step):
        """Starts step t: gathers ask for version t (BSP), t - tau (SSP) or
        0 (ASP); the first layer's gather starts now. Views of a step
        left without ``step_end()`` become stale: libfsps takes their
        buffers back here."""
        step = _uint(step, "step", 2 ** 64)
        self._open()
        self._end_leases("step_begin(%d)" % step)
        self._call(lib.fsps_step_begin, step)

    def step_end(self):
        """Waits for the step's pushes; raises the first error. Every view
        of the step becomes stale."""
        self._end_leases("step_end()")
        self._call(lib.fsps_step_end)

    def forward(self, layer):
        """Layer's parameters for forward: a read-only flat float32 View of
        the library's buffer (no copy), valid until ``forward_done(layer)``.
        ``spec.split(layer, view)`` gives its tensors."""
        layer = self._layer(layer)
        p = ffi.new("float **")
        self._call(lib.fsps_forward, layer, p)
        return self._view(p[0], self._sizes[layer], ("f", layer, None),
                          "layer %d's forward parameters" % layer, False)

    def forward_done(self, layer):
        """Releases layer after forward; its forward View becomes stale."""
        layer = self._layer(layer)
        self._end_leases("forward_done(%d)" % layer, ("f", layer, None))
        self._call(lib.fsps_forward_done, layer, quick=True)

    def backward(self, layer):
        """Layer's parameters (read-only) and a writable buffer for its
        gradient (contents undefined: overwrite all of it), as
        ``(params, grad)`` Views valid until ``backward_done(layer)``."""
        layer = self._layer(layer)
        p = ffi.new("float **")
        g = ffi.new("float **")
        self._call(lib.fsps_backward, layer, p, g)
        n = self._sizes[layer]
        key = ("b", layer, None)
        return (self._view(p[0], n, key, "layer %d's backward parameters"
                           % layer, False),
                self._view(g[0], n, key, "layer %d's gradient buffer" % layer,
                           True))

    def backward_inplace(self, layer):
        """Layer's parameters in a writable View the trainer overwrites
        with the gradient (saves a layer-sized buffer); valid until
        ``backward_done(layer)``, which pushes it."""
        layer = self._layer(layer)
        p = ffi.new("float **")
        self._call(lib.fsps_backward_inplace, layer, p)
        return self._view(p[0], self._sizes[layer], ("b", layer, None),
                          "layer %d's in-place gradient buffer" % layer, True)

    def backward_done(self, layer):
        """Pushes layer's gradient (without waiting) and releases its
        buffers; its backward Views become stale."""
        layer = self._layer(layer)
        self._end_leases("backward_done(%d)" % layer, ("b", layer, None))
        self._call(lib.fsps_backward_done, layer, quick=True)

    # ---- layers in pieces ----

    def set_pieces(self, layer, bounds):
        """Cuts layer into pieces at bounds (``[0, b1, ..., size]``,
        increasing); ``None`` makes it whole again. Between steps."""
        layer = self._layer(layer)
        if bounds is None:
            self._call(lib.fsps_set_pieces, layer, 1, ffi.NULL)
            self._bounds.pop(layer, None)
            return
        b = [_uint(x, "bound", 2 ** 64) for x in bounds]
        if len(b) < 2:
            raise InvalidArgument("bounds needs at least [0, size]")
        self._call(lib.fsps_set_pieces, layer, len(b) - 1,
                   ffi.new("uint64_t[]", b))
        self._bounds[layer] = b

    def num_pieces(self, layer):
        """How many pieces layer is in."""
        layer = self._layer(layer)
        return self._peek(lambda c: int(lib.fsps_num_pieces(c, layer)))

    def _piece(self, layer, piece):
        layer = self._layer(layer)
        b = self._bounds.get(layer, [0, self._sizes[layer]])
        piece = _uint(piece, "piece")
        if piece >= len(b) - 1:
            raise InvalidArgument("piece %d is out of range (layer %d has %d)"
                                  % (piece, layer, len(b) - 1))
        return layer, piece, b[piece + 1] - b[piece]

    def forward_piece(self, layer, piece):
        """``forward`` for piece p of layer: a read-only View of its
        elements, valid until ``forward_piece_done(layer, piece)``."""
        layer, piece, n = self._piece(layer, piece)
        p = ffi.new("float **")
        self._call(lib.fsps_forward_piece, layer, piece, p)
        return self._view(p[0], n, ("f", layer, piece),
                          "piece %d of layer %d (forward)" % (piece, layer),
                          False)

    def forward_piece_done(self, layer, piece):
        """Releases piece p of layer after forward."""
        layer, piece, _ = self._piece(layer, piece)
        self._end_leases("forward_piece_done(%d, %d)" % (layer, piece),
                         ("f", layer, piece))
        self._call(lib.fsps_forward_piece_done, layer, piece,
                   quick=True)

    def backward_piece(self, layer, piece):
        """Piece p's parameters in a writable View to overwrite with its
        gradient, valid until ``backward_piece_done(layer, piece)``."""
        layer, piece, n = self._piece(layer, piece)
        p = ffi.new("float **")
        self._call(lib.fsps_backward_piece, layer, piece, p)
        return self._view(p[0], n, ("b", layer, piece),
                          "piece %d of layer %d (backward)" % (piece, layer),
                          True)

    def backward_piece_done(self, layer, piece):
        """Streams piece p's gradient to the servers and releases it."""
        layer, piece, _ = self._piece(layer, piece)
        self._end_leases("backward_piece_done(%d, %d)" % (layer, piece),
                         ("b", layer, piece))
        self._call(lib.fsps_backward_piece_done, layer, piece)

    # ---- operating the cluster ----

    def status(self):
        """Every server's state (Status), a list of dicts in server order:
        ``address``, ``error`` (None, or the fsps.Error of a server that
        did not answer; its other fields are then empty), ``initialized``,
        ``server_index``, ``num_servers``, ``num_workers``, ``mode``,
        ``spec_hash``, ``incarnation``, ``epoch``, ``checkpoints`` (versions,
        newest first) and ``layers``: dicts of ``name``, ``size``,
        ``slice_count``, ``version``, ``pending_step``, ``awaiting_values``
        and the worker ranks ``pushed``, ``missing`` (what the pending step
        still waits for) and ``absent``. Needs no model."""
        out = ffi.new("fsps_status **")

        def get(c, out):
            rc = lib.fsps_status_get(c, out)
            return rc if out[0] == ffi.NULL else 0
        self._call(get, out)
        st = out[0]
        try:
            return [_server_status(st, s)
                    for s in range(lib.fsps_status_num_servers(st))]
        finally:
            lib.fsps_status_free(st)

    def checkpoint(self, server=None):
        """Asks server ``server`` (None: every server, in order) to write a
        checkpoint now (the server needs --checkpoint-dir). Returns a list
        of dicts, one per server asked: ``path``, ``min_version``,
        ``bytes``. Raises at the first server that fails."""
        n = self._peek(lib.fsps_num_servers)
        servers = range(n) if server is None else [_uint(server, "server")]
        done = []
        for s in servers:
            path = ffi.new("char[]", 4096)
            v = ffi.new("uint64_t *")
            b = ffi.new("uint64_t *")
            self._call(lib.fsps_checkpoint, s, path, 4096, v, b)
            done.append({"path": ffi.string(path).decode(errors="replace"),
                         "min_version": int(v[0]), "bytes": int(b[0])})
        return done

    def rollback(self, version):
        """Takes every server back to ``version`` in a new epoch (see
        fsps_rollback); returns the new epoch. Nothing changes unless every
        server can go back to it (a checkpoint of it, all its layers at it,
        or 0). Workers of the old epoch are refused and recover()."""
        self._end_leases("rollback()")
        out = ffi.new("uint64_t *")
        self._call(lib.fsps_rollback, _uint(version, "version", 2 ** 64), out)
        return int(out[0])

    # ---- counters ----

    def _peek(self, fn):
        """fn(c) for a quick read of the client's state, under _mu like
        every call (set_pieces replaces what num_pieces reads; close frees
        it)."""
        with self._mu:
            self._open()
            return fn(self._c)

    @property
    def wait_seconds(self):
        """Seconds spent blocked on the network since connect."""
        return self._peek(lambda c: float(lib.fsps_wait_seconds(c)))

    @property
    def peak_buffer_bytes(self):
        """The most bytes of layer and gradient buffers held at once."""
        return self._peek(lambda c: int(lib.fsps_peak_buffer_bytes(c)))

    @property
    def bytes_moved(self):
        """``(gathered, pushed)``: bytes of layers gathered and gradients
        pushed since connect, each counted once."""
        g = ffi.new("uint64_t *")
        p = ffi.new("uint64_t *")
        self._peek(lambda c: lib.fsps_bytes_moved(c, g, p))
        return int(g[0]), int(p[0])


class _Step:
    def __init__(self, client, step):
        self.client = client
        self.step = step

    def __enter__(self):
        self.client.step_begin(self.step)
        return self.client

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.client.step_end()
            return
        try:
            self.client.step_end()
        except Exception:  # the block's error is the one to see
            pass
