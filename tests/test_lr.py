import math

import pytest

from schedules.lr import decay_factor, learning_rate, peak_lr


def test_peak_scales_with_global_batch():
    assert peak_lr(0.1, 256) == pytest.approx(0.1)
    assert peak_lr(0.1, 8192) == pytest.approx(3.2)
    assert peak_lr(0.1, 1024, "sqrt") == pytest.approx(0.2)
    with pytest.raises(ValueError, match="scaling"):
        peak_lr(0.1, 256, "cubic")


def test_warmup_is_linear_per_iteration_and_reaches_the_peak():
    kw = dict(peak=2.0, total_epochs=10, warmup_epochs=2, decay="cosine")
    assert learning_rate(0.0, **kw) == 0.0
    assert learning_rate(0.5, **kw) == pytest.approx(0.5)
    assert learning_rate(1.0, **kw) == pytest.approx(1.0)
    assert learning_rate(2.0, **kw) == pytest.approx(2.0)
    assert learning_rate(1.0, warmup_start_factor=0.5, **kw) == pytest.approx(1.5)


def test_cosine_poly_and_step_decay_values():
    assert learning_rate(6.0, 1.0, 10, 2, decay="cosine") == pytest.approx(0.5)
    assert learning_rate(10.0, 1.0, 10, 2, decay="cosine") == pytest.approx(0.0)
    assert learning_rate(6.0, 1.0, 10, 2, decay="poly", poly_power=2) == pytest.approx(0.25)
    assert learning_rate(10.0, 1.0, 10, 2, decay="cosine", final_factor=0.1) == \
        pytest.approx(0.1)
    step = dict(decay="step", milestones=[30, 60, 80], gamma=0.1)
    assert learning_rate(29.99, 1.0, 90, 5, **step) == pytest.approx(1.0)
    assert learning_rate(30.0, 1.0, 90, 5, **step) == pytest.approx(0.1)
    assert learning_rate(85.0, 1.0, 90, 5, **step) == pytest.approx(0.001)


def test_closed_form_is_continuous_at_the_end_of_warmup():
    a = learning_rate(5 - 1e-9, 3.0, 90, 5, decay="poly")
    b = learning_rate(5.0, 3.0, 90, 5, decay="poly")
    assert math.isclose(a, b, rel_tol=1e-6)


def test_unknown_decay():
    with pytest.raises(ValueError, match="decay"):
        decay_factor(3, 10, 1, "linear")
