"""fsps.Spec: a model's layers, tensors and optimizer, as the servers
hold it."""
import math
import numbers

from ._ffi import ffi, lib
from .errors import InvalidArgument

INITS = ("zeros", "constant", "uniform", "normal", "xavier_uniform",
         "he_uniform", "client")
OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad")
SCHEDULES = ("constant", "step", "cosine")
WIRE_DTYPES = ("fp32", "bf16")
PARAMS = ("lr", "momentum", "dampening", "nesterov", "weight_decay", "beta1",
          "beta2", "eps", "lr_decay", "initial_accumulator_value",
          "step_size", "gamma", "t_max", "eta_min", "warmup_steps",
          "warmup_start_factor")


def _name(value, what):
    if not isinstance(value, str) or not value:
        raise TypeError("%s must be a non-empty str, not %r" % (what, value))
    if "\0" in value:  # C would see only what precedes it
        raise InvalidArgument("%s %r holds a NUL character" % (what, value))
    try:
        return value.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidArgument("%s %r is not ASCII" % (what, value)) from None


def _number(value, what):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError("%s must be a number, not %r" % (what, value))
    try:
        value = float(value)
    except OverflowError:  # an int beyond a double's range
        raise InvalidArgument("%s = %r is beyond a double's range"
                              % (what, value)) from None
    if not math.isfinite(value):
        raise InvalidArgument("%s must be finite, not %r" % (what, value))
    return value


def _shape(shape, what):
    if isinstance(shape, numbers.Integral):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise TypeError("%s's shape must be a tuple of ints, not %r"
                        % (what, shape)) from None
    if not dims or not all(isinstance(d, numbers.Integral) and
                           not isinstance(d, bool) and 0 < d < 2 ** 64
                           for d in dims):
        raise InvalidArgument("%s's shape %r must be positive ints below "
                              "2**64" % (what, shape))
    return tuple(int(d) for d in dims)


def layer_index(layer, count):
    """layer as an int index into count layers, or TypeError or
    InvalidArgument."""
    if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
        raise TypeError("layer must be an int index, not %r" % (layer,))
    if not 0 <= layer < count:
        raise InvalidArgument("layer %d is out of range (the model has %d)"
                              % (layer, count))
    return int(layer)


class Layer:
    """One layer of a Spec: a name and its tensors, in order.

    Attributes:
        name: the layer's name.
        tensors: a list of ``(name, shape)``; the layer is their values
            flattened one after the other (PyTorch's order).
        size: the number of float32 elements.
    """

    def __init__(self, name):
        self.name = name
        self.tensors = []

    @property
    def size(self):
        """The layer's number of float32 elements."""
        return sum(math.prod(shape) for _, shape in self.tensors)

    def __repr__(self):
        return "Layer(%r, %r)" % (self.name, self.tensors)


