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
rewriting the gradient first (``LarsGradients``), and not on nnabla's own ``solvers.Lars``,
because that one differs from the reference where a norm is zero (nnabla 1.39.0, CPU
``lars.cpp`` and CUDA ``lars.cu`` alike): with |g| = 0 it uses trust eta / wd instead of 1,
which matters at the first updates of a residual branch whose last BN gamma starts at 0 (its
weights get no gradient yet); with |w| = 0 it makes no update; and its eps is added only when
the denominator is below eps, so eps = 0 divides by zero when |g| = wd * |w| = 0.
tests/test_lars.py checks one hand-computed step, the |g| = 0 case included, on both ways
``LarsGradients`` computes it.

Batch-size control may change momentum and weight decay between stages (``configure``);
the solvers are then rebuilt with the momentum buffers carried over.
"""
import contextlib

import nnabla as nn
import nnabla.functions as F
import nnabla.solvers as S
import numpy as np

from models.resnet import is_decay_exempt

KINDS = ("momentum", "lars")


def lars_trust_ratio(w, g, weight_decay, eta, eps):
    """The reference trust ratio of one tensor from its data ``w`` and gradient ``g`` (nnabla
    Variables or NdArrays): a 0-d result."""
    w_norm, g_norm = F.norm(w), F.norm(g)
    ratio = eta * w_norm / (g_norm + weight_decay * w_norm + eps)
    use = F.logical_and(F.greater_scalar(w_norm, 0.0), F.greater_scalar(g_norm, 0.0))
    return F.where(use, ratio, F.r_sub_scalar(F.mul_scalar(w_norm, 0.0), 1.0))   # else 1


class LarsGradients:
    """g <- trust * (g + wd * w) for every tensor of ``params``, in place: the reference's LARS
    step before its momentum update.

    On the CPU it is numpy on nnabla's own buffers (``p.d`` and ``p.g`` are views there: about
    3 ms a step for the 54 weight tensors of the 1/8-width ResNet-50). Arrays on a GPU are not
    brought to the host: there it is one nnabla graph over the parameters' arrays, built once
    per weight decay and run with one forward a step, its output written into the gradients
    (on this CPU that graph takes about 27 ms a step for the same 54 tensors; **not run on a
    GPU**, where NVIDIA's MLPerf code fuses LARS into a few kernels instead).
    """

    def __init__(self, params, eta, eps, ctx=None, on_host=None):
        self.params, self.eta, self.eps, self.ctx = params, eta, eps, ctx
        backend = ctx.backend[0] if ctx is not None else "cpu:float"
        self.on_host = backend.startswith("cpu") if on_host is None else on_host
        self._graph = self._graph_decay = None

    def __call__(self, weight_decay):
        if self.on_host:
            for p in self.params.values():
                w, g = p.d, p.g
                w_norm, g_norm = float(np.linalg.norm(w)), float(np.linalg.norm(g))
                trust = (self.eta * w_norm / (g_norm + weight_decay * w_norm + self.eps)
                         if w_norm > 0 and g_norm > 0 else 1.0)
                if weight_decay:
                    g += weight_decay * w
                g *= trust
            return
        if self._graph is None or self._graph_decay != weight_decay:
            self._graph, self._graph_decay = self._build(weight_decay), weight_decay
        self._graph.forward()

    def _build(self, weight_decay):
        scope = nn.context_scope(self.ctx) if self.ctx else contextlib.nullcontext()
        outputs = []
        with scope, nn.auto_forward(False):
            for p in self.params.values():
                w, g = nn.Variable(p.shape), nn.Variable(p.shape)
                w.data, g.data = p.data, p.grad          # the parameter's own arrays
                trust = lars_trust_ratio(w, g, weight_decay, self.eta, self.eps)
                decayed = g + weight_decay * w if weight_decay else g
                out = decayed * F.reshape(trust, (1,) * len(p.shape))
                out.data = p.grad                        # written back in place
                out.persistent = True
                outputs.append(out)
            return F.sink(*outputs)


class Optimizer:
    def __init__(self, params, momentum=0.9, weight_decay=1e-4, kind="momentum",
                 lars_coefficient=0.001, lars_eps=0.0, float_ctx=None, lars_on_host=None):
        """``float_ctx``: where LARS computes its norms (float even when the model is half);
        ``lars_on_host``: numpy (True) or an nnabla graph (False); default: by the context."""
        if kind not in KINDS:
            raise ValueError(f"optimizer {kind!r} is not one of {', '.join(KINDS)}")
        self.kind = kind
        self.groups = {"decayed": {k: v for k, v in params.items() if not is_decay_exempt(k)},
                       "exempt": {k: v for k, v in params.items() if is_decay_exempt(k)}}
        self.lars = LarsGradients(self.groups["decayed"], lars_coefficient, lars_eps, float_ctx,
                                  lars_on_host) if kind == "lars" else None
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

    def grads_probe(self, float_ctx):
        """A callable giving one device scalar, finite iff every gradient is (see GradProbe):
        one graph run per update instead of grads_finite's host sync per array."""
        if getattr(self, "_probe", None) is None:
            self._probe = GradProbe([p for g in self.groups.values() for p in g.values()],
                                    float_ctx)
        return self._probe

    def grads_finite(self):
        """False if any gradient holds inf or NaN (an FP16 overflow, or divergence)."""
        return not any(s.check_inf_or_nan_grad() for s in self.solvers.values())

    def step(self, lr):
        """Apply weight decay (and LARS) to the already all-reduced gradients, then update."""
        if self.lars:
            self.lars(self.weight_decay)
        elif self.weight_decay:
            self.solvers["decayed"].weight_decay(self.weight_decay)
        for s in self.solvers.values():
            s.set_learning_rate(lr)
            s.update()

    def get_states(self):
        return {name: s.get_states() for name, s in self.solvers.items()}

    def set_states(self, states):
        for name, s in self.solvers.items():
            s.set_states(states[name])


class GradProbe:
    """The sum of every gradient, in float: finite iff all of them are (an inf or NaN anywhere
    makes it inf or NaN; finite float16 values, or BN's float32 ones, cannot overflow float32
    in a sum of 25M elements). One nnabla graph over Variables that share the parameters'
    gradient arrays: an update costs one forward call and one scalar on the device, where
    Solver.check_inf_or_nan_grad runs one reduction per parameter, each synchronising the
    host (nnabla-ext-cuda mixed_precision_training.cuh:70-82). In the float context, as the
    float solvers' own check was."""

    def __init__(self, params, float_ctx):
        terms = []
        with nn.context_scope(float_ctx), nn.auto_forward(False):
            for p in params:
                v = nn.Variable(p.shape)
                v.data = p.grad               # shares the gradient's array, no copy
                terms.append(F.sum(v))
            self.out = F.add_n(*terms) if len(terms) > 1 else terms[0]

    def __call__(self):
        self.out.forward(clear_no_need_grad=True)
        return self.out.data
