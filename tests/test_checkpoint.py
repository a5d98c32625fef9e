import os

import nnabla as nn
import numpy as np
import pytest

from models.resnet import ResNet
from training import checkpoint as ckpt
from training.objective import classification_loss
from training.optim import Optimizer


def test_save_load_roundtrip_and_keep_last_k(tmp_path):
    d = str(tmp_path)
    for step in (10, 20, 30, 40):
        ckpt.save(d, step, {"a": np.arange(step, dtype=np.float32)}, {"step": step}, keep=2)
    paths = ckpt.list_checkpoints(d)
    assert [os.path.basename(p) for p in paths] == ["step-000000030.npz", "step-000000040.npz"]
    arrays, meta = ckpt.load(paths[-1])
    assert meta == {"step": 40}
    np.testing.assert_array_equal(arrays["a"], np.arange(40, dtype=np.float32))
    assert not [f for f in os.listdir(d) if f.startswith(".tmp")]   # no temp file left


def test_truncated_newest_checkpoint_falls_back_to_the_previous(tmp_path):
    d = str(tmp_path)
    ckpt.save(d, 1, {"a": np.ones(1000, np.float32)}, {"step": 1})
    newest = ckpt.save(d, 2, {"a": np.ones(1000, np.float32)}, {"step": 2})
    size = os.path.getsize(newest)
    with open(newest, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(ckpt.CheckpointError, match="unreadable"):
        ckpt.load(newest)
    warnings = []
    path, _, meta = ckpt.load_latest(d, warn=warnings.append)
    assert meta["step"] == 1 and path.endswith("step-000000001.npz")
    assert len(warnings) == 1 and "step-000000002.npz" in warnings[0]


def test_corrupt_bytes_are_detected_by_crc(tmp_path):
    d = str(tmp_path)
    path = ckpt.save(d, 5, {"a": np.zeros(4096, np.float32)}, {"step": 5})
    with open(path, "r+b") as f:
        f.seek(2000)
        f.write(b"\x01\x02\x03\x04")
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load(path)


def test_no_checkpoint_is_none(tmp_path):
    assert ckpt.load_latest(str(tmp_path)) is None


def _model_and_optimizer(seed):
    nn.clear_parameters()
    model = ResNet(50, 5, width=0.125, rng=np.random.RandomState(seed))
    x, y = nn.Variable((4, 3, 32, 32)), nn.Variable((4, 1))
    loss = classification_loss(model(x), y)
    opt = Optimizer(model.parameters(), momentum=0.9, weight_decay=1e-4)
    return model, opt, x, y, loss


def _train(opt, x, y, loss, steps, seed):
    rng = np.random.RandomState(seed)
    for _ in range(steps):
        x.d, y.d = rng.randn(*x.shape), rng.randint(0, 5, y.shape)
        loss.forward(clear_no_need_grad=True)
        opt.zero_grad()
        loss.backward(clear_buffer=True)
        opt.step(0.05)


@pytest.mark.train
def test_params_and_momentum_restore_bitwise(tmp_path):
    """Train 2 steps, checkpoint, restore into a fresh model: 2 more steps match exactly."""
    model, opt, x, y, loss = _model_and_optimizer(0)
    _train(opt, x, y, loss, 2, seed=1)
    arrays, counters = ckpt.pack(nn.get_parameters(grad_only=False), opt.get_states())
    path = ckpt.save(str(tmp_path), 2, arrays, {"counters": counters})
    _train(opt, x, y, loss, 2, seed=2)
    expected = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}

    model, opt, x, y, loss = _model_and_optimizer(7)           # different initial weights
    arrays, meta = ckpt.load(path)
    opt.set_states(ckpt.unpack(arrays, meta["counters"], nn.get_parameters(grad_only=False),
                               opt.get_states()))
    _train(opt, x, y, loss, 2, seed=2)
    got = nn.get_parameters(grad_only=False)
    assert set(got) == set(expected)
    for k, v in got.items():
        np.testing.assert_array_equal(v.d, expected[k], err_msg=k)
    nn.clear_parameters()


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    _model_and_optimizer(0)
    arrays, counters = ckpt.pack(nn.get_parameters(grad_only=False), {})
    nn.clear_parameters()
    ResNet(50, 7, width=0.125)(nn.Variable((1, 3, 32, 32)))          # 7 classes, not 5
    with pytest.raises(ckpt.CheckpointError, match="shape"):
        ckpt.unpack(arrays, counters, nn.get_parameters(grad_only=False), {})
    nn.clear_parameters()
