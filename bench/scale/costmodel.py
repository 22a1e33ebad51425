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
step, must end before the next step's gather of layer 0 can start), with
g and p the two phases' times on the busiest link at B bytes/s:

  step = (g + p - omega * [W > S] * min(g, p)) / eta + alpha
         + c * max(1, W / cores)

B is a link's raw TCP goodput, measured in the same run; alpha the step
of one worker and one server with a model too small to load the links
(the per-call latencies of a step's gathers and pushes, the servers'
optimizer), measured; c one worker's compute per step alone (--local),
measured, W workers sharing `cores` cores. Two constants are fitted:
eta (<= 1), the share of B fsps's gRPC streams get, on points where a
worker's link is the busiest (W <= S); and omega, on points where the
servers' are (W > S): there workers drift out of phase, and a server's
uplink (gathers for some) and downlink (pushes from others) carry data at
once, up to the whole of the shorter phase (omega = 1).
"""


def link_terms(W, S, Pg, Pp, B):
    """(gather seconds, push seconds) on the busiest link at B bytes/s,
    and which links those are: "servers" when W > S, else "workers"."""
    k = max(1.0, W / S)
    return Pg * k / B, Pp * k / B, "servers" if W > S else "workers"


def compute_term(W, c, cores):
    return c * max(1.0, W / cores)


def link_seconds(fit, W, S, Pg, Pp, B):
    g, p, _ = link_terms(W, S, Pg, Pp, B)
    overlap = fit["omega"] * min(g, p) if W > S else 0.0
    return (g + p - overlap) / fit["eta"]


def predict(fit, W, S, Pg, Pp, B, c, cores):
    """Predicted step seconds; fit = {"eta", "omega", "alpha"}."""
    return (link_seconds(fit, W, S, Pg, Pp, B) + fit["alpha"] +
            compute_term(W, c, cores))


def fit(points, B, c, cores, alpha):
    """eta on the points with W <= S, then omega on those with W > S
    (each the mean of what each point says; omega 0 without such points).
    A point: workers, servers, pg and pp (bytes per worker step) and the
    measured step_seconds."""
    def link_part(p):
        return max(1e-9, p["step_seconds"] - alpha -
                   compute_term(p["workers"], c, cores))
    wb = [p for p in points if p["workers"] <= p["servers"]]
    sb = [p for p in points if p["workers"] > p["servers"]]
    if not wb:
        raise ValueError("fitting eta needs a point with W <= S")
    etas = []
    for p in wb:
        g, q, _ = link_terms(p["workers"], p["servers"], p["pg"], p["pp"], B)
        etas.append((g + q) / link_part(p))
    eta = sum(etas) / len(etas)
    omegas = []
    for p in sb:
        g, q, _ = link_terms(p["workers"], p["servers"], p["pg"], p["pp"], B)
        omegas.append((g + q - link_part(p) * eta) / min(g, q))
    omega = min(1.0, max(0.0, sum(omegas) / len(omegas))) if sb else 0.0
    return {"eta": eta, "omega": omega, "alpha": alpha}


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
