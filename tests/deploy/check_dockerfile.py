#!/usr/bin/python3
"""Checks deploy/Dockerfile and .dockerignore without a Docker engine.

1. Structure: two stages, both FROM the Debian release this machine runs;
   the build stage runs scripts/setup.sh and deploy/build.sh; the runtime
   stage copies the binaries from it, installs packages with
   --no-install-recommends and no build tools, runs as a numeric non-root
   USER, EXPOSEs gRPC and metrics, and has an exec-form ENTRYPOINT naming a
   binary it ships.
2. The build context: the repo filtered by .dockerignore (Docker's pattern
   rules) is copied to a temporary folder and deploy/build.sh builds the
   image's binaries from that copy, exactly as the build stage would.
3. Runtime libraries: every shared library `ldd` reports for those binaries
   is mapped to its Debian package (dpkg -S); each such package must be
   installed by the runtime stage's apt-get line, or be a dependency of one
   it installs, or belong to debian:*-slim itself (Priority: required, apt,
   and their dependencies). Each listed package must itself hold one of the
   libraries (or be the data set). A self-test shows the check fails with
   an empty list.

Exit 0: all good; 1: a check failed; 77: cannot judge on this machine (not
the Dockerfile's Debian release, or no dpkg), which ctest reports as skipped.

    check_dockerfile.py --repo DIR [--keep]
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77
# Packages the runtime stage may list without holding a library.
DATA_PACKAGES = {"dataset-fashion-mnist"}
BUILD_TOOLS = {"build-essential", "gcc", "g++", "cpp", "clang", "cmake",
               "make", "ninja-build", "pkg-config", "pkgconf", "git",
               "protobuf-c-compiler", "protobuf-compiler", "libtool"}
BINARIES = ("fsps-server", "fsps-worker", "fsps-health", "fsps-reslice",
            "fsps-ctl", "fsps-serve", "fsps-export")

failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg)


def ok(msg):
    print("ok: " + msg)


# ---- Dockerfile parsing ---------------------------------------------------

def parse_dockerfile(path):
    """Returns [(keyword, args, line)] with continuations joined."""
    out, buf, start = [], "", 0
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.rstrip("\n")
            if not buf and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if buf and line.lstrip().startswith("#"):
                continue  # comment lines inside a continued instruction
            if not buf:
                start = n
            if line.rstrip().endswith("\\"):
                buf += line.rstrip()[:-1] + " "
                continue
            buf += line
            kw, _, args = buf.strip().partition(" ")
            out.append((kw.upper(), args.strip(), start))
            buf = ""
    return out


def split_stages(instrs):
    stages = []
    for kw, args, n in instrs:
        if kw == "FROM":
            stages.append({"from": args, "line": n, "instrs": []})
        elif stages:
            stages[-1]["instrs"].append((kw, args, n))
        elif kw != "ARG":
            fail(f"Dockerfile line {n}: {kw} before the first FROM")
    return stages


def apt_packages(run_args):
    """Package names of every `apt-get install` in a RUN's shell text."""
    pkgs, flags = [], set()
    for cmd in re.split(r"&&|;|\|\|", run_args):
        words = cmd.split()
        if len(words) >= 2 and words[0] in ("apt-get", "apt") and "install" in words:
            for w in words[words.index("install") + 1:]:
                (flags.add(w) if w.startswith("-") else pkgs.append(w))
    return pkgs, flags


