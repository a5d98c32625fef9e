"""The run's schedule: batch stages and learning rate as closed-form functions of the update.

For update ``step`` (0-based) of stage ``s``::

    epoch  = samples the whole job consumed before the step / samples per epoch   (exact)
    lr     = peak(s) * shape(epoch)          (with an absolute end rate: end + (peak - end) * shape)
    peak   = s's own peak_lr, else optim.peak_lr (absolute), else scale(base_lr, B)
    B      = s.global_batch                 (batch.lr_batch: stage, the default)
             or the first stage's batch     (batch.lr_batch: first)
    scale  = base_lr * B / 256 (linear) or base_lr * sqrt(B / 256) (sqrt)
    shape  = linear warm-up per iteration, then cosine / poly / step decay (schedules/lr.py)

Everything follows from the step index, so a resumed run computes the same values.

At a stage switch with ``lr_batch: stage`` and linear scaling the rate jumps with the batch
(34,816 -> 69,632 doubles it), while the rate *per sample*, lr / B, stays continuous; that is the
linear scaling rule applied to the batch in use. With ``lr_batch: first`` the rate does not
jump, and growing the batch acts like decaying the rate (Smith et al. 2018).
"""
import math

from .batch import BatchPlan, constant_stages, stage_hyper
from .lr import learning_rate, peak_lr as scaled_peak

LR_BATCH = ("stage", "first")


