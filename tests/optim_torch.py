#!/usr/bin/python3
"""optim_torch.py: fsps's optimizer kernels (optim/, run by the optim_replay
driver) against Debian's torch.optim (python3-torch 1.13, CPU), bit for bit:
SGD, SGD with momentum (dampening, Nesterov), Adam, AdamW and Adagrad, with
hyper-parameters away from their defaults, six steps each, on random
parameters and gradients of odd lengths (vector bodies, scalar tails, and
one length torch splits between threads), and once more at one length
with NaN, infinities, signed zeros and denormals among them. Every step's
parameters and the optimizer state are compared as bit patterns, on each
instruction set the kernels run on this CPU (the driver is run under
FSPS_OPTIM_ISA=portable, avx2, avx512 in turn, and must report the one
asked for).

Skips (exit 77) only when torch cannot be imported.

Usage: optim_torch.py --driver PATH/optim_replay
"""
import argparse
import os
import subprocess
import sys

SKIP = 77
STEPS = 6
LENGTHS = (1, 5, 15, 17, 31, 257, 1001, 40009)
SPECIAL_LENGTH = 1003

# (name, fsps kind, torch class, torch kwargs): every value is a Python
# float or bool, passed to the driver as repr() (strtod reads it back exactly).
CASES = (
    ("sgd", "sgd", "SGD", dict(lr=0.037)),
    ("sgd_wd", "sgd", "SGD", dict(lr=0.037, weight_decay=0.013)),
    ("sgd_momentum", "sgd", "SGD",
     dict(lr=0.021, momentum=0.87, dampening=0.15, weight_decay=0.0071)),
    ("sgd_nesterov", "sgd", "SGD",
     dict(lr=0.011, momentum=0.93, nesterov=True, weight_decay=0.003,
          maximize=True)),
    ("adam", "adam", "Adam",
     dict(lr=0.0033, betas=(0.83, 0.9937), eps=1.3e-7, weight_decay=0.021)),
    ("adam_plain", "adam", "Adam",
     dict(lr=0.0071, betas=(0.71, 0.97), eps=3e-6, maximize=True)),
    ("adamw", "adamw", "AdamW",
     dict(lr=0.0041, betas=(0.88, 0.991), eps=2.2e-8, weight_decay=0.047)),
    ("adagrad", "adagrad", "Adagrad",
     dict(lr=0.052, lr_decay=0.013, weight_decay=0.0037,
          initial_accumulator_value=0.21, eps=1.7e-7)),
    ("adagrad_plain", "adagrad", "Adagrad", dict(lr=0.11, eps=3e-4)),
)

STATE_KEYS = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq"),
              "adamw": ("exp_avg", "exp_avg_sq"), "adagrad": ("sum",)}


def driver_args(kind, n, kwargs):
    """The optim_replay command line for one case."""
    args = [ARGS.driver, kind, str(n), str(STEPS)]
    for key, value in kwargs.items():
        if key == "betas":
            args += ["beta1=%r" % value[0], "beta2=%r" % value[1]]
        else:
            args.append("%s=%r" % (key, float(value)))
    return args


def isa_env(isa):
    return dict(os.environ, FSPS_OPTIM_ISA=isa)


def driver_isa(env):
    """(the instruction set the driver runs under env, those it supports,
    the compiler that built it)."""
    out = subprocess.run([ARGS.driver, "--isa"], check=True, env=env,
                         stdout=subprocess.PIPE, text=True).stdout
    fields = dict(f.split("=", 1) for f in out.split())
    return fields["isa"], fields["supported"].split(","), fields["compiler"]


def run_fsps(isa, kind, n, kwargs, p0, grads, nstate):
    """Every step's (params, state) from fsps's kernels on isa."""
    out = subprocess.run(driver_args(kind, n, kwargs), check=True,
                         input=p0.tobytes() + grads.tobytes(),
                         stdout=subprocess.PIPE, env=isa_env(isa)).stdout
    rows = np.frombuffer(out, dtype=np.float32).reshape(STEPS, -1)
    assert rows.shape[1] == n * (1 + nstate), "driver wrote %d floats" % len(out)
    return [(r[:n], r[n:].reshape(nstate, n)) for r in rows]