def check_structure(df):
    instrs = parse_dockerfile(df)
    stages = split_stages(instrs)
    info = {}
    if len(stages) != 2:
        fail(f"expected two stages (build, runtime), found {len(stages)}")
        return None
    build, run = stages
    m = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", build["from"], re.I)
    if not m:
        fail("the first stage must be named: FROM IMAGE AS build")
        return None
    base, name = m.group(1), m.group(2)
    info["base"] = base
    if run["from"].split()[0] != base:
        fail(f"the runtime stage's base {run['from']} differs from the build "
             f"stage's {base}: the binaries would meet other library versions")
    if not re.fullmatch(r"debian:[a-z]+-slim", base):
        fail(f"base image {base} is not debian:<release>-slim")
    ok(f"two stages on {base}")

    runs = [a for k, a, _ in build["instrs"] if k == "RUN"]
    copies = [a for k, a, _ in build["instrs"] if k == "COPY"]
    if not any(re.search(r"(^|\s)scripts/setup\.sh(\s|$)", c) for c in copies):
        fail("the build stage does not COPY scripts/setup.sh")
    if not any(re.search(r"\bbash\s+scripts/setup\.sh\b", r) for r in runs):
        fail("the build stage does not run scripts/setup.sh")
    prefix = None
    for r in runs:
        m = re.search(r"\bbash\s+deploy/build\.sh\s+(\S+)", r)
        if m:
            prefix = m.group(1).rstrip("/")
    if prefix is None:
        fail("the build stage does not run deploy/build.sh PREFIX")
        return None
    ok("build stage: scripts/setup.sh, then deploy/build.sh " + prefix)

    kinds = [k for k, _, _ in run["instrs"]]
    bindir = None
    for k, a, n in run["instrs"]:
        if k in ("COPY", "ADD"):
            m = re.fullmatch(r"--from=(\S+)\s+(\S+)\s+(\S+)", a)
            if not m or m.group(1) != name:
                fail(f"Dockerfile line {n}: the runtime stage copies something "
                     f"other than the build stage's output: {k} {a}")
            elif m.group(2).rstrip("/") != prefix + "/usr/local/bin":
                fail(f"line {n}: copies {m.group(2)}, not {prefix}/usr/local/bin/")
            else:
                bindir = m.group(3).rstrip("/")
    if bindir is None:
        fail("the runtime stage does not COPY --from=build the binaries")
        return None
    info["bindir"] = bindir

    pkgs, flags, cleaned = [], set(), False
    for k, a, n in run["instrs"]:
        if k == "RUN":
            p, f = apt_packages(a)
            pkgs += p
            flags |= f
            cleaned |= "rm -rf /var/lib/apt/lists" in a
    if not pkgs:
        fail("the runtime stage installs no packages")
    if "--no-install-recommends" not in flags:
        fail("the runtime apt-get install lacks --no-install-recommends")
    if not cleaned:
        fail("the runtime stage leaves /var/lib/apt/lists in the image")
    tools = [p for p in pkgs if p.endswith("-dev") or p in BUILD_TOOLS]
    if tools:
        fail("the runtime stage installs build tools or headers: " + " ".join(tools))
    info["packages"] = pkgs
    ok("runtime packages: " + " ".join(pkgs))

    users = [(a, n) for k, a, n in run["instrs"] if k == "USER"]
    if not users:
        fail("the runtime stage sets no USER (it would run as root)")
    else:
        u, n = users[-1]
        m = re.fullmatch(r"(\d+)(?::(\d+))?", u)
        if not m:
            fail(f"line {n}: USER {u} is not numeric uid[:gid] (runAsNonRoot "
                 "cannot verify a name)")
        elif int(m.group(1)) == 0 or (m.group(2) and int(m.group(2)) == 0):
            fail(f"line {n}: USER {u} is root")
        else:
            ok(f"numeric non-root USER {u}")
        runs_at = [i for i, k in enumerate(kinds) if k == "RUN"]
        if runs_at and kinds.index("USER") < max(runs_at):
            fail("a RUN comes after USER in the runtime stage; put USER last")

    exposed = set()
    for k, a, _ in run["instrs"]:
        if k == "EXPOSE":
            exposed |= {p.split("/")[0] for p in a.split()}
    for port, what in (("7070", "gRPC"), ("9090", "metrics")):
        if port not in exposed:
            fail(f"EXPOSE lacks {port} ({what})")
    info["exposed"] = exposed

    eps = [(a, n) for k, a, n in run["instrs"] if k == "ENTRYPOINT"]
    if len(eps) != 1:
        fail(f"expected one ENTRYPOINT in the runtime stage, found {len(eps)}")
    else:
        a, n = eps[0]
        try:
            ep = json.loads(a)
        except json.JSONDecodeError:
            ep = None
        if not (isinstance(ep, list) and ep and all(isinstance(x, str) for x in ep)):
            fail(f"line {n}: ENTRYPOINT {a} is not exec form (a JSON array); "
                 "in shell form /bin/sh is PID 1 and SIGTERM never reaches the server")
        elif ep[0] != bindir + "/fsps-server":
            fail(f"line {n}: ENTRYPOINT runs {ep[0]}, not {bindir}/fsps-server")
        else:
            ok(f"exec-form ENTRYPOINT {ep}")
    return info


# ---- .dockerignore --------------------------------------------------------

