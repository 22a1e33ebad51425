#!/usr/bin/python3
"""Train a small CNN on Fashion-MNIST with fsps.torch: the parameters
sharded on fsps servers, each worker training on its own part of the data.

Every worker runs this program with its rank; rank 0 declares the model
and prints progress and the test accuracy after each epoch (stderr) and a
final JSON line (stdout); with --log-jsonl FILE it also writes the
progress and epoch lines fsps-worker --log-jsonl writes, which
scripts/plot.py draws. scripts/demo.sh --torch starts servers and workers for you; by hand:

  fsps-server --listen 127.0.0.1:7070 --num-servers 2 --index 0 --workers 2 &
  fsps-server --listen 127.0.0.1:7071 --num-servers 2 --index 1 --workers 2 &
  for r in 0 1; do python3 examples/torch_fashion_cnn.py \\
      --servers 127.0.0.1:7070,127.0.0.1:7071 --rank $r --world 2 & done
"""
import argparse
import gzip
import json
import os
import sys
import time

import numpy as np
import torch
from torch import nn

import fsps.torch

DATA = "/usr/share/datasets/fashion-mnist"


def load_idx(name):
    """An IDX file of the dataset-fashion-mnist package as a NumPy array."""
    with gzip.open(os.path.join(DATA, name)) as f:
        data = f.read()
    ndim = data[3]
    dims = np.frombuffer(data[4:4 + 4 * ndim], dtype=">u4")
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def load(split):
    """(images as normalised float32 N x 1 x 28 x 28, labels as int64)."""
    x = load_idx("%s-images-idx3-ubyte.gz" % split).astype(np.float32)
    x = (x / 255.0 - 0.2860) / 0.3530  # the training set's mean and std
    y = load_idx("%s-labels-idx1-ubyte.gz" % split).astype(np.int64)
    return torch.from_numpy(x).unsqueeze(1), torch.from_numpy(y)


class CNN(nn.Module):
    """Two conv layers (with batch norm or not), two linear layers."""

    def __init__(self, width=16, hidden=128, batch_norm=True):
        super().__init__()

        def conv(c_in, c_out):
            norm = [nn.BatchNorm2d(c_out)] if batch_norm else []
            return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), *norm,
                                 nn.ReLU(), nn.MaxPool2d(2))
        self.conv1 = conv(1, width)
        self.conv2 = conv(width, 2 * width)
        self.fc1 = nn.Linear(2 * width * 7 * 7, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        x = self.conv2(self.conv1(x)).flatten(1)
        return self.fc2(torch.relu(self.fc1(x)))


def accuracy(model, x, y, batch=1000):
    model.eval()
    correct = 0
    with torch.no_grad():  # gathers each unit at the current version
        for i in range(0, len(x), batch):
            correct += (model(x[i:i + batch]).argmax(1) == y[i:i + batch]) \
                .sum().item()
    model.train()
    return correct / len(x)


class JsonlLog:
    """fsps-worker's --log-jsonl lines: "progress" every tick, "epoch" at
    each epoch's end, with the mean loss over the epoch so far and this
    worker's samples/s since the start, as fsps-worker writes them. None
    writes nothing."""

    def __init__(self, path):
        self.f = open(path, "w") if path else None
        self.loss_sum, self.loss_n = 0.0, 0

    def add_loss(self, loss):
        self.loss_sum += loss
        self.loss_n += 1

    def write(self, event, epoch, step, samples, seconds, **extra):
        if self.f is None or self.loss_n == 0:
            return
        rec = {"event": event,
               "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "rank": 0, "epoch": epoch + 1, "step": step,
               "loss": round(self.loss_sum / self.loss_n, 6),
               "samples_per_s": round(samples / seconds, 3) if seconds > 0
               else 0.0,
               "seconds": round(seconds, 6)}
        rec.update(extra)
        self.f.write(json.dumps(rec) + "\n")
        self.f.flush()
        if event == "epoch":
            self.loss_sum, self.loss_n = 0.0, 0

    def close(self):
        if self.f is not None:
            self.f.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", default="127.0.0.1:7070")
    ap.add_argument("--rank", type=int, default=0)
    ap.add_argument("--world", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--batch", type=int, default=64, help="per worker")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads per worker")
    ap.add_argument("--progress-secs", type=float, default=5.0)
    ap.add_argument("--min-accuracy", type=float, default=None,
                    help="exit 1 if the final test accuracy is below")
    ap.add_argument("--log-jsonl", metavar="FILE",
                    help="rank 0 writes a JSON line per progress tick and "
                         "per epoch here, as fsps-worker does (for "
                         "scripts/plot.py)")
    ap.add_argument("--wire-dtype", choices=("fp32", "bf16"),
                    default=os.environ.get("FSPS_WIRE_DTYPE", "fp32"),
                    help="gather parameters and push gradients as fp32 or "
                         "bf16 ($FSPS_WIRE_DTYPE; fp32)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)  # every rank builds the same model
    x, y = load("train")
    tx, ty = load("t10k")
    steps_per_epoch = len(x) // (args.batch * args.world)
    model = fsps.torch.shard(
        CNN(), args.servers, rank=args.rank, world=args.world,
        optimizer=("adam", {"lr": args.lr}),
        schedule=("cosine", {"t_max": args.epochs * steps_per_epoch}),
        wire_dtype=args.wire_dtype)
    # Progress on stderr (rank 0 only); stdout is the final JSON line.
    log = (lambda *a: print(*a, file=sys.stderr, flush=True)) \
        if args.rank == 0 else (lambda *a: None)
    log("rank 0 of %d: %d units, %d parameters, %d steps an epoch"
        % (args.world, len(model.units), sum(u.size for u in model.units),
           steps_per_epoch))
    try:
        jsonl = JsonlLog(args.log_jsonl if args.rank == 0 else None)
    except OSError as e:
        sys.exit("cannot write --log-jsonl %s: %s" % (args.log_jsonl,
                                                      e.strerror))
    train_s, samples, acc, step = 0.0, 0, 0.0, 0
    for epoch in range(args.epochs):
        # One shuffle for all ranks (same seed); rank r takes every
        # world-th sample of it: each worker its own part of the data.
        order = torch.randperm(len(x), generator=torch.Generator()
                               .manual_seed(epoch))[args.rank::args.world]
        t0 = shown = time.monotonic()
        for i in range(steps_per_epoch):
            idx = order[i * args.batch:(i + 1) * args.batch]
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            model.step()
            samples += len(idx) * args.world
            step += 1
            jsonl.add_loss(loss.item())
            if time.monotonic() - shown >= args.progress_secs:
                shown = time.monotonic()
                jsonl.write("progress", epoch, step, samples // args.world,
                            train_s + shown - t0)
                log("epoch %d step %d/%d loss %.4f" % (epoch + 1, i + 1,
                                                      steps_per_epoch,
                                                      loss.item()))
        train_s += time.monotonic() - t0
        if args.rank == 0:
            acc = accuracy(model, tx, ty)
            log("epoch %d: test accuracy %.4f" % (epoch + 1, acc))
            jsonl.write("epoch", epoch, step, samples // args.world,
                        train_s, test_accuracy=acc)
    jsonl.close()
    if args.rank == 0:
        print(json.dumps({"event": "done", "test_accuracy": round(acc, 4),
                          "samples_per_s": round(samples / train_s, 1),
                          "peak_rss_bytes": fsps.torch.peak_rss_bytes()}),
              flush=True)
    model.close()
    if args.min_accuracy is not None and args.rank == 0 and \
            acc < args.min_accuracy:
        print("accuracy %.4f is below %.4f" % (acc, args.min_accuracy),
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
