"""LARS against MLPerf's reference definition, on numbers worked out by hand.

Reference (mlcommons/training image_classification/tensorflow2/lars_optimizer.py): for a
weight w with gradient g, trust = eta*|w| / (|g| + wd*|w| + eps) if |w| > 0 and |g| > 0,
else 1; v = m*v + lr*trust*(g + wd*w); w = w - v. BN parameters and biases: v = m*v + lr*g.
"""
import nnabla as nn
import nnabla.solvers as S
import numpy as np
import pytest

from training.optim import Optimizer


def variable(values, grad):
    v = nn.Variable.from_numpy_array(np.array(values, np.float32), need_grad=True)
    v.g = np.array(grad, np.float32)
    return v


@pytest.fixture
def params():
    # |w| = 5, |g| = 1, not parallel; a BN gamma and a bias with their own gradients
    return {"conv1/conv/W": variable([[3.0, 4.0]], [[0.8, -0.6]]),
            "conv1/bn/gamma": variable([1.0, 2.0], [0.5, -0.5]),
            "fc/affine/b": variable([0.0, 1.0], [1.0, 2.0])}


ON_HOST = pytest.mark.parametrize("on_host", [True, False], ids=["numpy", "nnabla-graph"])


@ON_HOST
def test_two_steps_match_the_hand_computed_reference(params, on_host):
    opt = Optimizer(params, momentum=0.9, weight_decay=0.01, kind="lars",
                    lars_coefficient=0.001, lars_eps=0.0, lars_on_host=on_host)
    w, gamma, b = params["conv1/conv/W"], params["conv1/bn/gamma"], params["fc/affine/b"]

    # step 1, lr 1.05: trust = 0.001 * 5 / (1 + 0.01 * 5) = 0.005 / 1.05
    #   v = 1.05 * (0.005 / 1.05) * (g + 0.01 * w) = 0.005 * [0.83, -0.56] = [0.00415, -0.0028]
    opt.step(1.05)
    assert w.d == pytest.approx(np.array([[2.99585, 4.0028]]), abs=1e-6)
    assert gamma.d == pytest.approx(np.array([1 - 1.05 * 0.5, 2 + 1.05 * 0.5]), abs=1e-6)  # no trust,
    assert b.d == pytest.approx(np.array([0 - 1.05 * 1, 1 - 1.05 * 2]), abs=1e-6)           # no decay

    # step 2, lr 1.05, a zero gradient (a residual branch behind a zero-initialised BN gamma):
    # the reference uses trust 1, so v = 0.9 * [0.00415, -0.0028] + 1.05 * 0.01 * w
    #   = [0.003735 + 0.031456425, -0.00252 + 0.0420294] = [0.035191425, 0.0395094]
    for p in params.values():
        p.g[...] = 0
    opt.step(1.05)
    assert w.d == pytest.approx(np.array([[2.960658575, 3.9632906]]), abs=1e-6)


@ON_HOST
def test_a_zero_weight_gets_a_plain_sgd_step(on_host):
    """|w| = 0: trust 1 (the reference), not 0 (no update at all)."""
    params = {"c/conv/W": variable([[0.0, 0.0]], [[1.0, -2.0]])}
    Optimizer(params, momentum=0.9, weight_decay=1e-4, kind="lars",
              lars_on_host=on_host).step(0.5)
    assert params["c/conv/W"].d == pytest.approx(np.array([[-0.5, 1.0]]), abs=1e-7)


def test_nnabla_lars_differs_where_the_gradient_is_zero():
    """Why training/optim.py does not use nnabla's own solvers.Lars (if this starts failing,
    nnabla now follows the reference and could be used again)."""
    def run(with_nnabla):
        w = variable([[3.0, 4.0]], [[0.0, 0.0]])
        if with_nnabla:
            s = S.Lars(lr=2.0, momentum=0.9, coefficient=0.001, eps=0.0)
            s.set_parameters({"w": w})
            s.weight_decay(0.01)
            s.update()
        else:
            Optimizer({"c/conv/W": w}, 0.9, 0.01, kind="lars").step(2.0)
        return w.d.copy()

    ours, nnabla_lars = run(False), run(True)
    assert ours == pytest.approx(np.array([[3.0, 4.0]]) * (1 - 2 * 0.01), abs=1e-6)   # trust 1
    assert not np.allclose(ours, nnabla_lars)            # nnabla: trust eta / wd = 0.1


@ON_HOST
def test_weight_decay_change_between_stages_is_used_at_once(params, on_host):
    opt = Optimizer(params, momentum=0.9, weight_decay=0.01, kind="lars", lars_on_host=on_host)
    grads = {k: p.g.copy() for k, p in params.items()}
    opt.step(0.0)                          # lr 0 changes nothing but builds the wd-0.01 graph
    for k, p in params.items():
        p.g = grads[k]                     # (the step rewrote the gradients in place)
    opt.configure(momentum=0.9, weight_decay=0.0)         # no decay: trust = 0.001 * 5 / 1
    opt.step(2.0)
    assert params["conv1/conv/W"].d == pytest.approx(
        np.array([[3.0, 4.0]]) - 2 * 0.005 * np.array([[0.8, -0.6]]), abs=1e-6)