def pattern_regex(pat):
    """Docker's (moby/patternmatcher) pattern syntax as a regular expression."""
    out, i = "^", 0
    while i < len(pat):
        c = pat[i]
        if c == "*":
            if pat[i:i + 2] == "**":
                i += 2
                if pat[i:i + 1] == "/":
                    out += "(.*/)?"
                    i += 1
                else:
                    out += ".*"
                continue
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pat.find("]", i + 1)
            if j < 0:
                out += re.escape(c)
            else:
                body = pat[i + 1:j]
                if body.startswith("^") or body.startswith("!"):
                    body = "^" + body[1:]
                out += "[" + body.replace("\\", "\\\\") + "]"
                i = j
        elif c == "\\" and i + 1 < len(pat):
            i += 1
            out += re.escape(pat[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile(out + "$")


def load_ignore(path):
    rules = []
    if not os.path.exists(path):
        return rules
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            neg = line.startswith("!")
            if neg:
                line = line[1:].strip()
            line = os.path.normpath(line).lstrip("/")
            rules.append((neg, pattern_regex(line)))
    return rules


def ignored(rel, rules):
    """Docker's rule: the last pattern matching the path or a parent wins."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for neg, rx in rules:
        if any(rx.match(p) for p in prefixes):
            result = not neg
    return result


def build_context(repo, dest):
    rules = load_ignore(os.path.join(repo, ".dockerignore"))
    can_prune = not any(neg for neg, _ in rules)
    kept = []
    for root, dirs, files in os.walk(repo):
        relroot = os.path.relpath(root, repo)
        relroot = "" if relroot == "." else relroot + "/"
        if can_prune:
            dirs[:] = [d for d in dirs if not ignored(relroot + d, rules)]
        for f in files:
            rel = relroot + f
            if ignored(rel, rules):
                continue
            src = os.path.join(repo, rel)
            dst = os.path.join(dest, rel)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy2(src, dst, follow_symlinks=False)
            kept.append(rel)
    return kept


def check_context(repo, tmp):
    ctx = os.path.join(tmp, "context")
    os.makedirs(ctx)
    kept = build_context(repo, ctx)
    size = sum(os.path.getsize(os.path.join(ctx, k)) for k in kept
               if not os.path.islink(os.path.join(ctx, k)))
    print(f"context: {len(kept)} files, {size // 1024} KiB")
    for need in ("CMakeLists.txt", "scripts/setup.sh", "deploy/build.sh",
                 "deploy/health/fsps_health.c", "README.md"):
        if need not in kept:
            fail(f".dockerignore drops {need}, which the build needs")
    leaked = sorted({k.split("/")[0] for k in kept if k.startswith(".git/")} |
                    {k for k in kept if k.endswith("CMakeCache.txt")} |
                    {k for k in kept if "/node_modules/" in "/" + k})
    if leaked:
        fail(".dockerignore lets in " + ", ".join(leaked[:5]))
    # Self-test of the matcher on rules with known answers.
    probe = [(False, pattern_regex("build*")), (False, pattern_regex("**/*.o")),
             (False, pattern_regex("a/b")), (True, pattern_regex("a/b/keep"))]
    expect = {"build/x.c": True, "deploy/build.sh": False, "x/y/z.o": True,
              "z.o": True, "a/b/c": True, "a/b/keep": False, "a/bc": False}
    for path, want in expect.items():
        if ignored(path, probe) != want:
            fail(f"pattern matcher self-test: {path} ignored={not want}")
    if failures:
        return None
    ok(".dockerignore keeps the sources and drops git metadata and build trees")
    out = os.path.join(tmp, "out")
    env = dict(os.environ, BUILD_DIR=os.path.join(tmp, "build"),
               JOBS=os.environ.get("JOBS", str(os.cpu_count() or 2)))
    print("building the image's binaries from the filtered context "
          "(deploy/build.sh) ...", flush=True)
    r = subprocess.run(["bash", os.path.join(ctx, "deploy/build.sh"), out],
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True)
    if r.returncode != 0:
        print(r.stdout[-6000:])
        fail("deploy/build.sh failed on the .dockerignore-filtered context")
        return None
    bins = {}
    for b in BINARIES:
        p = os.path.join(out, "usr/local/bin", b)
        if not os.access(p, os.X_OK):
            fail(f"deploy/build.sh did not install usr/local/bin/{b}")
            continue
        arg = "--help" if b == "fsps-health" else "--version"
        v = subprocess.run([p, arg], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if v.returncode != 0:
            fail(f"{b} {arg} exited {v.returncode}: {v.stdout.strip()}")
        bins[b] = p
    ok("built from the context: " + ", ".join(sorted(bins)))
    return bins


# ---- runtime libraries ------------------------------------------------------

def ldd_libs(binary):
    r = subprocess.run(["ldd", binary], stdout=subprocess.PIPE, text=True,
                       check=True)
    libs = []
    for line in r.stdout.splitlines():
        line = line.strip()
        if "not found" in line:
            fail(f"{os.path.basename(binary)}: {line}")
        m = re.match(r"\S+\s+=>\s+(/\S+)", line) or re.match(r"(/\S+)\s+\(", line)
        if m:
            libs.append(m.group(1))
    return libs


def owner(path):
    """The Debian package(s) holding a library path, across /usr merging and
    symlinks (alternatives, sonames)."""
    cands = [path, os.path.realpath(path)]
    for p in list(cands):
        cands.append(p[4:] if p.startswith("/usr/") else "/usr" + p)
    for p in cands:
        r = subprocess.run(["dpkg", "-S", p], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True)
        if r.returncode != 0:
            continue
        for line in r.stdout.splitlines():
            if line.startswith("diversion "):
                continue
            pkgs, _, _ = line.partition(": ")
            names = {x.strip().split(":")[0] for x in pkgs.split(",")}
            if names:
                return names
    return set()


def installed_db():
    fmt = "${Package}\t${Status}\t${Priority}\t${Essential}\t${Depends}\t${Pre-Depends}\t${Provides}\n"
    r = subprocess.run(["dpkg-query", "-W", "-f", fmt], stdout=subprocess.PIPE,
                       text=True, check=True)
    db, providers = {}, {}
    for line in r.stdout.splitlines():
        f = line.split("\t")
        if len(f) < 7 or not f[1].endswith(" installed"):
            continue
        name = f[0]
        groups = []
        for dep in (f[4] + "," + f[5]).split(","):
            alts = [re.sub(r"\(.*?\)|\[.*?\]", "", a).strip().split(":")[0]
                    for a in dep.split("|")]
            alts = [a for a in alts if a]
            if alts:
                groups.append(alts)
        db[name] = {"priority": f[2], "essential": f[3] == "yes", "deps": groups}
        for p in f[6].split(","):
            p = re.sub(r"\(.*?\)", "", p).strip()
            if p:
                providers.setdefault(p, []).append(name)
    return db, providers


def closure(roots, db, providers):
    """Packages apt would install for roots: each dependency group resolved to
    its first alternative that is (or is provided by) an installed package."""
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen or p not in db:
            continue
        seen.add(p)
        for alts in db[p]["deps"]:
            for a in alts:
                if a in db:
                    todo.append(a)
                    break
                if a in providers:
                    todo.append(providers[a][0])
                    break
    return seen


def check_libraries(bins, listed):
    db, providers = installed_db()
    need = {}  # library basename -> the packages holding it (any one will do)
    for b, path in bins.items():
        for lib in ldd_libs(path):
            pk = owner(lib)
            if not pk:
                fail(f"{b}: no Debian package holds {lib}")
                continue
            need.setdefault(os.path.basename(lib), set()).update(pk)
    holders = set().union(*need.values()) if need else set()
    print(f"ldd: {len(need)} libraries from {len(holders)} packages: "
          + " ".join(sorted(holders)))
    unknown = [p for p in listed if p not in db]
    if unknown:
        fail("listed but not installed here, so their dependencies cannot be "
             "checked (scripts/setup.sh installs every runtime library): "
             + " ".join(unknown))
    base_roots = [p for p, d in db.items()
                  if d["essential"] or d["priority"] == "required"] + ["apt"]
    base = closure(base_roots, db, providers)

    def missing(pkgs):
        have = closure(list(pkgs), db, providers) | base
        return {lib: pk for lib, pk in need.items() if not pk & have}

    gone = missing(listed)
    for lib, pk in sorted(gone.items()):
        fail(f"the runtime stage lacks {' or '.join(sorted(pk))} (for {lib})")
    if not gone:
        ok(f"every library is in the runtime stage's packages, their "
           f"dependencies, or the slim base ({len(base)} packages)")
    extra = [p for p in listed if p not in holders and p not in DATA_PACKAGES]
    if extra:
        fail("listed runtime packages that hold none of the binaries' "
             "libraries: " + " ".join(extra))
    # Self-test: the base model alone must not cover the binaries; if it did
    # (say, by taking every installed package as base), this check could
    # never fail.
    if not missing([]):
        fail("self-test: an empty runtime list passes the library check")
    else:
        lacking = set().union(*missing([]).values())
        ok("self-test: an empty list would lack " + " ".join(sorted(lacking)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repo", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the temp folder")
    a = ap.parse_args()
    repo = os.path.abspath(a.repo)
    df = os.path.join(repo, "deploy", "Dockerfile")
    if not shutil.which("dpkg") or not shutil.which("ldd"):
        print("SKIP: needs dpkg and ldd (a Debian machine)")
        return SKIP
    info = check_structure(df)
    if info is None or failures:
        return 1
    codename = ""
    with open("/etc/os-release") as f:
        for line in f:
            if line.startswith("VERSION_CODENAME="):
                codename = line.split("=", 1)[1].strip().strip('"')
    release = info["base"].split(":")[1].rsplit("-slim", 1)[0]
    if codename != release:
        print(f"SKIP: this machine runs Debian '{codename}', the image "
              f"'{release}': ldd here says nothing about the image")
        return SKIP
    tmp = tempfile.mkdtemp(prefix="fsps-dockerfile-")
    try:
        bins = check_context(repo, tmp)
        if bins and not failures:
            check_libraries(bins, info["packages"])
    finally:
        if a.keep:
            print("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"check_dockerfile: {len(failures)} failed")
        return 1
    print("check_dockerfile: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
