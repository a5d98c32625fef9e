"""Dynamic loss scaling for FP16 training, as a pure state machine.

Half-precision gradients underflow when the loss is small, so the loss is multiplied by a
scale before backward and the gradients divided by it before the update. If any gradient is
inf/NaN the scale was too large: skip the update and halve it. After ``growth_interval``
good steps in a row, try doubling it. (The rule of Micikevicius et al. 2018 and of nnabla's
``DynamicLossScalingUpdater``; kept free of nnabla so it is unit-tested on the CPU.)
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class LossScale:
    scale: float = 2.0 ** 15
    good_steps: int = 0


def update(state, overflow, growth_interval=2000, factor=2.0, min_scale=1.0,
           max_scale=2.0 ** 24):
    """(new_state, apply_update) after a step whose gradients did (not) overflow."""
    if overflow:
        return LossScale(max(state.scale / factor, min_scale), 0), False
    good = state.good_steps + 1
    if good >= growth_interval:
        return LossScale(min(state.scale * factor, max_scale), 0), True
    return LossScale(state.scale, good), True
