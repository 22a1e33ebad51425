"""fsps.torch against real servers: W = 2 workers of batch b end where one
plain PyTorch process of batch 2b ends (10 steps, SGD and Adam, a CNN and
a transformer); with --deterministic servers the result is bit-identical
for S = 1, 2, 3; and every bad input is a clear error, never a hang."""
import os
import sys
import threading

import numpy as np
import pytest

import fsps

torch = pytest.importorskip(
    "torch", reason="python3-torch is missing: scripts/setup.sh installs it")
import fsps.torch as ft  # noqa: E402

# The models are the examples' own (examples/torch_*.py).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..",
                                "examples"))
from torch_char_lm import Block, TinyLM  # noqa: E402
from torch_fashion_cnn import CNN  # noqa: E402

STEPS = 10
OPTIMIZERS = {"sgd": (("sgd", {"lr": 0.1, "momentum": 0.9}),
                      lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
              "adam": (("adam", {"lr": 0.01}),
                       lambda p: torch.optim.Adam(p, lr=0.01))}


def cnn_case(batch):
    def make():
        torch.manual_seed(0)
        return CNN(width=4, hidden=16, batch_norm=False)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(STEPS, batch, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (STEPS, batch), generator=g)

    def loss(model, t, lo, hi):
        return torch.nn.functional.cross_entropy(model(x[t, lo:hi]),
                                                 y[t, lo:hi])
    return make, loss


def lm_case(batch, tied=False):
    def make():
        torch.manual_seed(0)
        return TinyLM(vocab=20, d=16, heads=2, context=16, tied=tied)
    g = torch.Generator().manual_seed(2)
    text = torch.randint(0, 20, (STEPS, batch, 17), generator=g)

    def loss(model, t, lo, hi):
        seq = text[t, lo:hi]
        logits = model(seq[:, :-1])
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), seq[:, 1:].reshape(-1))
    return make, loss


def reference(make, loss, batch, torch_opt):
    model = make()
    opt = torch_opt(model.parameters())
    for t in range(STEPS):
        opt.zero_grad()
        loss(model, t, 0, batch).backward()
        opt.step()
    return {k: v.detach() for k, v in model.named_parameters()}


def train_sharded(addr, make, loss, batch, world, optimizer, **kw):
    """world workers, each a thread with its own client and model, each
    training on its own part of every batch; returns rank 0's gathered
    parameters."""
    out, failures = {}, []
    # Built here, one after the other: torch's global generator is not
    # for threads drawing at once.
    models = [make() for _ in range(world)]

    def worker(rank):
        try:
            with ft.shard(models[rank], addr, rank=rank, world=world,
                          optimizer=optimizer, timeout=60, **kw) as model:
                b = batch // world
                for t in range(STEPS):
                    loss(model, t, rank * b, (rank + 1) * b).backward()
                    model.step()
                out[rank] = model.full_state_dict()
        except BaseException as e:  # reported by the test's thread
            failures.append(e)
    threads = [threading.Thread(target=worker, args=(r,))
               for r in range(world)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=300)
    assert not failures, failures
    assert not any(th.is_alive() for th in threads), "a worker hung"
    return out[0]


def assert_close(got, want, rel=1e-5, elementwise=1e-4):
    """Each tensor within rel of the reference as a whole (the norm of the
    difference over the reference's norm), and no element off by more than
    elementwise of the tensor's largest value: Adam turns the rounding
    noise of a different summation order into relative noise of its own on
    elements whose gradient is near zero, so single elements may stray a
    little further than the tensor does."""
    for name, w in want.items():
        d = got[name] - w
        whole = (d.norm() / w.norm()).item()
        worst = (d.abs().max() / w.abs().max()).item()
        assert whole <= rel and worst <= elementwise, (
            "%s: relative error %.3g (largest element's %.3g)"
            % (name, whole, worst))


