"""The trainer end to end, in a subprocess, on real JPEGs."""
import json
import os

import nnabla as nn
import numpy as np
import pytest

from conftest import run_trainer
from models.resnet import ResNet
from training.objective import classification_loss
from training.optim import Optimizer

TINY = ["--set", "model.width=0.125", "--set", "data.image_size=32",
        "--set", "data.min_crop_area=0.35", "--set", "train.global_batch=16",
        "--set", "optim.base_lr=0.8", "--set", "optim.warmup_epochs=0.5",
        "--set", "eval.batch_size=20", "--set", "train.log_every_steps=5"]


@pytest.mark.train
def test_a_few_steps_lower_the_loss_on_one_batch(toy_dir):
    """Real graph, real optimizer, real JPEG batch: the loss must fall when fitting it."""
    from data.imagefolder import list_imagenet
    from data.pil_loader import PilTrainLoader
    nn.clear_parameters()
    train, _ = list_imagenet(toy_dir)
    loader = PilTrainLoader(train, 32, seed=0)
    x, y = loader.next_batch(16)
    loader.close()
    model = ResNet(50, 10, width=0.125, rng=np.random.RandomState(0))
    image, label = nn.Variable(x.shape), nn.Variable(y.shape)
    loss = classification_loss(model(image), label, label_smoothing=0.1)
    image.d, label.d = x, y
    opt = Optimizer(model.parameters(), momentum=0.9, weight_decay=1e-4)
    losses = []
    for _ in range(8):
        loss.forward(clear_no_need_grad=True)
        losses.append(float(loss.d))
        opt.zero_grad()
        loss.backward(clear_buffer=True)
        opt.step(0.05)
    nn.clear_parameters()
    assert losses[-1] < 0.7 * losses[0], losses


def read_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def short_run(toy_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    proc = run_trainer("--config", "configs/cpu_demo_constant.yaml", "--data-dir", toy_dir,
                       "--output-dir", out, "--set", "train.epochs=2", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


@pytest.mark.procs
@pytest.mark.train
def test_log_lines_carry_the_documented_keys(short_run):
    out, _ = short_run
    records = read_log(os.path.join(out, "log.jsonl"))
    core = ["event", "epoch", "step", "elapsed_s", "train_loss", "val_top1", "val_top5",
            "global_batch", "lr", "images_per_s"]
    for r in records:
        assert all(k in r for k in core), r
    events = [r["event"] for r in records]
    assert events[0] == "start" and events[-1] == "end"
    assert events.count("epoch") == 2 and events.count("eval") == 2
    for r in records:
        if r["event"] == "epoch":   # share of training time spent waiting for the loader
            assert 0 <= r["data_wait_frac"] < 1 and r["data_wait_s"] >= 0, r
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == sorted(r["step"] for r in steps)
    assert all(r["global_batch"] == 16 and r["images_per_s"] > 0 for r in steps)
    for r in records:
        if r["event"] == "eval":
            assert 0 <= r["val_top1"] <= r["val_top5"] <= 1
    ends = [r for r in records if r["event"] == "end"]
    assert ends[0]["step"] == 30                                 # ceil(2 * 240 / 16)


@pytest.mark.procs
@pytest.mark.train
def test_summary_and_resolved_config(short_run):
    out, proc = short_run
    with open(os.path.join(out, "summary.json")) as f:
        s = json.load(f)
    for key in ("final_val_top1", "best_val_top1", "wall_time_s", "epochs", "time_to_top1"):
        assert key in s
    assert s["epochs"] == pytest.approx(2.0)
    assert s["best_val_top1"] >= s["final_val_top1"] >= 0
    assert set(s["time_to_top1"]) == {"0.5", "0.75", "0.9"}
    import yaml
    with open(os.path.join(out, "config.yaml")) as f:
        cfg = yaml.safe_load(f)
    assert cfg["model"]["num_classes"] == 10            # counted from the data set
    assert cfg["model"]["width"] == 0.125               # the --set override was recorded
    assert "val top-1" in proc.stdout


@pytest.mark.procs
@pytest.mark.train
def test_refuses_to_overwrite_a_previous_run(short_run, toy_dir):
    out, _ = short_run
    proc = run_trainer("--config", "configs/cpu_demo_constant.yaml", "--data-dir", toy_dir,
                       "--output-dir", out)
    assert proc.returncode != 0
    assert "already holds a run" in proc.stderr and "--overwrite" in proc.stderr


@pytest.mark.procs
def test_dry_run_of_the_full_size_recipe_needs_no_data():
    proc = run_trainer("--config", "configs/resnet50_imagenet.yaml", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "25,557,032 parameters" in proc.stdout
    assert "1000 classes" in proc.stdout


@pytest.mark.parametrize("args,message", [
    (["--set", "model.widht=0.5"], "unknown config key 'model.widht'"),
    (["--set", "train.global_batch=abc"], "train.global_batch must be int"),
    (["--data-dir", "/nonexistent/dir"], "data directory /nonexistent/dir does not exist"),
    (["--config", "configs/nope.yaml"], "configs/nope.yaml does not exist"),
])
@pytest.mark.procs
def test_cli_errors_are_one_line(args, message, tmp_path):
    proc = run_trainer(*args, "--output-dir", str(tmp_path / "o"))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr


@pytest.mark.procs
@pytest.mark.train
def test_epoch_and_step_lines_count_the_same_training_time(short_run):
    """Both kinds of line exclude evaluation time exactly once, so the training seconds they
    imply (images / images_per_s) add up to the same total; this failed when the epoch lines
    subtracted each evaluation twice."""
    out, _ = short_run
    records = read_log(os.path.join(out, "log.jsonl"))

    def seconds(kind):
        lines, total, prev = [r for r in records if r["event"] == kind], 0.0, 0
        for r in lines:
            total += (r["step"] - prev) * r["global_batch"] / r["images_per_s"]
            prev = r["step"]
        assert prev == 30                       # both kinds end at the last step
        return total

    assert seconds("epoch") == pytest.approx(seconds("step"), rel=0.01)
