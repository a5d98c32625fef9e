#!/usr/bin/env python
"""Draw the global batch and the learning rate over training (PNG, matplotlib's Agg backend).

From a run's log (the "step" and "stage" lines of log.jsonl)::

    python -m tools.plot_schedule runs/demo/log.jsonl -o runs/demo/schedule.png

From a recipe, before any run (the trainer's dry run calls ``plot_schedule``)::

    python train_resnet50.py --config configs/paper_224s.yaml --dry-run --world-size 2176 \\
        --plot-schedule paper_224s_schedule.png

The drawing is training/schedule_plot.py (the trainer imports it); this is its command line.
"""
import argparse
import json
import os
import sys

from training.schedule_plot import plot_curves


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
