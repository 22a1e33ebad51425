#!/usr/bin/python3
"""Draw fsps-worker runs: loss, test accuracy and samples/s against steps.

Reads the files fsps-worker writes with --log-jsonl (one JSON object per
line: "progress" lines every progress tick, "epoch" lines at each epoch's
end) and draws one line per file, the legend naming each file.

Usage: scripts/plot.py FILE... -o run.png
Exits 0 with the picture written, 1 when a file is missing, empty or not
such a log (the message names the file and the line), 2 on bad usage.
Needs Debian's python3-matplotlib (scripts/setup.sh installs it).
"""
import argparse
import json
import os
import sys

NEEDED = ("step", "loss", "samples_per_s")


class LogError(Exception):
    """A file that cannot be drawn; the message says which and why."""


def parse_line(path, n, text):
    """One line's record, or None for a line that is not a progress or an
    epoch line (another event, a blank line)."""
    if not text.strip():
        return None
    try:
        rec = json.loads(text)
    except ValueError as e:
        raise LogError("%s: line %d is not JSON (%s): %.80r" %
                       (path, n, e, text)) from None
    if not isinstance(rec, dict):
        raise LogError("%s: line %d is not a JSON object" % (path, n))
    if rec.get("event") not in ("progress", "epoch"):
        return None
    for key in NEEDED:
        v = rec.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise LogError("%s: line %d (%s) has no number %r" %
                           (path, n, rec["event"], key))
    return rec


def read_run(path):
    """The progress and epoch records of one --log-jsonl file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise LogError("%s: cannot read: %s" % (path, e.strerror)) from None
    if not raw.strip():
        raise LogError("%s: is empty (did the worker run with --log-jsonl "
                       "and make a step?)" % path)
    try:
        lines = raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise LogError("%s: is not UTF-8 text (%s)" % (path, e)) from None
    recs = [r for n, line in enumerate(lines, 1)
            if (r := parse_line(path, n, line)) is not None]
    if not recs:
        raise LogError("%s: holds no progress or epoch lines (is it an "
                       "fsps-worker --log-jsonl file?)" % path)
    return recs


def labels(paths):
    """Each file's legend label: its name, or its path where names repeat."""
    names = [os.path.basename(p) for p in paths]
    return [p if names.count(n) > 1 else n for p, n in zip(paths, names)]


def series(recs, event, key):
    pts = [(r["step"], r[key]) for r in recs
           if r["event"] == event and isinstance(r.get(key), (int, float))
           and not isinstance(r.get(key), bool)]
    return [p[0] for p in pts], [p[1] for p in pts]


def draw(runs, out):
    import matplotlib
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_acc, ax_rate) = plt.subplots(
        3, 1, sharex=True, figsize=(7, 7.5), dpi=90)
    for label, recs in runs:
        line, = ax_loss.plot(*series(recs, "progress", "loss"), label=label)
        acc = series(recs, "epoch", "test_accuracy")
        ax_acc.plot(*acc, marker="o", color=line.get_color(), label=label)
        ax_rate.plot(*series(recs, "progress", "samples_per_s"),
                     color=line.get_color(), label=label)
    ax_loss.set_ylabel("training loss\n(mean over the epoch so far)")
    ax_acc.set_ylabel("test accuracy\n(end of each epoch)")
    ax_rate.set_ylabel("samples/s\n(this worker, since start)")
    ax_rate.set_xlabel("step")
    ax_loss.set_title("fsps training run" + ("s" if len(runs) > 1 else ""))
    for ax in (ax_loss, ax_acc, ax_rate):
        ax.grid(True, alpha=0.3)
    ax_loss.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="plot.py",
        description="Draw loss, test accuracy and samples/s against steps "
        "from fsps-worker --log-jsonl files, one line per file.")
    ap.add_argument("files", nargs="+", metavar="FILE",
                    help="a file fsps-worker wrote with --log-jsonl")
    ap.add_argument("-o", "--output", required=True, metavar="PNG",
                    help="the picture to write (PNG, or any format "
                    "matplotlib knows by the name's extension)")
    args = ap.parse_args(argv)
    try:
        runs = list(zip(labels(args.files),
                        [read_run(p) for p in args.files]))
    except LogError as e:
        print("plot.py: %s" % e, file=sys.stderr)
        return 1
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("plot.py: needs matplotlib: apt-get install python3-matplotlib "
              "(scripts/setup.sh installs it)", file=sys.stderr)
        return 1
    try:
        draw(runs, args.output)
    except (OSError, ValueError) as e:
        print("plot.py: cannot write %s: %s" % (args.output, e),
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
