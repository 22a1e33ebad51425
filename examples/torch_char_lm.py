#!/usr/bin/python3
"""Train a small transformer language model, sharded on fsps servers by
fsps.torch, on a text every Debian system ships (the GPL, version 3), and
watch the loss fall.

The model: a character embedding, learned positions, attention blocks
(layer norm, causal self-attention, layer norm, MLP), a final layer norm
and an output head tied to the embedding. Each block is one fsps unit
(wrap_classes(Block)); the embedding, positions, final norm and the tied
head form the root's unit. Every worker runs this program with its rank:

  fsps-server --listen 127.0.0.1:7070 --num-servers 2 --index 0 --workers 2 &
  fsps-server --listen 127.0.0.1:7071 --num-servers 2 --index 1 --workers 2 &
  for r in 0 1; do python3 examples/torch_char_lm.py \\
      --servers 127.0.0.1:7070,127.0.0.1:7071 --rank $r --world 2 & done
"""
import argparse
import json
import sys
import time
from statistics import mean

import torch
from torch import nn

import fsps.torch

TEXT = "/usr/share/common-licenses/GPL-3"


class Block(nn.Module):
    """Pre-norm attention block: LN, causal self-attention, LN, MLP."""

    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        # No projection biases: the key bias's gradient is zero in exact
        # arithmetic, rounding noise in floats, which Adam would scale up
        # to lr-sized steps, different for every summation order.
        self.attn = nn.MultiheadAttention(d, heads, bias=False,
                                          batch_first=True)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(),
                                 nn.Linear(4 * d, d))

    def forward(self, x):
        t = x.shape[1]
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """Embedding, learned positions, blocks, final layer norm, output head
    (tied to the embedding, or not)."""

    def __init__(self, vocab, d=64, heads=4, layers=2, context=64,
                 tied=True):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        nn.init.normal_(self.embed.weight, std=0.02)  # small logits at first
        self.pos = nn.Parameter(torch.zeros(1, context, d))
        self.blocks = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)
        if tied:
            self.head.weight = self.embed.weight

    def forward(self, idx):
        x = self.embed(idx) + self.pos[:, :idx.shape[1]]
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def batches(data, batch, context, rank, world, seed):
    """Random windows of the text: rank r takes every world-th of each
    draw (one generator for all ranks): its own part of the data."""
    g = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(data) - context - 1,
                               (batch * world,), generator=g)[rank::world]
        seq = torch.stack([data[s:s + context + 1] for s in starts])
        yield seq[:, :-1], seq[:, 1:]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="127.0.0.1:7070")
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--world", type=int, default=1)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch", type=int, default=16, help="per worker")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--text", default=TEXT)
    args = ap.parse_args()
    torch.set_num_threads(1)
    text = open(args.text, encoding="utf-8").read()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(c) for c in text], dtype=torch.long)
    torch.manual_seed(0)  # every rank builds the same model
    model = fsps.torch.shard(
        TinyLM(len(chars)), args.servers, rank=args.rank, world=args.world,
        optimizer=("adamw", {"lr": args.lr, "weight_decay": 0.01}),
        wrap=fsps.torch.wrap_classes(Block))
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) \
        if args.rank == 0 else (lambda *a: None)
    say("%d characters, vocabulary %d, units %s" % (
        len(text), len(chars), [u.name or "root" for u in model.units]))
    t0, losses = time.monotonic(), []
    source = batches(data, args.batch, 64, args.rank, args.world, seed=1)
    for step in range(args.steps):
        x, y = next(source)
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.reshape(-1, len(chars)),
                                           y.reshape(-1))
        loss.backward()
        model.step()
        losses.append(loss.item())
        if step % 50 == 0 or step == args.steps - 1:
            say("step %4d: loss %.3f (mean of the last 20: %.3f)"
                % (step, losses[-1], mean(losses[-20:])))
    if args.rank == 0:
        print(json.dumps({"event": "done", "first_loss": round(losses[0], 4),
                          "last_loss": round(mean(losses[-20:]), 4),
                          "steps": args.steps,
                          "seconds": round(time.monotonic() - t0, 1)}),
              flush=True)
    model.close()


if __name__ == "__main__":
    main()
