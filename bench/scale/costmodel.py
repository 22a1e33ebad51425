"""bench/scale/costmodel: the expected time of one BSP step of fsps from
first principles, its two constants fitted on a few measured points, and
its projection to larger clusters.

One step of worker r (DESIGN.md, "Data flow"): forward gathers every
layer (each gather draws 1/S of the layer from each of the S servers),
backward pushes every layer's gradient reduce-scattered (1/S of it to each
server), and the next step's first gather waits for the last push of every
worker (BSP). Every node has one full-duplex link of B bytes/s each way.
Per step and per worker, P_g bytes are gathered and P_p bytes pushed, so

  worker link:  P_g in (downlink), P_p out (uplink)
  server link:  W * P_g / S out (uplink), W * P_p / S in (downlink)

and, gathers and pushes taking turns (the push of layer 0, last of the
step, must end before the next step's gather of layer 0 can start):

  step = max(P_g, W P_g / S) / (eta B) + max(P_p, W P_p / S) / (eta B)
         + alpha + c * max(1, W / cores)

eta (<= 1) is the share of a link's raw TCP goodput B (measured in the
same run) that fsps's gRPC streams get, many flows sharing each link;
alpha is the fixed per-step cost (a round trip per layer and server for
each gather and push, the servers' optimizer, the BSP wait for the slowest
flow); c is one worker's compute per step, measured alone (--local), W
workers sharing `cores` cores. eta and alpha are fitted once by least
squares on a few points; everything else is measured.
"""


def link_terms(W, S, Pg, Pp, B):
    """(gather seconds, push seconds) at efficiency 1, and which link
    limits the step: "servers" when W / S > 1, else "workers"."""
    k = max(1.0, W / S)
    return Pg * k / B, Pp * k / B, "servers" if W > S else "workers"


def compute_term(W, c, cores):
    return c * max(1.0, W / cores)


def predict(fit, W, S, Pg, Pp, B, c, cores):
    """Predicted step seconds with fit = {"eta": .., "alpha": ..}."""
    g, p, _ = link_terms(W, S, Pg, Pp, B)
    return (g + p) / fit["eta"] + fit["alpha"] + compute_term(W, c, cores)


def fit(points, B, c, cores):
    """eta and alpha by least squares over points, each a dict with
    workers, servers, gathered and pushed bytes per worker step and the
    measured step_seconds. Two points or more; with one, alpha is 0."""
    xs, ys = [], []
    for p in points:
        g, q, _ = link_terms(p["workers"], p["servers"], p["pg"], p["pp"], B)
        xs.append(g + q)
        ys.append(p["step_seconds"] - compute_term(p["workers"], c, cores))
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        return {"eta": mx / my, "alpha": 0.0}
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    alpha = max(0.0, my - slope * mx)
    if alpha == 0.0:  # a negative fixed cost means none: refit through 0
        slope = sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs)
    return {"eta": 1.0 / slope, "alpha": alpha}


def min_servers(W, Pg, Pp, B, c, cores, fit, within=0.1):
    """The fewest servers S (a power of two up to W) whose step is within
    `within` of the step with S = W (no server link busier than a
    worker's)."""
    best = predict(fit, W, W, Pg, Pp, B, c, cores)
    S = 1
    while S < W and predict(fit, W, S, Pg, Pp, B, c, cores) > \
            (1 + within) * best:
        S *= 2
    return min(S, W)