class TrainingSchedule:
    def __init__(self, plan, base_lr, scaling="linear", lr_batch="stage", warmup_epochs=0.0,
                 warmup_start_factor=0.0, decay="cosine", defaults=(0.9, 1e-4, 0.0),
                 peak_lr=None, end_lr=None, **decay_args):
        if lr_batch not in LR_BATCH:
            raise ValueError(f"batch.lr_batch={lr_batch!r} is not one of {', '.join(LR_BATCH)}")
        if base_lr is None and peak_lr is None and not all(
                "peak_lr" in s.overrides for s in plan.stages):
            raise ValueError("no learning rate: give base_lr (per 256 samples, scaled), "
                             "peak_lr (absolute), or a peak_lr in every stage")
        self.plan = plan
        self.base_lr = base_lr
        self.peak_lr = peak_lr
        self.end_lr = end_lr
        self.scaling = scaling
        self.lr_batch = lr_batch
        self.warmup_epochs = warmup_epochs
        self.warmup_start_factor = warmup_start_factor
        self.decay = decay
        self.decay_args = decay_args
        self.defaults = defaults          # momentum, weight decay, label smoothing

    @classmethod
    def from_config(cls, cfg, epoch_length, world_size):
        """From the config sections ``train``, ``optim`` and ``batch`` (training/config.py)."""
        b, o = cfg.batch, cfg.optim
        stages = b.stages or constant_stages(cfg.train.global_batch, cfg.train.epochs)
        plan = BatchPlan(stages, cfg.train.epochs, epoch_length, world_size, b.mode,
                         b.max_local_batch)
        return cls(plan, o.base_lr, o.lr_scaling, b.lr_batch, o.warmup_epochs,
                   o.warmup_start_factor, o.decay,
                   defaults=(o.momentum, o.weight_decay, o.label_smoothing),
                   peak_lr=getattr(o, "peak_lr", None), end_lr=getattr(o, "end_lr", None),
                   poly_power=o.poly_power, milestones=o.step_milestones, gamma=o.step_gamma,
                   final_factor=o.final_lr_factor)

    # --- values -------------------------------------------------------------------------
    @property
    def total_steps(self):
        return self.plan.total_steps

    def stage(self, step):
        return self.plan.stage_of_step(step)

    def hyper(self, stage):
        """{"momentum", "weight_decay", "label_smoothing"} in force during ``stage``."""
        return dict(zip(("momentum", "weight_decay", "label_smoothing"),
                        stage_hyper(stage, *self.defaults)))

    def peak(self, stage):
        """The stage's peak rate: its own ``peak_lr``, the run's absolute one, or scaled."""
        if "peak_lr" in stage.overrides:
            return stage.overrides["peak_lr"]
        if self.peak_lr is not None:
            return self.peak_lr
        batch = stage.global_batch if self.lr_batch == "stage" else self.plan.stages[0].global_batch
        return scaled_peak(self.base_lr, batch, self.scaling)

    def _lr(self, stage, epoch):
        return learning_rate(epoch, self.peak(stage), self.plan.epochs, self.warmup_epochs,
                             self.warmup_start_factor, self.decay, end_lr=self.end_lr,
                             **self.decay_args)

    def end_rate(self, stage):
        """The rate the decay ends at (cosine and poly; step decays have no end rate)."""
        if self.end_lr is not None:
            return self.end_lr
        return self.peak(stage) * self.decay_args.get("final_factor", 0.0)

    def warmup_steps(self):
        """Updates that start inside the warm-up (their rate still rises)."""
        boundary = self.warmup_epochs * self.plan.epoch_length
        steps = 0
        for s in self.plan.stages:
            steps += min(s.steps, max(0, math.ceil((boundary - s.start_sample) / s.global_batch)))
        return steps

    def lr_at_step(self, step):
        """Learning rate of update ``step`` (0-based), from its position alone."""
        return self._lr(self.stage(step), self.plan.epoch_before(step))

    def lr_at_epoch(self, epoch):
        """The rate at any fractional epoch (between steps: that of the stage in force there)."""
        stage = self.plan.stage_at_sample(epoch * self.plan.epoch_length)
        return self._lr(stage, epoch)

    # --- views --------------------------------------------------------------------------
    def rows(self):
        """One dict per stage: what the dry run prints and the start line of log.jsonl records."""
        out = []
        for s in self.plan.stages:
            out.append({
                "stage": s.index,
                "start_epoch": s.start_sample / self.plan.epoch_length,
                "end_epoch": s.end_sample / self.plan.epoch_length,
                "global_batch": s.global_batch, "local_batch": s.local_batch,
                "accumulation": s.accumulation, "first_step": s.first_step, "steps": s.steps,
                "lr_start": self.lr_at_step(s.first_step),
                "lr_end": self.lr_at_step(s.end_step - 1), "peak_lr": self.peak(s),
                **self.hyper(s)})
        return out

    def table(self):
        """The schedule as a fixed-width text table."""
        head = ("stage", "epochs", "global batch", "per rank", "accum", "steps", "lr start",
                "lr end", "peak", "momentum", "wd", "smoothing")
        body = [(str(r["stage"]), f"{r['start_epoch']:.3f} - {r['end_epoch']:.3f}",
                 f"{r['global_batch']:,}", f"{r['local_batch']:,}", str(r["accumulation"]),
                 f"{r['steps']:,}", f"{r['lr_start']:.4g}", f"{r['lr_end']:.4g}",
                 f"{r['peak_lr']:.5g}", f"{r['momentum']:g}", f"{r['weight_decay']:g}",
                 f"{r['label_smoothing']:g}")
                for r in self.rows()]
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(head)]
        lines = ["  ".join(c.rjust(w) for c, w in zip(row, widths)) for row in [head] + body]
        total = (f"total: {self.plan.total_steps:,} updates, "
                 f"{self.plan.total_samples / self.plan.epoch_length:.3f} epochs of "
                 f"{self.plan.epoch_length:,} samples")
        return "\n".join(lines + [total])

    def curve(self, max_points=4000):
        """(epochs, global batches, lrs) at the start of updates, every stage's first and last
        update included; at most about ``max_points`` points (for plots)."""
        stride = max(1, self.plan.total_steps // max_points)
        steps = set(range(0, self.plan.total_steps, stride))
        for s in self.plan.stages:
            steps.update((s.first_step, s.end_step - 1))
        steps = sorted(steps)
        return ([self.plan.epoch_before(i) for i in steps],
                [self.stage(i).global_batch for i in steps],
                [self.lr_at_step(i) for i in steps])
