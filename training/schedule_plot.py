"""Draw the global batch and the learning rate over training (PNG, matplotlib's Agg backend).

The trainer's dry run calls ``plot_schedule`` (``--plot-schedule PNG``); a run's log is drawn
by ``tools/report`` (``batch_and_lr.png``). The schedule arithmetic
lives in ``schedules/`` (pure, no plotting); this module only draws.
"""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


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
