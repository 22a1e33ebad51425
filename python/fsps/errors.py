"""fsps's exceptions: one class per libfsps status code, all subclasses of
fsps.Error, which carries the code, its name and the library's message."""
from ._ffi import ffi, lib


class Error(Exception):
    """A failed fsps call.

    Attributes:
        code: the libfsps status code (an ``int``; 0..16 are gRPC's codes).
        name: the code's name, e.g. ``"INVALID_ARGUMENT"``.
        message: what went wrong, as libfsps or the server said it.
    """

    code = 2

    def __init__(self, message, code=None):
        if code is not None:
            self.code = code
        self.name = ffi.string(lib.fsps_err_name(self.code)).decode()
        self.message = message
        super().__init__("%s: %s" % (self.name, message))


def _define(name, code, doc, *bases):
    cls = type(name, (Error,) + bases, {"code": code, "__doc__": doc})
    globals()[name] = cls
    return cls


# Codes as in fsps_err.h; the tests check that the list is complete.
_CLASSES = {
    1: _define("Cancelled", 1, "The call was cancelled (or interrupted)."),
    2: _define("Unknown", 2, "An error the server could not classify."),
    3: _define("InvalidArgument", 3,
               "Bad input: a wrong size, type, value, NaN, or no such "
               "layer. Also a ValueError.", ValueError),
    4: _define("DeadlineExceeded", 4,
               "The call's timeout passed before it finished.",
               TimeoutError),
    5: _define("NotFound", 5, "What was asked for does not exist."),
    6: _define("AlreadyExists", 6,
               "A server holds something else already (e.g. other "
               "values for a layer)."),
    7: _define("PermissionDenied", 7, "The server refused the caller."),
    8: _define("ResourceExhausted", 8, "Out of memory or over a limit."),
    9: _define("FailedPrecondition", 9,
               "The call does not fit the state: no model declared, a "
               "layer that began training, a closed client, ..."),
    10: _define("Aborted", 10, "The operation was aborted."),
    11: _define("OutOfRange", 11, "A value outside its range."),
    12: _define("Unimplemented", 12, "The server does not implement it."),
    13: _define("Internal", 13, "A bug: an invariant broke."),
    14: _define("Unavailable", 14,
                "A server is down or restarting (after the retries).",
                ConnectionError),
    15: _define("DataLoss", 15, "Data was lost or corrupted."),
    16: _define("Unauthenticated", 16, "The caller's credentials were "
                "refused."),
    64: _define("OutOfMemory", 64, "libfsps ran out of memory.", MemoryError),
    65: _define("InputOutputError", 65, "An input/output error.", OSError),
    66: _define("CorruptData", 66, "Corrupt data (a checkpoint, a message)."),
}


class StaleView(Error):
    """A NumPy view of a libfsps buffer was touched after the call that
    released it (``forward_done``, ``backward_done``, ``step_end``,
    ``close``, ...): the buffer may hold another layer by now."""

    code = 9


def error_for(code, message):
    """Returns the fsps.Error subclass instance for a libfsps code."""
    cls = _CLASSES.get(code)
    if cls is None:
        return Error(message, code)
    return cls(message)
