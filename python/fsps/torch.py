"""fsps.torch: train a PyTorch module fully sharded on fsps servers.

``shard(module, servers=..., rank=..., world=..., optimizer=...)`` turns
each *wrap unit* of the module (by default every submodule that holds
parameters itself) into one fsps layer whose tensors are the unit's
parameters, with their names and shapes. Rank 0 declares the model with
the module's own initial values (client-given values); the other ranks
attach and take rank 0's values. A training step is::

    loss = loss_fn(model(x), y)   # each unit gathered just before it runs
    loss.backward()               # gathered again, gradients pushed
    model.step()                  # waits for the pushes; no local optimizer

Just in time, both ways: a forward pre-hook gathers the unit's parameters
(libfsps's scheduler has the next unit's gather in flight meanwhile), and
after the unit's forward they are freed when ``reshard_after_forward``;
a hook on the unit's outputs' gradients gathers them again before the
unit's backward runs; hooks on its parameters' gradients push the unit's
gradient as soon as all of them exist, while earlier units' backward
runs. The optimizer runs on the servers.

How autograd never reads freed memory: each unit's parameters are views of
one flat tensor of the unit. Freeing resizes that tensor's storage to 0
bytes and points every parameter's ``.data`` at an empty placeholder, so
code touching a freed parameter gets a size error, not stale memory. The
tensors autograd saved in forward are views of the flat storage (or the
parameters themselves, which it reads through ``.data``); before any of
the unit's backward runs, the output-gradient hook resizes the storage
back, copies the gathered values in and re-points ``.data``: the saved
views see the values they were computed from (FSDP's storage trick).

Buffers (BatchNorm's running statistics) are not sharded: each worker keeps
its own. Parameters that do not require grad stay local as well.
"""
import ctypes
import math
import resource

import numpy as np
import torch

from . import errors
from .client import Client
from .spec import Spec

OPTIMIZER_NAMES = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam",
                   torch.optim.AdamW: "adamw", torch.optim.Adagrad: "adagrad"}
# torch.optim's defaults that fsps's optimizers know, by fsps's names.
_KNOWN = {"lr", "momentum", "dampening", "nesterov", "weight_decay", "betas",
          "eps", "lr_decay", "initial_accumulator_value"}
# Flags of torch.optim that change nothing in the update fsps computes.
_IGNORED = {"foreach", "differentiable", "capturable", "fused"}


def _optimizer_args(optimizer):
    """(name, hyper-parameters) from a name, a (name, dict) pair, or a
    torch.optim optimizer (its one param group's settings)."""
    if isinstance(optimizer, str):
        return optimizer, {}
    if isinstance(optimizer, tuple) and len(optimizer) == 2:
        return optimizer[0], dict(optimizer[1])
    if isinstance(optimizer, torch.optim.Optimizer):
        name = OPTIMIZER_NAMES.get(type(optimizer))
        if name is None:
            raise errors.InvalidArgument(
                "fsps runs SGD, Adam, AdamW and Adagrad on the servers, not "
                "%s" % type(optimizer).__name__)
        groups = optimizer.param_groups
        hp = {k: v for k, v in groups[0].items() if k != "params"}
        if any({k: v for k, v in g.items() if k != "params"} != hp
               for g in groups[1:]):
            raise errors.InvalidArgument(
                "param groups with different settings: fsps applies one "
                "optimizer setting to the whole model")
        return name, _torch_settings(hp)
    raise TypeError("optimizer must be a name, (name, {hyper-parameters}) "
                    "or a torch.optim optimizer, not %r" % (optimizer,))


def _torch_settings(hp):
    if hp.get("amsgrad") or hp.get("maximize"):
        raise errors.InvalidArgument("amsgrad and maximize are not "
                                     "supported by fsps's optimizers")
    hp = {k: v for k, v in hp.items()
          if k not in _IGNORED and k not in ("amsgrad", "maximize")}
    unknown = set(hp) - _KNOWN
    if unknown:
        raise errors.InvalidArgument("optimizer settings fsps does not know: "
                                     + ", ".join(sorted(unknown)))
    return hp


CONTAINERS = (torch.nn.Sequential, torch.nn.ModuleList, torch.nn.ModuleDict)


def children_policy(root):
    """The default wrap policy: every child of the root that holds
    parameters is a unit, where containers (Sequential, ModuleList,
    ModuleDict) stand for their children. A unit covers its whole subtree,
    so modules that use their children's parameters without calling them
    (nn.MultiheadAttention and its out_proj) stay whole."""
    chosen = set()

    def take(m):
        for child in m.children():
            if isinstance(child, CONTAINERS):
                take(child)
            elif any(True for _ in child.parameters()):
                chosen.add(id(child))
    take(root)
    return lambda m: id(m) in chosen


