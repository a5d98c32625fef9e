"""Learning rate as a closed-form function of training progress (pure arithmetic).

The peak rate is ``base_lr`` per 256 samples scaled by the global batch (linear rule,
Goyal et al., or square-root rule). Progress is measured in epochs (a float: samples seen /
samples per epoch), so the value at any step follows from the step's position alone and a
resumed run computes exactly what an uninterrupted one would.

A recipe may instead state the peak as an absolute rate (``optim.peak_lr``; LARS recipes
such as MLPerf's do), and the end of a cosine or poly decay as an absolute rate
(``optim.end_lr``; MLPerf's closed rules fix 1e-4) rather than a fraction of the peak.

Shape: linear warm-up from ``warmup_start_factor * peak`` to ``peak`` over ``warmup_epochs``
(evaluated per iteration), then ``cosine``, ``poly`` (power) or ``step`` decay until
``total_epochs``.
"""
import bisect
import math


def peak_lr(base_lr, global_batch, scaling="linear"):
    """``base_lr`` is the rate for 256 samples; scale it to ``global_batch``."""
    ratio = global_batch / 256.0
    if scaling == "linear":
        return base_lr * ratio
    if scaling == "sqrt":
        return base_lr * math.sqrt(ratio)
    raise ValueError(f"unknown lr scaling {scaling!r}: use linear or sqrt")


def decay_factor(epoch, total_epochs, warmup_epochs, decay, poly_power=2.0,
                 milestones=(), gamma=0.1, final_factor=0.0):
    """Multiplier in [0, 1] of the peak rate after warm-up, at fractional ``epoch``."""
    if decay == "step":
        return gamma ** bisect.bisect_right(sorted(milestones), epoch)
    span = max(total_epochs - warmup_epochs, 1e-12)
    t = min(max((epoch - warmup_epochs) / span, 0.0), 1.0)
    if decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * t))
    elif decay == "poly":
        shape = (1.0 - t) ** poly_power
    else:
        raise ValueError(f"unknown decay {decay!r}: use cosine, poly or step")
    return final_factor + (1.0 - final_factor) * shape


def learning_rate(epoch, peak, total_epochs, warmup_epochs=0.0, warmup_start_factor=0.0,
                  decay="cosine", end_lr=None, **decay_args):
    """Rate at fractional ``epoch`` (the progress *before* the update it is used for).

    ``end_lr``: the absolute rate a cosine or poly decay ends at (then ``final_factor`` is
    not used): ``end_lr + (peak - end_lr) * shape``, as MLPerf's polynomial decay.
    """
    if warmup_epochs > 0 and epoch < warmup_epochs:
        frac = epoch / warmup_epochs
        return peak * (warmup_start_factor + (1.0 - warmup_start_factor) * frac)
    if end_lr is not None and decay != "step":
        shape = decay_factor(epoch, total_epochs, warmup_epochs, decay,
                             **dict(decay_args, final_factor=0.0))
        return end_lr + (peak - end_lr) * shape
    return peak * decay_factor(epoch, total_epochs, warmup_epochs, decay, **decay_args)
