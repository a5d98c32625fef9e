"""Batch-size control: the global batch in stages over epochs, resolved for a world size.

A stage runs until an epoch and has a global batch (samples per update, summed over ranks),
optionally with its own momentum, weight decay, label smoothing and absolute peak learning
rate (``peak_lr``: the rate the run's schedule shape is multiplied by during the stage)::

    [{until_epoch: 5, global_batch: 34816}, {until_epoch: 90, global_batch: 69632}]

Progress is counted in samples of the whole job (the stream of data/sampler.py), so a batch
change never skips or repeats a sample. Which step belongs to which stage is defined by where
the step *starts*: a stage's first step is the first step that starts at or after the previous
stage's ``until_epoch``. The last step of a stage may therefore run a little past its boundary
(at most one step), and the run ends with the first step that reaches ``train.epochs``.

For ``world_size`` ranks each stage gets a per-rank batch and a number of accumulation steps:

* ``grow_local``: per-rank batch = global / world, one forward/backward per update (the trainer
  builds a graph of the new size sharing the weights). BN statistics are over the per-rank batch.
* ``accumulate``: the per-rank micro-batch stays the first stage's (or the largest divisor of it
  within ``max_local_batch``); a stage with a k times larger global batch runs k micro-steps per
  update, summing gradients. BN statistics stay over the micro-batch (a "ghost batch"), and the
  running statistics are updated once per micro-step.

Pure arithmetic: no nnabla, no MPI (tests/test_batch_schedule.py checks the imports).
"""
import math
from dataclasses import dataclass, field
from fractions import Fraction

MODES = ("grow_local", "accumulate")
OPTIONAL_KEYS = ("momentum", "weight_decay", "label_smoothing", "peak_lr")
UNBOUNDED_KEYS = ("weight_decay", "peak_lr")     # >= 0 (peak_lr > 0); the others in [0, 1]
STAGE_KEYS = ("until_epoch", "global_batch") + OPTIONAL_KEYS


class ScheduleError(ValueError):
    """A schedule problem; the message names the stage and what would work."""


@dataclass(frozen=True)
class Stage:
    index: int
    until_epoch: float
    global_batch: int          # samples per update, all ranks
    local_batch: int           # samples per forward/backward on one rank
    accumulation: int          # forward/backward passes per update
    first_step: int            # index of the stage's first update (0-based)
    steps: int                 # updates in the stage
    start_sample: int          # samples of the whole job consumed before its first step
    overrides: dict = field(default_factory=dict)   # any of OPTIONAL_KEYS

    @property
    def end_step(self):
        return self.first_step + self.steps

    @property
    def end_sample(self):
        return self.start_sample + self.steps * self.global_batch


# --- checking the stage list (no world size needed: the config loader calls this) ---------
def check_stages(stages, epochs):
    """Raise ScheduleError unless ``stages`` is a valid list of stage mappings for ``epochs``."""
    if not stages:
        raise ScheduleError("batch.stages is empty; give at least one "
                            "{until_epoch: E, global_batch: B}")
    previous = 0.0
    for i, stage in enumerate(stages):
        where = f"batch.stages[{i}]"
        if not isinstance(stage, dict):
            raise ScheduleError(f"{where} must be a mapping like {{until_epoch: 5, "
                                f"global_batch: 1024}}, got {stage!r}")
        unknown = sorted(set(stage) - set(STAGE_KEYS))
        if unknown:
            raise ScheduleError(f"{where} has unknown key(s) {', '.join(map(repr, unknown))}; "
                                f"valid keys: {', '.join(STAGE_KEYS)}")
        for key in ("until_epoch", "global_batch"):
            if key not in stage:
                raise ScheduleError(f"{where} needs {key}")
        until, batch = stage["until_epoch"], stage["global_batch"]
        if isinstance(until, bool) or not isinstance(until, (int, float)) or until <= previous:
            raise ScheduleError(f"{where}.until_epoch={until!r} must be a number greater than "
                                f"the previous stage's ({previous:g})")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch <= 0:
            raise ScheduleError(f"{where}.global_batch={batch!r} must be a positive integer")
        for key in OPTIONAL_KEYS:
            value, upper = stage.get(key), math.inf if key in UNBOUNDED_KEYS else 1.0
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value <= upper or key == "peak_lr" and value == 0):
                bounds = {"peak_lr": "> 0", "weight_decay": ">= 0"}.get(key, "in [0, 1]")
                raise ScheduleError(f"{where}.{key}={value!r} must be a number {bounds}")
        previous = until
    if not math.isclose(previous, epochs):
        raise ScheduleError(f"batch.stages[{len(stages) - 1}].until_epoch={previous:g} must equal "
                            f"train.epochs={epochs:g}: the last stage runs to the end")