def wrap_classes(*classes):
    """A wrap policy like FSDP's transformer_auto_wrap_policy: modules of
    these classes are units (the rest goes to the enclosing unit, finally
    the root)."""
    return lambda m: isinstance(m, classes)


class Unit:
    """One wrap unit, one fsps layer: a module and the parameters it owns.

    Attributes:
        index: the fsps layer index.
        name: the module's qualified name ("" for the root).
        module: the torch module.
        params: ``(name, parameter)`` pairs, names relative to the root.
        size: float32 elements in all.
    """

    def __init__(self, index, name, module, params):
        self.index, self.name, self.module = index, name, module
        self.params = params
        self.shapes = [tuple(p.shape) for _, p in params]
        self.size = sum(p.numel() for _, p in params)
        self.flat = torch.empty(self.size, dtype=torch.float32)
        self.resident = False  # flat holds the parameters
        self.grad = None  # the libfsps gradient buffer (a View) in backward
        self.pending = 0  # parameter gradients still to come
        self.got = set()  # offsets of the gradients that came
        self.in_backward = False
        self.done = False  # gradient pushed this step
        self.hooks = []

    def views(self):
        """(offset, parameter) with parameter views of flat."""
        at = 0
        for (_, p), shape in zip(self.params, self.shapes):
            n = math.prod(shape)
            yield at, p, self.flat[at:at + n].view(shape)
            at += n

    def load(self, values):
        """Makes flat hold values (a NumPy array of size) and points the
        parameters at it."""
        storage = self.flat.storage()
        if storage.size() != self.size:
            storage.resize_(self.size)
        # flat.numpy() would pin the storage's size: a plain memmove
        src = np.ascontiguousarray(values.view(np.ndarray), np.float32)
        assert src.size == self.size
        ctypes.memmove(self.flat.data_ptr(), src.ctypes.data, src.nbytes)
        for _, p, view in self.views():
            p.data = view
        self.resident = True

    def free(self):
        """Gives the flat's memory back; parameters become empty."""
        for _, p in self.params:
            p.grad = None
            p.data = _EMPTY
        self.flat.storage().resize_(0)
        self.resident = False


_EMPTY = torch.empty(0, dtype=torch.float32)


def find_units(module, wrap=None):
    """The wrap units of module, in the order their modules are met in a
    depth-first walk (children before their parent, which gets what its
    unit children did not take; the root takes what is left). wrap(m) ->
    bool picks the modules that become units (default:
    ``children_policy(module)``). Raises ValueError for a module without
    trainable parameters, a non-float32 parameter, or a parameter shared
    by two units (tied weights: choose a wrap that keeps their users in one
    unit, e.g. leave both to the root)."""
    wrap = wrap or children_policy(module)
    names = {id(p): n for n, p in module.named_parameters()}
    order, unit_of = [], {}  # unit modules children first; param -> unit

    def visit(m, unit, is_root):
        if is_root or wrap(m):
            unit = m
        for child in m.children():
            visit(child, unit, False)
        if unit is m:
            order.append(m)
        for p in m.parameters(recurse=False):
            if not p.requires_grad:
                continue
            if unit_of.setdefault(id(p), unit) is not unit:
                raise ValueError(
                    "parameter %r is used by modules of two wrap units "
                    "(tied weights): pass a wrap policy that keeps all its "
                    "users in one unit" % names[id(p)])

    visit(module, None, True)
    qualified = {id(m): n for n, m in module.named_modules()}
    units = []
    for m in order:
        params = [(names[id(p)], p) for p in _unique(module.parameters())
                  if unit_of.get(id(p)) is m]
        if params:
            units.append(Unit(len(units), qualified[id(m)], m, params))
    if not units:
        raise ValueError("the module has no trainable parameters to shard")
    for u in units:
        for name, p in u.params:
            if p.dtype != torch.float32:
                raise ValueError("parameter %r is %s: fsps shards float32 "
                                 "parameters" % (name, p.dtype))
    return units


def _unique(params):
    seen = set()
    for p in params:
        if id(p) not in seen:
            seen.add(id(p))
            yield p


def spec_for(units, optimizer, schedule=None, wire_dtype="fp32"):
    """The fsps.Spec of the units (layer per unit, init "client")."""
    spec = Spec(wire_dtype=wire_dtype)
    for u in units:
        spec.add_layer(u.name or "root", [(n, s) for (n, _), s in
                                          zip(u.params, u.shapes)],
                       init="client")
    name, hp = _optimizer_args(optimizer)
    spec.set_optimizer(name, **hp)
    if schedule is not None:
        sname, sp = (schedule, {}) if isinstance(schedule, str) else schedule
        spec.set_schedule(sname, **sp)
    return spec


