"""SGD with momentum (or LARS), with weight decay only where it belongs.

nnabla's ``solver.weight_decay(rate)`` decays every parameter the solver holds, so the
parameters are split over two solvers: one for convolution/affine weights (decayed) and one
for BN gammas/betas and biases (not decayed), as in Goyal et al. and nnabla-examples'
``MomentumNoWeightDecayBn``.

With ``kind="lars"`` the weights get nnabla's ``solvers.Lars``: a layer-wise trust ratio
``coefficient * |w| / (|g| + wd * |w|)`` scales the rate, and the weight decay is fused into
its update (``weight_decay`` only records the rate; nnabla keeps the first non-zero rate for
good, so a new rate needs a new solver: ``configure`` does that). BN parameters and biases
stay on plain momentum SGD at the same rate, without decay or trust ratio, as TensorFlow's
``LARSOptimizer`` (``skip_list``) and the MLPerf ResNet-50 reference LARS leave them.

Batch-size control may change momentum and weight decay between stages (``configure``);
the solvers are then rebuilt with the momentum buffers carried over.
"""
import nnabla.solvers as S

from models.resnet import is_decay_exempt


class Optimizer:
    def __init__(self, params, momentum=0.9, weight_decay=1e-4, kind="momentum",
                 lars_coefficient=0.001, lars_eps=1e-6):
        if kind not in ("momentum", "lars"):
            raise ValueError(f"optimizer {kind!r} is not one of momentum, lars")
        self.kind = kind
        self.lars = (lars_coefficient, lars_eps)
        self.groups = {"decayed": {k: v for k, v in params.items() if not is_decay_exempt(k)},
                       "exempt": {k: v for k, v in params.items() if is_decay_exempt(k)}}
        self.momentum = self.weight_decay = None
        self.solvers = {}
        self.configure(momentum, weight_decay)

    def _make(self, group, momentum):
        if group == "decayed" and self.kind == "lars":
            return S.Lars(lr=0.0, momentum=momentum, coefficient=self.lars[0], eps=self.lars[1])
        return S.Momentum(lr=0.0, momentum=momentum)

    def configure(self, momentum, weight_decay):
        """Set momentum and weight decay; rebuilds the solvers (keeping their state) if needed."""
        rebuild = momentum != self.momentum or (self.kind == "lars"
                                                and weight_decay != self.weight_decay)
        self.weight_decay = weight_decay
        if not rebuild:
            return
        self.momentum = momentum
        states = self.get_states() if self.solvers else None
        self.solvers = {}
        for group, params in self.groups.items():
            self.solvers[group] = self._make(group, momentum)
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
        """Apply weight decay to the (already all-reduced) gradients, then update."""
        if self.weight_decay:
            self.solvers["decayed"].weight_decay(self.weight_decay)
        for s in self.solvers.values():
            s.set_learning_rate(lr)
            s.update()

    def get_states(self):
        return {name: s.get_states() for name, s in self.solvers.items()}

    def set_states(self, states):
        for name, s in self.solvers.items():
            s.set_states(states[name])
