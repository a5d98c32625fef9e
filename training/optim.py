"""SGD with momentum, with weight decay only where it belongs.

nnabla's ``solver.weight_decay(rate)`` decays every parameter the solver holds, so the
parameters are split over two solvers: one for convolution/affine weights (decayed) and one
for BN gammas/betas and biases (not decayed), as in Goyal et al. and nnabla-examples'
``MomentumNoWeightDecayBn``.
"""
import nnabla.solvers as S

from models.resnet import is_decay_exempt


class Optimizer:
    def __init__(self, params, momentum=0.9, weight_decay=1e-4):
        self.weight_decay = weight_decay
        decayed = {k: v for k, v in params.items() if not is_decay_exempt(k)}
        exempt = {k: v for k, v in params.items() if is_decay_exempt(k)}
        self.solvers = {"decayed": S.Momentum(lr=0.0, momentum=momentum),
                        "exempt": S.Momentum(lr=0.0, momentum=momentum)}
        self.solvers["decayed"].set_parameters(decayed)
        self.solvers["exempt"].set_parameters(exempt)

    def zero_grad(self):
        for s in self.solvers.values():
            s.zero_grad()

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