def shard(module, servers, rank=0, world=1, optimizer="adam", schedule=None,
          wrap=None, wire_dtype="fp32", **client_options):
    """Shards module's parameters on the fsps servers; returns the
    ShardedModule that trains it. See the module's docstring.

    Arguments:
        module: a torch.nn.Module with float32 parameters.
        servers, rank, world: as for fsps.Client.
        optimizer: "adam", ("sgd", {"lr": 0.1, "momentum": 0.9}), or a
            torch.optim optimizer (SGD, Adam, AdamW, Adagrad) whose settings
            are copied; it is never stepped.
        schedule: None, "constant", ("step", {"step_size":, "gamma":}) or
            ("cosine", {"t_max":, "eta_min":}), with optional warmup_steps
            and warmup_start_factor.
        wrap: wrap policy, module -> bool (default: the root's children,
            ``children_policy``; ``wrap_classes(Block)`` for one unit per
            transformer block).
        wire_dtype: "fp32", or "bf16" to gather parameters and push
            gradients as bfloat16, as FSDP's ``MixedPrecision(param_dtype=
            torch.bfloat16, reduce_dtype=torch.bfloat16)``: the module still
            computes in float32 on the bf16 values, the servers keep float32
            master parameters and sum in float32 (``fsps.Spec``).
        client_options: the other fsps.Client arguments (mode, prefetch,
            token or token_file for servers with --auth-tokens,
            reshard_after_forward, timeout, retries, ...).
    """
    return ShardedModule(module, servers, rank, world, optimizer, schedule,
                         wrap, client_options, wire_dtype=wire_dtype)