def run_torch(cls, kind, kwargs, p0, grads):
    """Every step's (params, state) from torch.optim."""
    p = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = getattr(torch.optim, cls)([p], **kwargs)
    steps = []
    for g in grads:
        p.grad = torch.from_numpy(g.copy())
        opt.step()
        state = opt.state[p]
        keys = STATE_KEYS[kind]
        if kind == "sgd" and state.get("momentum_buffer") is None:
            keys = ()
        st = np.zeros((len(keys), len(p0)), dtype=np.float32)
        for i, k in enumerate(keys):
            st[i] = state[k].detach().numpy()
        steps.append((p.detach().numpy().copy(), st))
    return steps


def ulps(a, b):
    """Distance in float32 units in the last place (same sign assumed)."""
    return abs(int(np.float32(a).view(np.int32)) - int(np.float32(b).view(np.int32)))


# NaNs that differ from torch's only in their sign bit, counted and
# reported, not failed, in two cases; every other bit, NaN payloads
# included, must match, and outside these two cases the sign too.
# - With maximize, torch negates the gradient (a sign flip, which flips a
#   NaN's sign too) and fsps multiplies it by -grad_scale (which hands a
#   NaN on unchanged): equal for every number, not for a NaN's sign.
# - Where two NaNs meet in one operation, x86 hands on the first operand's,
#   and which is first is the compiler's choice (IEEE 754 leaves open which
#   NaN propagates). GCC's build orders them as torch's does; under another
#   compiler (the driver says which built it) the sign is left free.
NAN_SIGN_ONLY = [0]


def differs(got, want, nan_sign_ok=False):
    """Mask of the elements whose bits differ (other than in a NaN's sign,
    if nan_sign_ok)."""
    g, w = got.view(np.uint32), want.view(np.uint32)
    if not nan_sign_ok:
        return g != w
    sign_only = np.isnan(got) & np.isnan(want) & ((g ^ w) == 0x80000000)
    NAN_SIGN_ONLY[0] += int(np.sum(sign_only))
    return (g != w) & ~sign_only


def first_difference(got, want, nan_sign_ok=False):
    """Index of the first differing bit pattern, or None."""
    diff = np.nonzero(differs(got, want, nan_sign_ok))[0]
    return int(diff[0]) if len(diff) else None


def compare(name, n, fsps_steps, torch_steps, nan_sign_ok):
    """Returns a list of failure messages (empty when bit for bit)."""
    failures = []
    for t, ((fp, fs), (tp, ts)) in enumerate(zip(fsps_steps, torch_steps), 1):
        if fs.shape != ts.shape:
            return ["%s n=%d step %d: state shape %s, torch %s"
                    % (name, n, t, fs.shape, ts.shape)]
        for what, got, want in [("param", fp, tp)] + [
                ("state[%d]" % k, fs[k], ts[k]) for k in range(len(ts))]:
            i = first_difference(got, want, nan_sign_ok)
            if i is not None:
                count = int(np.sum(differs(got, want, nan_sign_ok)))
                failures.append(
                    "%s n=%d step %d %s[%d]: fsps %r, torch %r (%d ulp; %d "
                    "elements differ)" % (name, n, t, what, i, float(got[i]),
                                          float(want[i]), ulps(got[i], want[i]),
                                          count))
        if failures:
            return failures  # later steps only repeat the divergence
    return failures


def data(rng, n):
    p0 = rng.standard_normal(n).astype(np.float32)
    grads = (rng.standard_normal((STEPS, n)) *
             rng.choice([0.01, 1.0, 30.0], size=(STEPS, 1))).astype(np.float32)
    return p0, grads


# NaN of both signs, infinities, signed zeros, denormals, the smallest and
# largest normals, and magnitudes whose squares are denormal.
SPECIALS = (float("nan"), -float("nan"), float("inf"), -float("inf"), 0.0,
            -0.0, 1e-40, -3e-42, 1.17549435e-38, 1e-45, 1e-20, -1e-22, 2e-19,
            3.4028235e38, 1e19)


