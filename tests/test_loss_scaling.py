from training.loss_scaling import LossScale, update


def test_overflow_skips_the_step_and_halves_the_scale():
    state, apply = update(LossScale(1024.0, 5), overflow=True)
    assert not apply
    assert state == LossScale(512.0, 0)


def test_growth_after_n_good_steps():
    state = LossScale(8.0, 0)
    for i in range(3):
        state, apply = update(state, overflow=False, growth_interval=4)
        assert apply and state.scale == 8.0 and state.good_steps == i + 1
    state, apply = update(state, overflow=False, growth_interval=4)
    assert apply and state == LossScale(16.0, 0)


def test_an_overflow_resets_the_good_step_count():
    state = LossScale(8.0, 3)
    state, _ = update(state, overflow=True, growth_interval=4)
    state, _ = update(state, overflow=False, growth_interval=4)
    assert state == LossScale(4.0, 1)


def test_bounds():
    assert update(LossScale(1.0, 0), overflow=True)[0].scale == 1.0
    assert update(LossScale(2.0 ** 24, 9), overflow=False, growth_interval=10)[0].scale == 2.0 ** 24
