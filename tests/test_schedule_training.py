"""Batch-size control in nnabla and in the trainer: accumulation, stage switches, dry runs
(LARS itself: test_lars.py)."""
import json
import os

import nnabla as nn
import nnabla.functions as F
import nnabla.parametric_functions as PF
import numpy as np
import pytest

from conftest import run_trainer
from training.optim import Optimizer


def tiny_net(batch, seed=0):
    """affine -> softmax cross-entropy: no BN, so micro-batch means average exactly."""
    x, y = nn.Variable((batch, 6)), nn.Variable((batch, 1))
    with nn.parameter_scope("tiny"):
        logits = PF.affine(x, 3, w_init=np.random.RandomState(seed).randn(6, 3) * 0.3)
    return x, y, F.mean(F.softmax_cross_entropy(logits, y))


@pytest.fixture
def data():
    rng = np.random.RandomState(1)
    nn.clear_parameters()
    yield rng.randn(8, 6).astype(np.float32), rng.randint(0, 3, (8, 1))
    nn.clear_parameters()


def test_accumulated_micro_batches_give_the_full_batch_gradient(data):
    """nnabla adds parameter gradients over backward calls until zero_grad; the trainer relies
    on it for batch.mode=accumulate (sum of 2 micro-batch means, then x 1/2)."""
    xs, ys = data
    x8, y8, loss8 = tiny_net(8)
    x4, y4, loss4 = tiny_net(4)          # a second graph of another size, same parameters
    params = nn.get_parameters()
    assert len(params) == 2
    opt = Optimizer(params, 0.9, 0.0)
    opt.zero_grad()
    x8.d, y8.d = xs, ys
    loss8.forward()
    loss8.backward(clear_buffer=True)
    full = {k: p.g.copy() for k, p in params.items()}
    opt.zero_grad()
    for half in (slice(0, 4), slice(4, 8)):
        x4.d, y4.d = xs[half], ys[half]
        loss4.forward(clear_no_need_grad=True)
        loss4.backward(clear_buffer=True)
    summed = {k: p.g.copy() for k, p in params.items()}
    opt.scale_grad(0.5)
    for k, p in params.items():
        assert np.allclose(summed[k], 2 * full[k], atol=1e-6)    # accumulated, not overwritten
        assert np.allclose(p.g, full[k], atol=1e-6)


def test_changing_momentum_between_stages_keeps_the_momentum_buffer(data):
    xs, ys = data
    x, y, loss = tiny_net(8)
    params = nn.get_parameters()
    opt = Optimizer(params, momentum=0.9, weight_decay=0.0)
    x.d, y.d = xs, ys
    loss.forward()
    opt.zero_grad()
    loss.backward()
    g = params["tiny/affine/W"].g.copy()
    opt.step(0.1)                              # buffer v = 0.1 * g
    before = params["tiny/affine/W"].d.copy()
    opt.configure(momentum=0.5, weight_decay=0.0)
    for p in params.values():                  # a zero gradient: the update is 0.5 * v alone
        p.g[...] = 0                           # (written: after a lazy zero_grad() alone,
                                               # nnabla's update skips the parameter)
    opt.step(0.1)
    assert np.allclose(before - params["tiny/affine/W"].d, 0.5 * 0.1 * g, atol=1e-7)


# --- the trainer ----------------------------------------------------------------------------
TWO_STAGE = ["--set", "model.width=0.125", "--set", "data.image_size=32",
             "--set", "data.min_crop_area=0.35", "--set", "train.global_batch=null",
             "--set", "train.epochs=12", "--set", "optim.base_lr=0.8",
             "--set", "optim.warmup_epochs=0.5", "--set", "eval.batch_size=40",
             "--set", "eval.every_epochs=6", "--set", "train.log_every_steps=2",
             "--set", "batch.stages=[{until_epoch: 1.5, global_batch: 28}, "
                      "{until_epoch: 12, global_batch: 56, momentum: 0.8}]"]


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.procs
@pytest.mark.train
def test_two_stage_run_switches_at_the_right_step_and_keeps_learning(toy_dir, tmp_path):
    out = str(tmp_path / "run")
    proc = run_trainer("--config", "configs/cpu_demo.yaml", "--data-dir", toy_dir,
                       "--output-dir", out, *TWO_STAGE)
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_log(os.path.join(out, "log.jsonl"))
    stages = [r for r in records if r["event"] == "stage"]
    # 240 images; stage 0: 1.5 epochs = 360 samples / 28 = 12.9 -> 13 steps, ending at 364.
    assert [(r["stage"], r["step"], r["global_batch"], r["local_batch"], r["accumulation"])
            for r in stages] == [(0, 0, 28, 28, 1), (1, 13, 56, 56, 1)]
    assert stages[1]["epoch"] == pytest.approx(364 / 240)
    assert (stages[0]["momentum"], stages[1]["momentum"]) == (0.9, 0.8)
    shape = 0.5 * (1 + np.cos(np.pi * (364 / 240 - 0.5) / 11.5))     # cosine after warm-up
    assert stages[1]["lr"] == pytest.approx(0.8 * 56 / 256 * shape, rel=1e-5)
    steps = [r for r in records if r["event"] == "step"]
    assert all(r["global_batch"] == (28 if r["step"] <= 13 else 56) for r in steps)
    end = records[-1]
    # stage 1: (2880 - 364) / 56 = 44.9 -> 45 steps; the run ends at 364 + 45 * 56 = 2884 samples
    assert end["event"] == "end" and end["step"] == 58
    assert end["epoch"] == pytest.approx(2884 / 240)
    losses = [r["train_loss"] for r in steps]                       # 29 lines, 2 steps each
    assert np.mean(losses[-4:]) < 0.7 * np.mean(losses[:4]), losses
    assert [r["event"] for r in records].count("eval") == 2


