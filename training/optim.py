"""SGD with momentum, or LARS as MLPerf's reference defines it; weight decay only where it belongs.

nnabla's ``solver.weight_decay(rate)`` decays every parameter the solver holds, so the
parameters are split over two solvers: one for convolution/affine weights (decayed) and one
for BN gammas/betas and biases (not decayed), as in Goyal et al. and nnabla-examples'
``MomentumNoWeightDecayBn``.

``kind="lars"`` is the LARS of MLPerf's ResNet-50 reference (mlcommons/training,
``image_classification/tensorflow2/lars_optimizer.py``, class ``LARSOptimizer``, with
``skip_list=['batch_normalization', 'bias']``). For each weight tensor w with gradient g::

    trust = eta * |w| / (|g| + wd * |w| + eps)   if |w| > 0 and |g| > 0, else 1
    v     = momentum * v + lr * trust * (g + wd * w)
    w     = w - v

BN parameters and biases skip both the trust ratio and the weight decay (plain momentum SGD
at the same rate). MLPerf's closed rules fix eps = 0 and eta = 0.001.

It is built here on ``solvers.Momentum`` (whose update is exactly the last two lines) by
rewriting the gradient first, and not on nnabla's own ``solvers.Lars``, because that one
differs from the reference where a norm is zero (nnabla 1.39.0, CPU ``lars.cpp`` and CUDA
``lars.cu`` alike): with |g| = 0 it uses trust eta / wd instead of 1, which matters at the
first updates of a residual branch whose last BN gamma starts at 0 (its weights get no
gradient yet); with |w| = 0 it makes no update; and its eps is added only when the
denominator is below eps, so eps = 0 divides by zero when |g| = wd * |w| = 0.
tests/test_lars.py checks one hand-computed step, the |g| = 0 case included.

Batch-size control may change momentum and weight decay between stages (``configure``);
the solvers are then rebuilt with the momentum buffers carried over.
"""
import contextlib

import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S

from models.resnet import is_decay_exempt

KINDS = ("momentum", "lars")


def lars_trust_ratio(w, g, weight_decay, eta, eps):
    """The reference trust ratio of one tensor, as a 0-d NdArray (data ``w``, grad ``g``)."""
    w_norm, g_norm = F.norm(w), F.norm(g)
    ratio = eta * w_norm / (g_norm + weight_decay * w_norm + eps)
    use = F.logical_and(F.greater_scalar(w_norm, 0.0), F.greater_scalar(g_norm, 0.0))
    return F.where(use, ratio, F.r_sub_scalar(F.mul_scalar(w_norm, 0.0), 1.0))   # else 1


class Optimizer:
    def __init__(self, params, momentum=0.9, weight_decay=1e-4, kind="momentum",
                 lars_coefficient=0.001, lars_eps=0.0, float_ctx=None):
        """``float_ctx``: where LARS computes its norms (float even when the model is half)."""
        if kind not in KINDS:
            raise ValueError(f"optimizer {kind!r} is not one of {', '.join(KINDS)}")
        self.kind = kind
        self.lars = (lars_coefficient, lars_eps)
        self.float_ctx = float_ctx
        self.groups = {"decayed": {k: v for k, v in params.items() if not is_decay_exempt(k)},
                       "exempt": {k: v for k, v in params.items() if is_decay_exempt(k)}}
        self.momentum = self.weight_decay = None
        self.solvers = {}
        self.configure(momentum, weight_decay)

    def configure(self, momentum, weight_decay):
        """Set momentum and weight decay; rebuilds the solvers (keeping their state) if needed."""
        self.weight_decay = weight_decay
        if momentum == self.momentum:
            return
        self.momentum = momentum
        states = self.get_states() if self.solvers else None
        self.solvers = {}
        for group, params in self.groups.items():
            self.solvers[group] = S.Momentum(lr=0.0, momentum=momentum)
            self.solvers[group].set_parameters(params)
        if states:
            self.set_states(states)

    def zero_grad(self):
        for s in self.solvers.values():
            s.zero_grad()

    def scale_grad(self, factor):
        """Multiply every gradient by ``factor`` (the mean over accumulation micro-steps)."""
        for s in self.solvers.values():
            s.scale_grad(factor)

    def grads_finite(self):
        """False if any gradient holds inf or NaN (an FP16 overflow, or divergence)."""
        return not any(s.check_inf_or_nan_grad() for s in self.solvers.values())

    def step(self, lr):
        """Apply weight decay (and LARS) to the already all-reduced gradients, then update."""
        if self.kind == "lars":
            self._lars_gradients()
        elif self.weight_decay:
            self.solvers["decayed"].weight_decay(self.weight_decay)
        for s in self.solvers.values():
            s.set_learning_rate(lr)
            s.update()

    def _lars_gradients(self):
        """g <- trust * (g + wd * w) for every decayed tensor, in place (on its device)."""
        eta, eps = self.lars
        scope = nn.context_scope(self.float_ctx) if self.float_ctx else contextlib.nullcontext()
        with scope:
            for p in self.groups["decayed"].values():
                w, g = p.data, p.grad
                trust = lars_trust_ratio(w, g, self.weight_decay, eta, eps)
                decayed = g + self.weight_decay * w if self.weight_decay else g
                g.copy_from(decayed * F.reshape(trust, (1,) * len(w.shape)))

    def get_states(self):
        return {name: s.get_states() for name, s in self.solvers.items()}

    def set_states(self, states):
        for name, s in self.solvers.items():
            s.set_states(states[name])
