"""fsps: train a model whose parameters live, sharded, on fsps servers.

The Python face of libfsps (loaded through cffi from libfsps.so):

- ``fsps.Spec``: the model (layers of float32 tensors), the optimizer the
  servers apply, its schedule.
- ``fsps.Client``: one worker's connection; declare or attach the model,
  give its initial values, then per step gather each layer just in time
  and push its gradient (``step``, ``forward``, ``backward``, ...).
- ``fsps.View``: parameters and gradients as NumPy arrays over the
  library's buffers, without a copy; touching one after the call that
  released it raises ``fsps.StaleView``.
- ``fsps.Error`` and its subclasses, one per status code.

A short example::

    import numpy as np, fsps
    spec = fsps.Spec().add_layer("fc", {"weight": (2, 3)}, init="client")
    spec.set_optimizer("sgd", lr=0.1)
    with fsps.Client("127.0.0.1:7070") as c:
        c.declare(spec)
        c.set_values(0, np.ones(6, dtype=np.float32))
        with c.step(0):
            w = c.forward(0); c.forward_done(0)
            g = c.backward_inplace(0); g[:] = 1.0; c.backward_done(0)
        print(c.gather(0, min_version=1))
"""
from ._ffi import LIBRARY_PATH, ffi, lib
from ._version import __version__
from .client import MODES, Client, load_token
from .errors import *  # noqa: F401,F403 (the status-code classes)
from . import errors as _errors
from .errors import Error, StaleView, error_for
from .spec import INITS, OPTIMIZERS, PARAMS, SCHEDULES, Layer, Spec
from .views import View

__all__ = ["Client", "Spec", "Layer", "View", "Error", "StaleView",
           "library_version", "tune_malloc", "load_token", "error_for", "MODES", "INITS",
           "OPTIMIZERS", "PARAMS", "SCHEDULES", "LIBRARY_PATH",
           "__version__"] + [cls.__name__ for cls in _errors._CLASSES.values()]


def library_version():
    """The version of the libfsps.so loaded (``fsps_version()``)."""
    return ffi.string(lib.fsps_version()).decode()


def tune_malloc():
    """Keeps glibc's malloc from handing freed memory back to the kernel
    (see fsps_tune_malloc): call it once at start-up in a process that
    gathers large layers."""
    rc = lib.fsps_tune_malloc()
    if rc != 0:
        raise error_for(rc, "glibc refused mallopt")
