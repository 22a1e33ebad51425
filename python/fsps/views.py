"""NumPy arrays that view libfsps's own buffers without copying, and know
when the library has taken the buffer back.

A view handed out by ``Client.forward`` and friends holds a *lease*. The
call that releases the buffer (``forward_done``, ``backward_done``,
``step_end``, ``recover``, ``close``, or an error in the step) ends the
lease; from then on every use of the view, or of a slice or reshape of it,
raises ``fsps.StaleView`` instead of reading memory that may hold another
layer, or none. What NumPy computes *from* a view (``v * 2``, ``v.sum()``,
``v.copy()``) is an ordinary array that lives on. NumPy's and others' C
code can reach the buffer without asking the view: ``np.asarray(v)``,
``np.array(v)``, ``memoryview(v)``, ``bytes(v)``, ``np.frombuffer(v)``,
``torch.from_numpy(v)`` and assigning it into a plain array (``a[:] = v``)
are not checked, so use them only while the lease lasts (``v.copy()``
is). After ``close()`` the buffer is freed: such a read then may crash.
"""
import numpy as np

from .errors import StaleView


class Lease:
    """The right to touch one libfsps buffer; ``end()`` takes it back."""

    __slots__ = ("valid", "what", "ended_by")

    def __init__(self, what):
        self.valid = True
        self.what = what
        self.ended_by = None

    def end(self, by):
        if self.valid:
            self.valid = False
            self.ended_by = by

    def check(self):
        if not self.valid:
            raise StaleView("%s: released by %s, so this view is no longer "
                            "valid (copy it before then to keep the data)"
                            % (self.what, self.ended_by))


# Attributes that do not read the buffer: answered even after the lease.
_FREE = frozenset(("shape", "dtype", "size", "ndim", "itemsize", "nbytes",
                   "flags", "strides", "lease", "_lease", "__class__",
                   "__array_finalize__", "__array_priority__",
                   "__array_ufunc__", "__array_function__", "__dict__",
                   "__reduce__", "__reduce_ex__", "valid"))


def _plain(x):
    """x as a plain ndarray (no lease checks inside NumPy's own code)."""
    if isinstance(x, View):
        x._checked()  # a View of memory of its own has no lease
        return x.view(np.ndarray)
    if isinstance(x, (list, tuple)):
        return type(x)(_plain(y) for y in x)
    return x


class View(np.ndarray):
    """A float32 array over a libfsps buffer, valid while its lease lasts.

    It behaves as an ndarray; once the lease has ended, touching it
    (indexing, arithmetic, methods, repr, iteration) raises
    ``fsps.StaleView``. ``view.valid`` tells whether it may still be used.
    """

    def __array_finalize__(self, obj):
        # Only an array over obj's memory (a slice, a reshape) shares its
        # lease; one with memory of its own (astype, flatten) never
        # touches the library's buffer.
        owns = self.flags.owndata
        self._lease = None if owns else getattr(obj, "_lease", None)

    def __getattribute__(self, name):
        if name not in _FREE:
            lease = np.ndarray.__getattribute__(self, "_lease")
            if lease is not None:
                lease.check()
        return np.ndarray.__getattribute__(self, name)

    @property
    def valid(self):
        """True until the call that releases the buffer."""
        lease = self._lease
        return lease is None or lease.valid

    def _checked(self):
        lease = self._lease
        if lease is not None:
            lease.check()

    def __getitem__(self, key):
        self._checked()
        return np.ndarray.__getitem__(self, key)

    def __setitem__(self, key, value):
        self._checked()
        np.ndarray.__setitem__(self, key, _plain(value))

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]  # each item checked when it is taken

    def __repr__(self):
        lease = self._lease
        if lease is not None and not lease.valid:
            return "<fsps.View of %s, released by %s>" % (lease.what,
                                                          lease.ended_by)
        return "fsps.View(%r)" % (self.view(np.ndarray),)

    def __str__(self):
        self._checked()
        return str(self.view(np.ndarray))

    def __bool__(self):
        self._checked()
        return bool(self.view(np.ndarray))

    def __float__(self):
        self._checked()
        return float(self.view(np.ndarray))

    def __array__(self, dtype=None):
        self._checked()
        a = self.view(np.ndarray)
        return a if dtype is None else a.astype(dtype)

    def __reduce__(self):  # pickling copies the data
        self._checked()
        return np.ndarray.__reduce__(self.view(np.ndarray).copy())

    def copy(self, order="C"):
        """A plain ndarray with the view's data, which outlives the lease."""
        self._checked()
        return self.view(np.ndarray).copy(order=order)

    # copy.copy and copy.deepcopy look these up on the class, past
    # __getattribute__: without them a stale view was copied from a
    # buffer that close() may have unmapped.
    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        inputs = _plain(inputs)
        if out is not None:
            kwargs["out"] = _plain(out)
        result = getattr(ufunc, method)(*inputs, **kwargs)
        return self._rewrap(result)

    def __array_function__(self, func, types, args, kwargs):
        result = func(*_plain(args), **{k: _plain(v)
                                        for k, v in kwargs.items()})
        return self._rewrap(result)

    def _rewrap(self, result):
        """Results sharing this view's memory (slices, in-place output)
        keep the lease; fresh arrays are plain."""
        if isinstance(result, tuple):
            return tuple(self._rewrap(r) for r in result)
        if isinstance(result, np.ndarray) and not isinstance(result, View) \
                and np.may_share_memory(result, self.view(np.ndarray)):
            v = result.view(View)
            v._lease = self._lease
            return v
        return result


def make_view(ffi, ptr, shape, lease, writable):
    """A View of count float32s at ptr (a cffi pointer), under lease."""
    count = 1
    for d in shape:
        count *= d
    buf = ffi.buffer(ptr, count * 4)
    arr = np.frombuffer(buf, dtype=np.float32, count=count).reshape(shape)
    v = arr.view(View)
    v._lease = lease
    if not writable:
        v.flags.writeable = False
    return v
