#!/usr/bin/env python3
"""check_symbols.py: libfsps.so exports only the public fsps_* API, and
every global symbol a project library defines carries its module's prefix
(so no two archives can define the same name, and none collides with a
program that links them).

Usage: check_symbols.py LIBFSPS_SO ARCHIVE...
"""
import os
import re
import subprocess
import sys

# Each library's own prefixes; the generated protobuf-c code is prefixed by
# its proto package (fsps.v1, grpc.health.v1).
PREFIXES = {
    "libfsps.a": ("fsps_", "client_"),
    "libfsps_err.a": ("fsps_",),
    "libfsps_logfmt.a": ("logfmt_",),
    "libfsps_rpc.a": ("rpc_",),
    "libfsps_wire.a": ("wire_",),
    "libfsps_shard.a": ("shard_",),
    "libfsps_optim.a": ("optim_",),
    "libfsps_proto.a": ("fsps__v1__", "grpc__health__v1__"),
    "libfsps_server_core.a": ("server_", "store_", "ckpt_"),
    "libfsps_server_files.a": ("server_",),
    "libfsps_ckpt.a": ("ckpt_",),
    "libfsps_worker_core.a": ("worker_",),
    "libfsps_metrics.a": ("metrics_",),
    "libfsps_test_cluster.a": ("test_cluster_",),
}


def defined(path, dynamic=False):
    """The global symbols path defines (nm's third column), less the
    toolchain's own: names starting with "__" are reserved to it (the
    sanitizers' __odr_asan.*, for one)."""
    args = ["nm", "--defined-only", "-g"] + (["-D"] if dynamic else [])
    out = subprocess.run(args + [path], check=True, capture_output=True,
                         text=True).stdout
    return {f[2] for f in (l.split() for l in out.splitlines())
            if len(f) == 3 and not f[2].startswith("__")}


def main():
    so, archives = sys.argv[1], sys.argv[2:]
    bad = sorted(s for s in defined(so, dynamic=True)
                 if not re.match(r"fsps_[a-z]", s))
    problems = [f"{os.path.basename(so)} exports {s}" for s in bad]
    for a in archives:
        name = os.path.basename(a)
        if name not in PREFIXES:
            problems.append(f"{name}: no prefixes listed in {__file__}")
            continue
        problems += [f"{name} defines {s}" for s in sorted(defined(a))
                     if not s.startswith(PREFIXES[name])]
    print("\n".join(problems) or f"{len(archives)} archives and "
          f"{os.path.basename(so)}: every symbol prefixed")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
