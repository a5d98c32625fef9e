"""PNG plots of one or more runs (overlaid, one colour per run throughout), with matplotlib's
Agg backend so they render on a cluster node without a display.

Every plot is always written, so the Markdown report never links a missing file; an axis with
nothing to show in these logs says so instead of being blank.
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .metrics import per_epoch_timing  # noqa: E402
from .tables import fmt_threshold  # noqa: E402

PLOTS = (  # file name, title (the Markdown report uses both)
    ("top1_vs_time.png", "Validation top-1 against training wall time"),
    ("top1_vs_epoch.png", "Validation top-1 against epoch"),
    ("loss.png", "Training loss (solid) and validation loss (dashed)"),
    ("batch_and_lr.png", "Global batch size and learning rate"),
    ("images_per_s.png", "Training throughput"),
    ("shares.png", "Share of training time in all-reduce and in data wait, per epoch"),
)


def _xy(records, x, y, scale=1.0):
    pts = [(r[x], r[y] * scale) for r in records if r.get(x) is not None and r.get(y) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _finish(ax, xlabel, ylabel):
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="best")
    else:
        ax.text(0.5, 0.5, "not in these logs", transform=ax.transAxes, ha="center",
                va="center", color="gray")


def _save(fig, path):
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _top1(ax, runs, colors, x, thresholds):
    for run, c in zip(runs, colors):
        xs, ys = _xy(run.events("eval"), x, "val_top1", 100)
        if xs:
            ax.plot(xs, ys, "o-", color=c, markersize=3, label=run.name)
    for t in thresholds:
        ax.axhline(100 * t, color="gray", lw=0.8, ls=":")
        ax.annotate(fmt_threshold(t), (0, 100 * t), xycoords=("axes fraction", "data"),
                    fontsize="x-small", color="gray", va="bottom")


def write_plots(runs, out_dir, thresholds):
    """Write every plot in PLOTS into out_dir; returns their paths."""
    colors = [plt.get_cmap("tab10")(i % 10) for i in range(len(runs))]
    paths = {name: os.path.join(out_dir, name) for name, _ in PLOTS}

    fig, ax = plt.subplots(figsize=(7, 4.5))
    _top1(ax, runs, colors, "elapsed_s", thresholds)
    _finish(ax, "training wall time (s, evaluation included)", "top-1 (%)")
    _save(fig, paths["top1_vs_time.png"])

    fig, ax = plt.subplots(figsize=(7, 4.5))
    _top1(ax, runs, colors, "epoch", thresholds)
    _finish(ax, "epoch", "top-1 (%)")
    _save(fig, paths["top1_vs_epoch.png"])

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run, c in zip(runs, colors):
        xs, ys = _xy(run.events("step"), "epoch", "train_loss")
        if xs:
            ax.plot(xs, ys, "-", color=c, label=f"{run.name} train")
        xs, ys = _xy(run.events("eval"), "epoch", "val_loss")
        if xs:
            ax.plot(xs, ys, "o--", color=c, markersize=3, label=f"{run.name} val")
    _finish(ax, "epoch", "loss")
    _save(fig, paths["loss.png"])

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for run, c in zip(runs, colors):
        lines = run.events("start", "stage", "resume", "step", "epoch", "eval", "end")
        xs, ys = _xy(lines, "epoch", "global_batch")
        if xs:
            top.step(xs, ys, where="post", color=c, label=run.name)
        xs, ys = _xy(run.events("step"), "epoch", "lr")
        if xs:
            bottom.plot(xs, ys, "-", color=c, label=run.name)
    _finish(top, "", "global batch")
    _finish(bottom, "epoch", "learning rate")
    _save(fig, paths["batch_and_lr.png"])

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for run, c in zip(runs, colors):
        xs, ys = _xy(run.events("step"), "epoch", "images_per_s")
        if xs:
            ax.plot(xs, ys, ".-", color=c, label=run.name)
    _finish(ax, "epoch", "images/s (whole job, since the previous step line)")
    _save(fig, paths["images_per_s.png"])

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for run, c in zip(runs, colors):
        rows = per_epoch_timing(run)
        for ax, key in ((top, "allreduce_share"), (bottom, "data_wait_share")):
            xs, ys = _xy(rows, "epoch", key, 100)
            if xs:
                ax.plot(xs, ys, "o-", color=c, markersize=3, label=run.name)
    _finish(top, "", "all-reduce (% of training time)")
    _finish(bottom, "epoch", "data wait (% of training time)")
    _save(fig, paths["shares.png"])
    return [paths[name] for name, _ in PLOTS]
