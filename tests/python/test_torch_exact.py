"""The issue's "done when": from Python, a model whose version-0 values
come from the client (torch's own initial weights) trains through real
servers at S = 1, 2, 3, and after 5 steps its parameters equal those of
torch 1.13 training the same model with torch.optim, bit for bit, for
each optimizer. One worker (W = 1): the gradient the servers apply is
exactly the one torch computed. With the bf16 wire, the same holds against
torch doing what FSDP's MixedPrecision(param_dtype=bf16,
reduce_dtype=bf16) does: compute on the float32 master rounded to bf16,
round the gradient to bf16, step the float32 master with torch.optim."""
import numpy as np
import pytest

import fsps

torch = pytest.importorskip(
    "torch", reason="python3-torch is missing: scripts/setup.sh installs it")

STEPS = 5
# (fsps optimizer, its hyper-parameters as torch names them, torch's class)
OPTIMIZERS = {
    "sgd": ("sgd", {"lr": 0.1}, "SGD"),
    "sgd_momentum": ("sgd", {"lr": 0.1, "momentum": 0.9,
                             "weight_decay": 0.01}, "SGD"),
    "sgd_nesterov": ("sgd", {"lr": 0.05, "momentum": 0.8, "nesterov": True,
                             "dampening": 0.0}, "SGD"),
    "adam": ("adam", {"lr": 0.01, "weight_decay": 0.01}, "Adam"),
    "adam_defaults": ("adam", {}, "Adam"),
    "adamw": ("adamw", {"lr": 0.01, "betas": (0.8, 0.99),
                        "weight_decay": 0.05}, "AdamW"),
    "adagrad": ("adagrad", {"lr": 0.1, "lr_decay": 0.01,
                            "initial_accumulator_value": 0.1}, "Adagrad"),
}


def make_model():
    torch.manual_seed(7)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(),
                               torch.nn.Linear(5, 3))


def layers_of(model):
    return [model[0], model[2]]


def flat(layer, grad=False):
    ts = [layer.weight, layer.bias]
    ts = [t.grad if grad else t.detach() for t in ts]
    return torch.cat([t.reshape(-1) for t in ts]).numpy().astype(np.float32)


def loss_of(model, step):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(8, 6, generator=g)
    y = torch.randint(0, 3, (8,), generator=g)
    return torch.nn.functional.cross_entropy(model(x), y)


def reference(name, hp, steps):
    model = make_model()
    opt = getattr(torch.optim, name)(model.parameters(), **hp)
    for t in range(steps):
        opt.zero_grad()
        loss_of(model, t).backward()
        opt.step()
    return [flat(l) for l in layers_of(model)]


def bf16(t):
    """t rounded to bfloat16 and back (exact), as the bf16 wire does."""
    return t.to(torch.bfloat16).to(torch.float32)


def reference_bf16(name, hp, steps):
    """torch.optim on a float32 master; each step computes on a copy of it
    rounded to bf16 and hands the optimizer the gradient rounded to bf16.
    Returns the master rounded to bf16, as a gather sees it."""
    master, work = make_model(), make_model()
    opt = getattr(torch.optim, name)(master.parameters(), **hp)
    for t in range(steps):
        with torch.no_grad():
            for m, w in zip(master.parameters(), work.parameters()):
                w.copy_(bf16(m))
        work.zero_grad()
        loss_of(work, t).backward()
        for m, w in zip(master.parameters(), work.parameters()):
            m.grad = bf16(w.grad)
        opt.step()
    with torch.no_grad():
        for m in master.parameters():
            m.copy_(bf16(m))
    return [flat(l) for l in layers_of(master)]


def spec_for(model, optimizer, hp, wire_dtype="fp32"):
    spec = fsps.Spec(seed=1, wire_dtype=wire_dtype)
    for i, layer in enumerate(layers_of(model)):
        spec.add_layer("fc%d" % i, {"weight": tuple(layer.weight.shape),
                                    "bias": tuple(layer.bias.shape)},
                       init="client")
    return spec.set_optimizer(optimizer, **hp)


def load(layer, values):
    """Puts a gathered layer's values into the torch layer (a copy)."""
    with torch.no_grad():
        w, b = layer.weight, layer.bias
        data = torch.from_numpy(values.copy())
        w.copy_(data[:w.numel()].view_as(w))
        b.copy_(data[w.numel():])


def train_through_fsps(addr, optimizer, hp, steps, wire_dtype="fp32"):
    model = make_model()
    layers = layers_of(model)
    spec = spec_for(model, optimizer, hp, wire_dtype)
    with fsps.Client(addr, timeout=60) as c:
        c.declare(spec)
        for i, layer in enumerate(layers):
            c.set_values(i, flat(layer))
        for t in range(steps):
            with c.step(t):
                for i, layer in enumerate(layers):
                    load(layer, c.forward(i))
                    c.forward_done(i)
                model.zero_grad()
                loss_of(model, t).backward()
                for i in reversed(range(len(layers))):
                    _, grad = c.backward(i)
                    grad[:] = flat(layers[i], grad=True)
                    c.backward_done(i)
        return [c.gather(i, min_version=steps)[0] for i in range(len(layers))]


@pytest.mark.parametrize("S", [1, 2, 3])
@pytest.mark.parametrize("case", sorted(OPTIMIZERS))
def test_equals_torch_bit_for_bit(cluster, S, case):
    optimizer, hp, torch_name = OPTIMIZERS[case]
    want = reference(torch_name, hp, STEPS)
    got = train_through_fsps(cluster(S=S).addr, optimizer, hp, STEPS)
    start = [flat(l) for l in layers_of(make_model())]
    for i, (g, w) in enumerate(zip(got, want)):
        assert not np.array_equal(w, start[i]), "the model did not train"
        diff = np.flatnonzero(g.view(np.uint32) != w.view(np.uint32))
        assert diff.size == 0, (
            "layer %d differs from torch at %d of %d elements, first at %d: "
            "%r vs %r" % (i, diff.size, g.size, diff[0], g[diff[0]],
                          w[diff[0]]))


@pytest.mark.parametrize("S", [1, 2, 3])
@pytest.mark.parametrize("case", ["adam", "sgd_momentum"])
def test_bf16_wire_equals_torch_mixed_precision(cluster, S, case):
    optimizer, hp, torch_name = OPTIMIZERS[case]
    want = reference_bf16(torch_name, hp, STEPS)
    got = train_through_fsps(cluster(S=S).addr, optimizer, hp, STEPS,
                             wire_dtype="bf16")
    fp32 = reference(torch_name, hp, STEPS)
    for i, (g, w) in enumerate(zip(got, want)):
        assert not np.array_equal(w, bf16(torch.from_numpy(fp32[i])).numpy())
        diff = np.flatnonzero(g.view(np.uint32) != w.view(np.uint32))
        assert diff.size == 0, (
            "layer %d differs from torch at %d of %d elements, first at %d: "
            "%r vs %r" % (i, diff.size, g.size, diff[0], g[diff[0]],
                          w[diff[0]]))