@pytest.mark.procs
@pytest.mark.train
def test_accumulate_mode_runs_micro_steps_with_exact_epoch_accounting(toy_dir, tmp_path):
    out = str(tmp_path / "acc")
    args = [a.replace("until_epoch: 12", "until_epoch: 3") for a in TWO_STAGE]
    proc = run_trainer("--config", "configs/cpu_demo.yaml", "--data-dir", toy_dir,
                       "--output-dir", out, *args, "--set", "train.epochs=3",
                       "--set", "batch.mode=accumulate", "--set", "eval.every_epochs=3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = read_log(os.path.join(out, "log.jsonl"))
    stages = [(r["step"], r["global_batch"], r["local_batch"], r["accumulation"])
              for r in records if r["event"] == "stage"]
    assert stages == [(0, 28, 28, 1), (13, 56, 28, 2)]
    end = records[-1]                      # (720 - 364) / 56 = 6.4 -> 7 steps of 2 x 28
    assert (end["step"], end["epoch"]) == (20, pytest.approx((364 + 7 * 56) / 240))
    assert [r["epoch_index"] for r in records if r["event"] == "epoch"] == [1, 2, 3]


@pytest.mark.parametrize("config,world,expect", [
    ("paper_224s", 2176, ["2,176 = 544 nodes x 4", "34,816        16      1    185",
                          "69,632        32      1  1,565", "half, device gpu"]),
    ("paper_122s", 2176, ["69,632", "0.1\n"]),
    ("goyal_8k", 256, ["8,192        32      1  14,077       0.1"]),
    # LARS recipes from MLPerf's convergence points: absolute peaks, per-stage values
    ("mlperf_lars_67k", 2176, ["lars as MLPerf's reference: trust 0.001",
                               "67,456        31      1  1,710         0  0.0001197  24.699  "
                               "0.951807  0.0001        0.1", "every 4 epochs from epoch 2"]),
    ("paper_224s_lars", 2176, ["34,816        16      1    185         0      3.382  20.976  "
                               "0.941476  2.5e-05", "69,632        32      1  1,565     4.004",
                               "24.699  0.951807   0.0001"]),
])
@pytest.mark.procs
def test_dry_runs_of_the_paper_recipes_plan_a_cluster_on_this_cpu(config, world, expect,
                                                                   tmp_path):
    png = str(tmp_path / "schedule.png")
    note = "note: paper_224s: its SGD rates (0.1 per 256, linear: 27.2 at 69,632) are an " \
           "assumption"
    proc = run_trainer("--config", f"configs/{config}.yaml", "--dry-run", "--world-size",
                       str(world), "--local-size", "4", "--plot-schedule", png)
    assert proc.returncode == 0, proc.stderr
    for text in expect:
        assert text in proc.stdout, proc.stdout
    assert (note in proc.stdout.splitlines()[0]) == (config == "paper_224s"), proc.stdout
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("args,message", [
    (["--config", "configs/paper_224s.yaml", "--dry-run", "--world-size", "3000"],
     "34,816 is not divisible by 3,000 ranks; nearest valid: 33,000 or 36,000"),
    (["--config", "configs/paper_224s.yaml", "--dry-run", "--world-size", "2176",
      "--set", "batch.max_local_batch=16"], "use batch.mode=accumulate (2 micro-steps of 16)"),
    (["--config", "configs/cpu_demo.yaml", "--world-size", "8"], "add --dry-run"),
    (["--config", "configs/paper_224s.yaml", "--set", "train.global_batch=1024", "--dry-run"],
     "train.global_batch=1024 and batch.stages are both set"),
])
@pytest.mark.procs
def test_schedule_errors_are_one_line_before_any_work(args, message, tmp_path):
    proc = run_trainer(*args, "--output-dir", str(tmp_path / "o"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
