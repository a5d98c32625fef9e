#!/usr/bin/env python
"""Draw the global batch and the learning rate over training (PNG, matplotlib's Agg backend).

From a run's log (the "step" and "stage" lines of log.jsonl)::

    python -m tools.plot_schedule runs/demo/log.jsonl -o runs/demo/schedule.png

From a recipe, before any run (the trainer's dry run calls ``plot_schedule``)::

    python train_resnet50.py --config configs/paper_224s.yaml --dry-run --world-size 2176 \\
        --plot-schedule paper_224s_schedule.png

The schedule arithmetic lives in ``schedules/`` (pure, no plotting); this module only draws.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def curves_from_log(path):
    """(epochs, global batches, lrs, stage start epochs) from a log.jsonl's "stage" and "step"
    lines. A step line's ``lr`` is the rate of its last update; plotted at the line's epoch."""
    epochs, batches, lrs, starts = [], [], [], []
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("event") in ("stage", "step") and r.get("lr") is not None:
                epochs.append(r["epoch"])
                batches.append(r["global_batch"])
                lrs.append(r["lr"])
            if r.get("event") == "stage" and r.get("stage"):
                starts.append(r["epoch"])
    if not epochs:
        raise ValueError(f"{path} has no step or stage lines with a learning rate; is it a "
                         "log.jsonl of train_resnet50.py?")
    return epochs, batches, lrs, starts


def plot_curves(epochs, batches, lrs, path, title="", stage_starts=()):
    """Two panels sharing the epoch axis; written atomically to ``path``."""
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(7, 5), dpi=120)
    top.step(epochs, batches, where="post", color="tab:blue")
    top.set_ylabel("global batch")
    top.set_ylim(0, max(batches) * 1.15)
    top.grid(alpha=0.3)
    bottom.plot(epochs, lrs, color="tab:red")
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("epoch")
    bottom.set_ylim(0, max(lrs) * 1.1 or 1.0)
    bottom.grid(alpha=0.3)
    for e in stage_starts:
        for ax in (top, bottom):
            ax.axvline(e, color="gray", linestyle=":", linewidth=1)
    if title:
        top.set_title(title)
    fig.tight_layout()
    tmp = f"{path}.tmp.png"
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, path)


def plot_schedule(schedule, path, title=""):
    """Plot a ``schedules.schedule.TrainingSchedule`` (every update's rate and batch)."""
    epochs, batches, lrs = schedule.curve()
    end = schedule.plan.total_samples / schedule.plan.epoch_length
    starts = [s.start_sample / schedule.plan.epoch_length for s in schedule.plan.stages[1:]]
    plot_curves(epochs + [end], batches + [batches[-1]], lrs + [lrs[-1]], path, title, starts)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("log", help="a run's log.jsonl")
    p.add_argument("-o", "--output", help="PNG to write (default: schedule.png beside the log)")
    args = p.parse_args(argv)
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(args.log)), "schedule.png")
    try:
        epochs, batches, lrs, starts = curves_from_log(args.log)
    except (OSError, ValueError) as e:
        sys.exit(f"error: {args.log}: {e}")
    plot_curves(epochs, batches, lrs, out, title=os.path.basename(os.path.dirname(
        os.path.abspath(args.log))), stage_starts=starts)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
