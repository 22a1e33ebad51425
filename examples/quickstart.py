#!/usr/bin/python3
"""Fit y = 2a - b + 0.5c + 3d + 1 by gradient descent, the parameters held
by fsps servers: our own initial values, then steps through the scheduler.

Start the servers first, e.g. two of them:
  fsps-server --listen 127.0.0.1:7070 --num-servers 2 --index 0 &
  fsps-server --listen 127.0.0.1:7071 --num-servers 2 --index 1 &
  python3 examples/quickstart.py --servers 127.0.0.1:7070,127.0.0.1:7071
"""
import argparse

import numpy as np

import fsps

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--servers", default="127.0.0.1:7070", help="host:port,...")
ap.add_argument("--steps", type=int, default=60)
args = ap.parse_args()

rng = np.random.default_rng(0)
x = rng.standard_normal((256, 4)).astype(np.float32)
y = x @ np.array([2, -1, 0.5, 3], dtype=np.float32) + 1

spec = fsps.Spec()
spec.add_layer("linear", {"weight": (1, 4), "bias": (1,)}, init="client")
spec.set_optimizer("sgd", lr=0.1, momentum=0.5)

with fsps.Client(args.servers) as client:
    client.declare(spec)
    client.set_values(0, np.zeros(5, dtype=np.float32))  # our start
    for step in range(args.steps):
        with client.step(step):
            w = spec.split(0, client.forward(0))  # views: no copy
            err = x @ w["weight"][0] + w["bias"] - y
            client.forward_done(0)  # w is stale from here on
            g = spec.split(0, client.backward_inplace(0))
            g["weight"][0] = 2 * err @ x / len(x)  # dLoss/dweight
            g["bias"][0] = 2 * err.mean()
            client.backward_done(0)  # pushed to the servers
        if step % 20 == 0:
            print("step %2d: loss %.2e" % (step, (err ** 2).mean()))
    final, version = client.gather(0, min_version=args.steps)
    print("version %d: weight %s, bias %.2f"
          % (version, np.round(final[:4], 2), final[4]))