class Spec:
    """A model as fsps holds it: layers of named float32 tensors, the
    optimizer the servers apply, its learning-rate schedule, a seed, and
    its wire dtype: "fp32", or "bf16" to gather parameters and push
    gradients as bfloat16 (half the bytes; the servers keep float32
    parameters and optimizer state and sum in float32, checkpoints and
    set_values stay float32; see ``set_wire_dtype``).

    Every builder checks its input at once (``TypeError`` or
    ``fsps.InvalidArgument`` naming it) and returns the spec, so calls
    chain::

        spec = (fsps.Spec(seed=1)
                .add_layer("fc1", {"weight": (128, 784), "bias": 128},
                           init="client")
                .set_optimizer("adam", lr=1e-3, betas=(0.9, 0.999)))
    """

    def __init__(self, seed=0, wire_dtype="fp32"):
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) \
                or not 0 <= seed < 2 ** 64:
            raise TypeError("seed must be an int in [0, 2**64), not %r"
                            % (seed,))
        ptr = lib.fsps_spec_create(seed)
        if ptr == ffi.NULL:
            raise MemoryError("fsps_spec_create")
        self._ptr = ffi.gc(ptr, lib.fsps_spec_destroy)
        self.seed = int(seed)
        self.layers = []
        self.optimizer = "adam"
        self.params = {}
        self._refused = None
        self.set_wire_dtype(wire_dtype)

    def set_wire_dtype(self, dtype):
        """How the model travels: "fp32" (the default) or "bf16".
        Parameters are then gathered, and each worker's gradient pushed,
        rounded to bfloat16 (to nearest, ties to even); what gathers hand
        out is still float32 (the bf16 values, exactly), and the servers
        keep float32 parameters and state and sum in float32, as PyTorch
        FSDP's ``MixedPrecision(param_dtype=bf16, reduce_dtype=bf16)``. Part
        of the spec and its hash: workers of another dtype are refused."""
        if dtype not in WIRE_DTYPES:
            raise InvalidArgument("wire dtype %r is not one of %s"
                                  % (dtype, ", ".join(WIRE_DTYPES)))
        self._check(lib.fsps_spec_set_wire_dtype(self._ptr, dtype.encode()),
                    "wire dtype %r refused" % (dtype,))
        return self

    @property
    def wire_dtype(self):
        """The wire dtype, "fp32" or "bf16"."""
        return ffi.string(lib.fsps_spec_wire_dtype(self._ptr)).decode()

    def _check(self, rc, what):
        """Raises InvalidArgument when libfsps refused a builder call. The
        C spec keeps its first refusal for good (validate() and declare()
        report it), so say why, and that this spec cannot be mended."""
        if rc == 0:
            return
        if self._refused is not None:
            raise InvalidArgument("%s; this spec already holds an earlier "
                                  "refusal (%s): build a new one"
                                  % (what, self._refused))
        msg = ffi.new("char[]", 512)
        lib.fsps_spec_validate(self._ptr, msg, 512)  # reports the refusal
        self._refused = ffi.string(msg).decode(errors="replace")
        raise InvalidArgument("%s: %s; the spec keeps this error "
                              "(validate() and declare() report it): build "
                              "a new one" % (what, self._refused))

    def add_layer(self, name, tensors=None, init="zeros", a=0.0, b=0.0):
        """Appends a layer named name; its index is ``len(spec)`` before
        the call. tensors (a dict name -> shape, or a list of ``(name,
        shape)``) are added with init, a and b as in ``add_tensor``; more
        can follow with ``add_tensor``."""
        key = _name(name, "layer name")
        self._check(lib.fsps_spec_add_layer(self._ptr, key),
                    "layer name %r refused" % (name,))
        self.layers.append(Layer(name))
        items = tensors.items() if isinstance(tensors, dict) else \
            (tensors or ())
        for item in items:
            if not isinstance(item, tuple) or len(item) != 2:
                raise TypeError("tensors must be a dict name -> shape or a "
                                "list of (name, shape), not %r" % (tensors,))
            self.add_tensor(item[0], item[1], init=init, a=a, b=b)
        return self

    def add_tensor(self, name, shape, init="zeros", a=0.0, b=0.0):
        """Appends a tensor of the given shape (PyTorch's order: ``(out,
        in)`` for a weight) to the last layer. init: "zeros", "constant"
        (value a), "uniform" (a, b), "normal" (mean a, std b),
        "xavier_uniform" (gain a, 0 = 1), "he_uniform", or "client" (values
        given by ``Client.set_values``; all of a layer's tensors, or
        none)."""
        if not self.layers:
            raise InvalidArgument("add a layer before its tensors")
        key = _name(name, "tensor name")
        dims = _shape(shape, "tensor %r" % (name,))
        if init not in INITS:
            raise InvalidArgument("init %r is not one of %s"
                                  % (init, ", ".join(INITS)))
        cdims = ffi.new("uint64_t[]", dims)
        self._check(lib.fsps_spec_add_tensor(
            self._ptr, key, len(dims), cdims, init.encode(),
            _number(a, "a"), _number(b, "b")),
            "tensor %r %r (init %s) refused" % (name, dims, init))
        self.layers[-1].tensors.append((name, dims))
        return self

    def set_optimizer(self, name, lr=None, betas=None, **params):
        """Picks the optimizer the servers apply: "sgd", "adam", "adamw" or
        "adagrad", with PyTorch's defaults for every hyper-parameter not
        given (SGD needs lr, as in PyTorch). params: any of ``PARAMS``
        (momentum, dampening, nesterov, weight_decay, beta1, beta2, eps,
        lr_decay, initial_accumulator_value, and the schedule's); betas is
        PyTorch's ``(beta1, beta2)``."""
        if name not in OPTIMIZERS:
            raise InvalidArgument("optimizer %r is not one of %s"
                                  % (name, ", ".join(OPTIMIZERS)))
        if name == "sgd" and lr is None:
            raise InvalidArgument("sgd needs lr (PyTorch has no default)")
        default_lr = {"adam": 1e-3, "adamw": 1e-3, "adagrad": 1e-2}
        lr_value = _number(default_lr.get(name, 0.0) if lr is None else lr,
                           "lr")
        self._check(lib.fsps_spec_set_optimizer(self._ptr, name.encode(),
                                                lr_value),
                    "optimizer %s with lr %r refused" % (name, lr))
        self.optimizer = name
        self.params = {"lr": lr_value}
        if betas is not None:
            if len(betas) != 2:
                raise InvalidArgument("betas must be (beta1, beta2)")
            params["beta1"], params["beta2"] = betas
        for key, value in params.items():
            self.set_param(key, value)
        return self

    def set_param(self, key, value):
        """Sets one hyper-parameter by name (see ``PARAMS``); bools are
        taken for nesterov."""
        if key not in PARAMS:
            raise InvalidArgument("unknown hyper-parameter %r (known: %s)"
                                  % (key, ", ".join(PARAMS)))
        if isinstance(value, bool):
            value = int(value)
        number = _number(value, key)
        self._check(lib.fsps_spec_set_param(self._ptr, key.encode(), number),
                    "%s = %r refused" % (key, value))
        self.params[key] = number
        return self

    def set_schedule(self, name, **params):
        """Picks the learning-rate schedule: "constant", "step" (step_size,
        gamma) or "cosine" (t_max, eta_min), with optional warmup_steps and
        warmup_start_factor."""
        if name not in SCHEDULES:
            raise InvalidArgument("schedule %r is not one of %s"
                                  % (name, ", ".join(SCHEDULES)))
        self._check(lib.fsps_spec_set_schedule(self._ptr, name.encode()),
                    "schedule %r refused" % (name,))
        for key, value in params.items():
            self.set_param(key, value)
        return self

    def validate(self):
        """Makes the servers' checks here: raises fsps.InvalidArgument
        saying what is wrong, or returns the spec."""
        msg = ffi.new("char[]", 512)
        if lib.fsps_spec_validate(self._ptr, msg, 512) != 0:
            raise InvalidArgument(ffi.string(msg).decode(errors="replace"))
        return self

    def __len__(self):
        return lib.fsps_spec_num_layers(self._ptr)

    def layer_size(self, layer):
        """The number of float32 elements of layer (an index)."""
        return int(lib.fsps_spec_layer_size(self._ptr, self._layer(layer)))

    def _layer(self, layer):
        return layer_index(layer, len(self.layers))

    def split(self, layer, flat):
        """The tensors of layer in flat (its values, e.g. a View from
        Client.forward, or an ndarray of the layer's size) as a dict name
        -> array of the tensor's shape, each a view of flat (no copy; a
        View's slices keep its lease)."""
        layer = self._layer(layer)
        size = self.layers[layer].size
        if getattr(flat, "shape", None) != (size,):
            raise InvalidArgument("layer %d is a flat array of %d elements, "
                                  "not %r" % (layer, size,
                                              getattr(flat, "shape", flat)))
        out, at = {}, 0
        for name, shape in self.layers[layer].tensors:
            n = math.prod(shape)
            out[name] = flat[at:at + n].reshape(shape)
            at += n
        return out

    @property
    def hash(self):
        """The spec's stable 64-bit hash, which the servers compare."""
        return int(lib.fsps_spec_hash(self._ptr))

    def __repr__(self):
        return ("fsps.Spec(seed=%d, layers=%r, optimizer=%r, params=%r, "
                "wire_dtype=%r)" % (self.seed, [l.name for l in self.layers],
                                    self.optimizer, self.params,
                                    self.wire_dtype))