class ShardedModule(torch.nn.Module):
    """A module whose parameters live on fsps servers. Call it as the
    module; after ``loss.backward()`` call ``step()``. Under
    ``torch.no_grad()`` (evaluation) a call gathers each unit at the
    current version and frees it after use, outside any step.

    Attributes:
        module: the wrapped module.
        units: its wrap units (``Unit``), one fsps layer each.
        client: the fsps.Client.
        spec: the fsps.Spec declared.
        step_index: the step the next forward belongs to (its parameters
            are version step_index).
    """

    def __init__(self, module, servers, rank, world, optimizer, schedule,
                 wrap, client_options, wire_dtype="fp32"):
        super().__init__()
        self.module = module
        self.units = find_units(module, wrap)
        self.spec = spec_for(self.units, optimizer, schedule, wire_dtype)
        self.reshard = client_options.get("reshard_after_forward", True)
        self.prefetch = client_options.get("prefetch", 1)
        self.client = Client(servers, rank=rank, world=world,
                             **client_options)
        try:
            self._join(rank)
        except BaseException:
            self.client.close()
            raise
        self._state = "idle"  # idle | forward | backward
        for u in self.units:
            u.free()  # the module's own copies go: the servers have them
            self._hook(u)

    def _join(self, rank):
        from . import tune_malloc
        tune_malloc()  # freed flats are reused without page faults
        if rank == 0:
            self.client.declare(self.spec)
            for u in self.units:
                values = torch.cat([p.detach().reshape(-1)
                                    for _, p in u.params])
                self.client.set_values(u.index, values.numpy())
        else:
            try:
                self.client.attach(self.spec)
            except errors.FailedPrecondition as e:
                raise errors.FailedPrecondition(
                    e.message + ": every rank must shard the same module "
                    "(parameter names and shapes, wrap policy, optimizer)"
                ) from None
        self.step_index = self.client.recover()

    # ---- hooks ----

    def _hook(self, u):
        u.hooks.append(u.module.register_forward_pre_hook(
            lambda m, args: self._before_forward(u)))
        u.hooks.append(u.module.register_forward_hook(
            lambda m, args, out: self._after_forward(u, out)))
        for at, (_, p) in zip(self._offsets(u), u.params):
            u.hooks.append(p.register_hook(
                lambda g, u=u, at=at: self._on_grad(u, at, g)))

    @staticmethod
    def _offsets(u):
        at = 0
        for shape in u.shapes:
            yield at
            at += math.prod(shape)

    def _before_forward(self, u):
        if not torch.is_grad_enabled():
            if not u.resident:
                values, _ = self.client.gather(u.index, self.step_index)
                u.load(values)
            return
        if self._state != "forward":
            raise RuntimeError("fsps.torch: call the ShardedModule, not its "
                               "inner module, to train")
        if not u.resident:
            view = self.client.forward(u.index)
            u.load(view)
            self.client.forward_done(u.index)

    def _after_forward(self, u, out):
        if not torch.is_grad_enabled():
            u.free()
            return
        for t in _tensors(out):
            if t.requires_grad:
                t.register_hook(lambda g, u=u: self._before_backward(u))
        # Backward starts with the last unit and the `prefetch` before it:
        # libfsps keeps those gathered (as the root's unit, used throughout),
        # so their flats stay too, which saves a copy and costs no memory.
        kept = u.index + 1 + self.prefetch >= len(self.units) or \
            u.module is self.module
        if self.reshard and not kept:
            u.free()

    def _before_backward(self, u):
        self._state = "backward"
        self._free_done()
        if u.done:
            raise self._second_backward(u)
        if u.in_backward:
            return
        u.in_backward = True
        u.pending = len(u.params)
        u.got = set()
        buf = self.client.backward_inplace(u.index)
        if not u.resident:
            u.load(buf)
        u.grad = buf

    def _second_backward(self, u):
        return RuntimeError(
            "fsps.torch: unit %r got a second gradient in step %d: one "
            "backward per step (accumulate in the loss instead)"
            % (u.name or "root", self.step_index))

    def _on_grad(self, u, at, grad):
        if u.done:
            raise self._second_backward(u)
        if not u.in_backward:  # a gradient whose unit's output had none
            self._before_backward(u)
        n = grad.numel()
        u.grad[at:at + n] = grad.detach().reshape(-1).numpy()
        u.got.add(at)
        u.pending -= 1
        if u.pending == 0:
            self._push(u)

    def _push(self, u):
        u.grad = None
        self.client.backward_done(u.index)
        u.in_backward, u.done = False, True

    def _free_done(self):
        """Frees the units whose gradients went (their last parameter's
        AccumulateGrad ran after the hook that pushed them)."""
        for v in self.units:
            if v.done and v.resident:
                v.free()

    # ---- the step ----

    def forward(self, *args, **kwargs):
        if torch.is_grad_enabled():
            if self._state != "idle":
                raise RuntimeError(
                    "fsps.torch: step %d already ran forward; call "
                    "loss.backward() and step() before the next training "
                    "forward (or evaluate under torch.no_grad())"
                    % self.step_index)
            self.client.step_begin(self.step_index)
            self._state = "forward"
        return self.module(*args, **kwargs)

    def step(self):
        """Ends the step after loss.backward(): pushes a zero gradient for
        any unit that got none (its parameters took no part), waits until
        every gradient reached the servers, and moves to the next step."""
        if self._state != "backward":
            raise RuntimeError(
                "fsps.torch: step() needs a forward and loss.backward() "
                "first (step %d is %s)" % (self.step_index, self._state))
        for u in self.units:
            if not u.done:
                if not u.in_backward:
                    self._before_backward(u)
                _zero_missing(u)
                self._push(u)
        self.client.step_end()
        for u in self.units:
            u.done = False
            if u.resident:
                u.free()
        self._state = "idle"
        self.step_index += 1

    def recover(self):
        """After a failed step (an fsps.Error from forward, backward or
        step: a server down, restarted or rolled back), brings the cluster
        back to a step every worker can go on from (fsps_recover) and
        drops what the failed step left; returns that step."""
        for u in self.units:
            u.in_backward = u.done = False
            u.grad = None
            if u.resident:
                u.free()
        self._state = "idle"
        self.step_index = self.client.recover()
        return self.step_index

    def full_state_dict(self):
        """The trained parameters gathered at the current version, as a
        dict name -> tensor (copies), plus the module's local buffers: what
        ``module.load_state_dict`` takes, e.g. for serving."""
        out = {}
        for u in self.units:
            values, _ = self.client.gather(u.index, self.step_index)
            at = 0
            for (name, _), shape in zip(u.params, u.shapes):
                n = math.prod(shape)
                out[name] = torch.from_numpy(values[at:at + n].copy()) \
                    .view(shape)
                at += n
        for name, b in self.module.named_buffers():
            out[name] = b.detach().clone()
        return out

    def close(self):
        """Closes the client (the servers keep the model)."""
        for u in self.units:
            for h in u.hooks:
                h.remove()
        self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _zero_missing(u):
    """Zeroes the gradient buffer where a parameter's gradient never came
    (the buffer held the parameters: the gradient is written over them)."""
    for at, shape in zip(ShardedModule._offsets(u), u.shapes):
        if at not in u.got:
            u.grad[at:at + math.prod(shape)] = 0.0
    u.pending = 0


def _tensors(out):
    """The tensors in a module's output (a tensor, or nested tuples,
    lists and dicts of them)."""
    if isinstance(out, torch.Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for o in out:
            yield from _tensors(o)
    elif isinstance(out, dict):
        for o in out.values():
            yield from _tensors(o)


def peak_rss_bytes():
    """This process's peak resident memory (ru_maxrss), in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