@pytest.mark.parametrize("opt", sorted(OPTIMIZERS))
@pytest.mark.parametrize("model", ["cnn", "lm", "lm_tied"])
def test_two_workers_equal_one_process_of_twice_the_batch(cluster, model,
                                                          opt):
    case = {"cnn": cnn_case, "lm": lm_case,
            "lm_tied": lambda b: lm_case(b, tied=True)}[model](8)
    kw = {"wrap": ft.wrap_classes(Block)} if model == "lm_tied" else {}
    spec_opt, torch_opt = OPTIMIZERS[opt]
    want = reference(*case, 8, torch_opt)
    got = train_sharded(cluster(S=2, W=2).addr, *case, 8, 2, spec_opt, **kw)
    start = dict(case[0]().named_parameters())
    assert any(not torch.equal(want[k], start[k]) for k in want)
    assert_close(got, want)


def test_deterministic_servers_bit_identical_for_any_S(cluster):
    case = lm_case(8)
    results = []
    for S in (1, 2, 3):
        addr = cluster(S, 2, "--deterministic").addr
        results.append(train_sharded(addr, *case, 8, 2, "adam"))
    for other in results[1:]:
        for name, value in results[0].items():
            assert torch.equal(value, other[name]), name


def test_bf16_wire_bit_identical_for_any_S(cluster):
    """fsps.torch passes wire_dtype to the spec; deterministic servers give
    the same bits for every S with bf16 too, and not fp32's."""
    case = lm_case(8)
    results = []
    for S in (1, 2, 3):
        addr = cluster(S, 2, "--deterministic").addr
        results.append(train_sharded(addr, *case, 8, 2, "adam",
                                     wire_dtype="bf16"))
    for other in results[1:]:
        for name, value in results[0].items():
            assert torch.equal(value, other[name]), name
    fp32 = train_sharded(cluster(2, 2, "--deterministic").addr, *case, 8, 2,
                         "adam")
    assert any(not torch.equal(fp32[k], v) for k, v in results[0].items())
    for v in results[0].values():  # what a gather gives: bf16 values
        assert torch.equal(v, v.to(torch.bfloat16).to(torch.float32))
    with ft.shard(case[0](), cluster().addr, wire_dtype="bf16",
                  timeout=30) as model:
        assert model.spec.wire_dtype == "bf16"
        assert model.client.wire_dtype == "bf16"


def test_units_follow_the_policy():
    units = ft.find_units(TinyLM(vocab=20, tied=False))
    # embed, each block (its attention's out_proj inside it), ln_f, head,
    # and the root's own pos.
    assert [u.name for u in units] == ["embed", "blocks.0", "blocks.1",
                                       "ln_f", "head", ""]
    assert [n for n, _ in units[-1].params] == ["pos"]
    assert "blocks.0.attn.out_proj.weight" in [n for n, _ in units[1].params]
    tied = ft.find_units(TinyLM(vocab=20),
                         wrap=ft.wrap_classes(Block))
    assert [u.name for u in tied] == ["blocks.0", "blocks.1", ""]
    assert {"embed.weight", "pos", "ln_f.weight"} <= \
        {n for n, _ in tied[-1].params}


def test_bad_modules_are_refused():
    with pytest.raises(ValueError, match="no trainable parameters"):
        ft.find_units(torch.nn.ReLU())
    with pytest.raises(ValueError, match="tied"):
        ft.find_units(TinyLM(vocab=20))
    with pytest.raises(ValueError, match="embed.weight.*tied"):
        # the embedding a unit, the head (same weight) left to the root
        ft.find_units(TinyLM(vocab=20),
                      wrap=ft.wrap_classes(torch.nn.Embedding))
    with pytest.raises(ValueError, match="float32"):
        ft.find_units(torch.nn.Linear(2, 2).double())
    with pytest.raises(fsps.InvalidArgument, match="RMSprop"):
        ft.spec_for(ft.find_units(torch.nn.Linear(2, 2)),
                    torch.optim.RMSprop(torch.nn.Linear(2, 2).parameters()))
    with pytest.raises(fsps.InvalidArgument, match="amsgrad"):
        ft.spec_for(ft.find_units(torch.nn.Linear(2, 2)),
                    ("adam", {"amsgrad": True}))