# --- per-rank split ----------------------------------------------------------------------
def _multiples_near(value, unit):
    below = max(unit, value // unit * unit)
    above = -(-value // unit) * unit
    return sorted({below, above})


def largest_divisor_at_most(n, cap):
    return max(d for d in range(1, min(n, cap) + 1) if n % d == 0)


def split_batch(global_batch, world_size, mode, max_local_batch=None, micro_batch=None,
                where="batch.stages[0]"):
    """(local_batch, accumulation) of one stage; ScheduleError says what would work instead.

    ``micro_batch`` is the accumulate mode's fixed per-rank micro-batch (None: this is the first
    stage, which sets it: its per-rank batch, or the largest divisor of that within
    ``max_local_batch``).
    """
    if mode not in MODES:
        raise ScheduleError(f"batch.mode={mode!r} is not one of {', '.join(MODES)}")
    if micro_batch is None or mode == "grow_local":
        if global_batch % world_size:
            near = " or ".join(f"{b:,}" for b in _multiples_near(global_batch, world_size))
            raise ScheduleError(f"{where}.global_batch={global_batch:,} is not divisible by "
                                f"{world_size:,} ranks; nearest valid: {near}")
        local = global_batch // world_size
        if not max_local_batch or local <= max_local_batch:
            return local, 1
        micro = largest_divisor_at_most(local, max_local_batch)
        if mode == "accumulate":
            return micro, local // micro
        raise ScheduleError(
            f"{where}: per-rank batch {local} ({global_batch:,} / {world_size:,} ranks) exceeds "
            f"batch.max_local_batch={max_local_batch}; use batch.mode=accumulate "
            f"({local // micro} micro-steps of {micro}), global_batch <= "
            f"{max_local_batch * world_size:,}, or at least "
            f"{-(-global_batch // max_local_batch):,} ranks")
    unit = micro_batch * world_size
    if global_batch % unit:
        near = " or ".join(f"{b:,}" for b in _multiples_near(global_batch, unit))
        raise ScheduleError(f"{where}.global_batch={global_batch:,} is not a whole number of "
                            f"micro-steps of {micro_batch} per rank x {world_size:,} ranks "
                            f"(= {unit:,}); with batch.mode=accumulate use a multiple such as "
                            f"{near}")
    return micro_batch, global_batch // unit


def split_stages(stages, world_size, mode, max_local_batch=None):
    """(local_batch, accumulation) of every stage on ``world_size`` ranks (the accumulate
    mode's micro-batch is the first stage's); ScheduleError for the first that cannot split."""
    splits, micro = [], None
    for i, spec in enumerate(stages):
        local, accum = split_batch(spec["global_batch"], world_size, mode, max_local_batch,
                                   micro, f"batch.stages[{i}]")
        if mode == "accumulate" and micro is None:
            micro = local
        splits.append((local, accum))
    return splits


# --- the plan ----------------------------------------------------------------------------
class BatchPlan:
    """Stages placed on the step axis for one world size and epoch length (samples).

    ``stages`` are mappings as in the config; ``epoch_length`` is the whole job's samples per
    epoch including padding (``data.sampler.padded_epoch_length``).
    """

    def __init__(self, stages, epochs, epoch_length, world_size, mode="grow_local",
                 max_local_batch=None):
        check_stages(stages, epochs)
        if world_size < 1:
            raise ScheduleError(f"world size {world_size} must be at least 1")
        self.epochs = epochs
        self.epoch_length = epoch_length
        self.world_size = world_size
        self.mode = mode
        self.max_local_batch = max_local_batch
        self.stages = []
        splits = split_stages(stages, world_size, mode, max_local_batch)
        step, sample = 0, 0
        for i, (spec, (local, accum)) in enumerate(zip(stages, splits)):
            where = f"batch.stages[{i}]"
            # exact, in samples; str(): 0.2 means 1/5, not the binary float just above it
            boundary = Fraction(str(spec["until_epoch"])) * epoch_length
            steps = max(0, math.ceil((boundary - sample) / spec["global_batch"]))
            if steps == 0:
                raise ScheduleError(
                    f"{where} (until epoch {spec['until_epoch']:g}) gets no steps: the previous "
                    f"stage's last step already reaches epoch {sample / epoch_length:.6f} "
                    f"(sample {sample:,}); lengthen it or drop it")
            overrides = {k: spec[k] for k in OPTIONAL_KEYS if spec.get(k) is not None}
            self.stages.append(Stage(i, float(spec["until_epoch"]), spec["global_batch"], local,
                                     accum, step, steps, sample, overrides))
            step += steps
            sample += steps * spec["global_batch"]
        self.total_steps = step
        self.total_samples = sample

    def stage_of_step(self, step):
        """The stage that update ``step`` (0-based) belongs to; the last one past the end."""
        for stage in self.stages:
            if step < stage.end_step:
                return stage
        return self.stages[-1]

    def stage_at_sample(self, sample):
        """The stage whose steps cover job-wide sample position ``sample``."""
        for stage in self.stages:
            if sample < stage.end_sample:
                return stage
        return self.stages[-1]

    def samples_before(self, step):
        """Samples of the whole job consumed before update ``step`` (0-based) starts."""
        stage = self.stage_of_step(step)
        return stage.start_sample + (step - stage.first_step) * stage.global_batch

    def epoch_before(self, step):
        return self.samples_before(step) / self.epoch_length


def constant_stages(global_batch, epochs):
    """The stage list of a run without batch-size control."""
    return [{"until_epoch": epochs, "global_batch": global_batch}]


def stage_hyper(stage, momentum, weight_decay, label_smoothing):
    """(momentum, weight_decay, label_smoothing) of ``stage``: its overrides, else the defaults."""
    o = stage.overrides
    return (o.get("momentum", momentum), o.get("weight_decay", weight_decay),
            o.get("label_smoothing", label_smoothing))

