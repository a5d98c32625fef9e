"""When a run logs, evaluates and checkpoints, decided from whole sample counts.

An update moves the job from ``samples_before(step)`` to ``samples_before(step + 1)``
samples. A cadence of every E epochs (from a first epoch F) fires at the update that crosses
F, F + E, F + 2E, ... epochs, computed exactly: epochs are fractions of the (padded) epoch
length, so no floating-point epoch is compared and no tolerance is needed.
"""
import math
from fractions import Fraction
from typing import NamedTuple


class Events(NamedTuple):
    """What is due after one update."""
    log: bool           # a "step" line (every log_every_steps updates, and the last)
    epoch_end: bool     # a whole epoch was crossed
    evaluate: bool      # the eval cadence was crossed, or this is the last update
    checkpoint: bool    # the checkpoint cadence (steps or epochs), or the last update
    last: bool


def crossed(before, after, every, first, epoch_length):
    """Did the samples ``before`` -> ``after`` cross ``first``, ``first + every``, ... epochs
    (``first`` None: the multiples of ``every``; ``every`` <= 0: never)?"""
    if not every or every <= 0:
        return False
    unit = Fraction(str(every)) * epoch_length
    start = unit if first is None else Fraction(str(first)) * epoch_length
    count = lambda samples: math.floor((samples - start) / unit)  # noqa: E731
    return count(after) > count(before) and count(after) >= 0


class Clock:
    """``events(step)``: what is due after update ``step`` (counted from 1)."""

    def __init__(self, plan, total_steps, log_every_steps, eval_every, eval_first,
                 checkpoint_every_steps, checkpoint_every_epochs):
        self.plan, self.total = plan, total_steps
        self.log_every = log_every_steps
        self.eval_every, self.eval_first = eval_every, eval_first
        self.ck_steps, self.ck_epochs = checkpoint_every_steps, checkpoint_every_epochs

    @classmethod
    def from_config(cls, cfg, schedule):
        return cls(schedule.plan, schedule.total_steps, cfg.train.log_every_steps,
                   cfg.eval.every_epochs, cfg.eval.first_epoch, cfg.checkpoint.every_steps,
                   cfg.checkpoint.every_epochs)

    def events(self, step):
        before, after = self.plan.samples_before(step - 1), self.plan.samples_before(step)
        length, last = self.plan.epoch_length, step == self.total
        return Events(
            log=step % self.log_every == 0 or last,
            epoch_end=crossed(before, after, 1, None, length),
            evaluate=last or crossed(before, after, self.eval_every, self.eval_first, length),
            checkpoint=last or bool(self.ck_steps and step % self.ck_steps == 0)
            or crossed(before, after, self.ck_epochs, None, length),
            last=last)