def test_optimizer_copied_from_torch():
    lin = torch.nn.Linear(2, 2)
    spec = ft.spec_for(ft.find_units(lin), torch.optim.AdamW(
        lin.parameters(), lr=0.003, betas=(0.8, 0.9), weight_decay=0.1))
    assert spec.optimizer == "adamw"
    assert spec.params == {"lr": 0.003, "beta1": 0.8, "beta2": 0.9,
                           "weight_decay": 0.1, "eps": 1e-8}


def test_frozen_parameters_stay_local(cluster):
    make, loss = cnn_case(4)

    def frozen():
        m = make()
        m.fc1.requires_grad_(False)
        return m
    with ft.shard(frozen(), cluster().addr, optimizer=("sgd", {"lr": 0.1}),
                  timeout=30) as model:
        assert "fc1" not in [u.name for u in model.units]
        before = model.module.fc1.weight.detach().clone()
        for t in range(2):
            loss(model, t, 0, 4).backward()
            model.step()
        assert torch.equal(model.module.fc1.weight, before)
        assert model.step_index == 2


def test_ranks_with_different_models_are_refused(cluster):
    addr = cluster(W=2).addr
    with ft.shard(CNN(width=4), addr, rank=0, world=2, timeout=30):
        with pytest.raises(fsps.FailedPrecondition,
                           match="holds model .*every rank must shard"):
            ft.shard(CNN(width=6), addr, rank=1, world=2, timeout=30)


def test_unreachable_servers_fail_fast():
    with pytest.raises((fsps.Unavailable, fsps.DeadlineExceeded)):
        ft.shard(CNN(), "127.0.0.1:1", retries=0, timeout=5)


def test_step_order_is_checked(cluster):
    make, loss = cnn_case(4)
    with ft.shard(make(), cluster().addr, timeout=30) as model:
        with pytest.raises(RuntimeError, match="loss.backward"):
            model.step()  # no forward
        out = loss(model, 0, 0, 4)
        with pytest.raises(RuntimeError, match="already ran forward"):
            loss(model, 0, 0, 4)
        with pytest.raises(RuntimeError, match="loss.backward"):
            model.step()  # forward, no backward
        out.backward(retain_graph=True)
        with pytest.raises(RuntimeError, match="second gradient"):
            out.backward()
        model.step()
        assert model.step_index == 1
        # Freed parameters hold nothing; evaluation gathers them.
        assert model.module.fc2.weight.numel() == 0
        with torch.no_grad():
            logits = model(torch.zeros(2, 1, 28, 28))
        assert logits.shape == (2, 10)
        assert model.module.fc2.weight.numel() == 0


def test_unused_unit_gets_a_zero_gradient(cluster):
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.Linear(3, 2)
            self.b = torch.nn.Linear(3, 2)

        def forward(self, x):
            return self.a(x)
    torch.manual_seed(0)
    with ft.shard(TwoHeads(), cluster().addr, optimizer=("sgd",
                  {"lr": 0.5}), timeout=30) as model:
        start = model.full_state_dict()
        model(torch.ones(1, 3)).sum().backward()
        model.step()
        after = model.full_state_dict()
        assert torch.equal(after["b.weight"], start["b.weight"])
        assert not torch.equal(after["a.weight"], start["a.weight"])


@pytest.mark.parametrize("options", [{"prefetch": 2},
                                     {"reshard_after_forward": False},
                                     {"prefetch": 0}])
def test_scheduling_options_change_nothing(cluster, options):
    """Prefetch depth and resharding decide when units are gathered and
    freed, never what is computed: bit-identical to the defaults."""
    case = lm_case(8)
    runs = [train_sharded(cluster(2, 2, "--deterministic").addr, *case, 8,
                          2, "adam", **kw) for kw in ({}, options)]
    for name, value in runs[0].items():
        assert torch.equal(value, runs[1][name]), name