def data_specials(rng, n):
    """data(), with one element in 16 of the parameters and of each step's
    gradient a special value, and every 13th element tiny (about 1e-20)
    throughout, so that squares accumulate into denormal state."""
    p0, grads = data(rng, n)
    specials = np.array(SPECIALS, dtype=np.float32)
    for x in [p0] + list(grads):
        hit = rng.random(n) < 1 / 16
        x[hit] = rng.choice(specials, size=int(hit.sum()))
        x[5::13] *= np.float32(1e-20)
    return p0, grads


def check_sensitive(rng):
    """The data must tell a fused multiply-add from two roundings, or a
    pass would prove nothing: torch's first SGD step differs from the
    unfused p + (-lr)*g somewhere."""
    p0, grads = data(rng, 1001)
    (tp, _), = run_torch("SGD", "sgd", dict(lr=0.037), p0, grads[:1])
    unfused = p0 + np.float32(-0.037) * grads[0]
    if first_difference(tp, unfused) is None:
        return ["the data cannot tell fma from mul+add: choose other data"]
    return []


def check_case(isas, gcc, rng, case, n, make_data):
    """Failure messages of one case at one length on every isa."""
    name, kind, cls, kwargs = case
    p0, grads = make_data(rng, n)
    with np.errstate(all="ignore"):
        want = run_torch(cls, kind, kwargs, p0, grads)
    nstate = want[0][1].shape[0]
    failures = []
    for isa in isas:
        got = run_fsps(isa, kind, n, kwargs, p0, grads, nstate)
        failures += ["%s: %s" % (isa, f)
                     for f in compare(name, n, got, want,
                                      kwargs.get("maximize", False) or
                                      not gcc)]
    return failures, STEPS * n * (1 + nstate) * len(isas)


def check_isas():
    """(the instruction sets to check: each the driver supports, each of
    which it must report running when FSPS_OPTIM_ISA names it; whether GCC
    built it)."""
    _, supported, compiler = driver_isa(os.environ)
    for isa in supported:
        ran, _, _ = driver_isa(isa_env(isa))
        assert ran == isa, "FSPS_OPTIM_ISA=%s ran %s" % (isa, ran)
    return supported, compiler == "gcc"


def main():
    isas, gcc = check_isas()
    print("instruction sets: %s (built by %s)"
          % (", ".join(isas), "gcc" if gcc else "another compiler"))
    rng = np.random.default_rng(20240613)
    failures = check_sensitive(rng)
    compared = 0
    for case in CASES:
        before = len(failures)
        for n, make_data in [(n, data) for n in LENGTHS] + [
                (SPECIAL_LENGTH, data_specials)]:
            f, c = check_case(isas, gcc, rng, case, n, make_data)
            failures += f
            compared += c
        print("%-14s %s" % (case[0], "bit for bit" if len(failures) == before
                            else "MISMATCH"))
    for f in failures:
        print("MISMATCH", f)
    if NAN_SIGN_ONLY[0]:
        print("%d NaNs have the opposite sign to torch's NaN (with maximize"
              "%s)" % (NAN_SIGN_ONLY[0], "" if gcc else
                       ", or where two NaNs met"))
    print("%d cases x %d lengths (+1 with special values) x %d steps x %d "
          "instruction sets, %d floats compared: %s"
          % (len(CASES), len(LENGTHS), STEPS, len(isas), compared,
             "bit for bit" if not failures else "%d mismatches" % len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--driver", required=True)
    ARGS = parser.parse_args()
    # The CPU's own kernels, whatever the caller's environment asks for.
    os.environ.pop("ATEN_CPU_CAPABILITY", None)
    try:
        import numpy as np
        import torch
    except ImportError as e:
        print("SKIP: %s: torch and numpy (Debian's python3-torch, "
              "python3-numpy) are needed for the reference; nothing to "
              "compare fsps's optimizers with" % e)
        sys.exit(SKIP)
    torch.set_num_threads(2)
    cap = [l.strip() for l in torch.__config__.show().splitlines()
           if "CPU capability" in l]
    print("torch %s, %s" % (torch.__version__, cap[0] if cap else
                            "CPU capability not reported"))
    sys.exit(main())
