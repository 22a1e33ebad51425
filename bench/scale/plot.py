"""bench/scale/plot: step time and aggregate throughput against W, one
line per S, measured (solid, dots) beside the cost model (dashed), one
row per wire dtype. Needs Debian's python3-matplotlib.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def draw(results, path, link_gbit):
    """results: {dtype: (point lines, fit)}; writes a PNG to path."""
    rows = len(results)
    fig, axes = plt.subplots(rows, 2, figsize=(10, 3.6 * rows),
                             squeeze=False)
    for row, (dtype, (lines, fit)) in zip(axes, results.items()):
        servers = sorted({x["servers"] for x in lines})
        for i, S in enumerate(servers):
            pts = sorted((x for x in lines if x["servers"] == S),
                         key=lambda x: x["workers"])
            W = [x["workers"] for x in pts]
            color = "C%d" % i
            row[0].plot(W, [x["step_seconds"] for x in pts], "o-",
                        color=color, label="S=%d" % S)
            row[0].plot(W, [x["predicted_step_seconds"] for x in pts], "--",
                        color=color)
            row[1].plot(W, [x["throughput_bytes_per_s"] / 1e6 for x in pts],
                        "o-", color=color, label="S=%d" % S)
            row[1].plot(W, [x["workers"] * (
                x["bytes_per_worker_step"]["gathered"] +
                x["bytes_per_worker_step"]["pushed"]) /
                x["predicted_step_seconds"] / 1e6 for x in pts], "--",
                color=color)
        row[0].set_yscale("log")
        for ax, what in zip(row, ("step seconds", "gathered + pushed MB/s")):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("workers W")
            ax.set_ylabel(what)
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=8)
        row[0].set_title("%s wire, %g Gbit/s links: step (dashed: model, "
                         "eta %.2f, omega %.2f)" % (
                             dtype, link_gbit, fit["eta"], fit["omega"]),
                         fontsize=9)
        row[1].set_title("aggregate throughput (dashed: model)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
