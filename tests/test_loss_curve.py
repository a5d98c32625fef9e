"""A numerics regression: a short run of the cpu_demo recipe (one rank, ResNet-50 at 1/8 width,
DALI-CPU, batch-size control 16 -> 32) repeats, step by step, the curve stored in
tests/golden/cpu_demo_1rank/loss_curve.jsonl, as torchtitan keeps its tests/assets/losses.

Every step's learning rate and batch must match exactly, and its loss to 1e-6 relative
(tests/README.md says why that tolerance). A deliberate change of the numerics is recorded with
`make golden-update`, which rewrites the file from a run, for review in the diff.
"""
import json
import os

import pytest

from conftest import REPO, TOY, run_trainer

GOLDEN = os.path.join(REPO, "tests", "golden", "cpu_demo_1rank", "loss_curve.jsonl")
# 240 toy images: 15 updates at batch 16 in epoch 1, then 15 at batch 32 in epochs 2 and 3
RECIPE = ["--config", "configs/cpu_demo.yaml", "--set", "model.width=0.125",
          "--set", "data.image_size=32", "--set", "train.epochs=3",
          "--set", "batch.stages=[{until_epoch: 1, global_batch: 16}, "
                   "{until_epoch: 3, global_batch: 32}]",
          "--set", "optim.warmup_epochs=0.5", "--set", "eval.batch_size=40",
          "--set", "train.log_every_steps=1"]
KEPT = {"step": ("step", "epoch", "global_batch", "lr", "train_loss"),
        "eval": ("step", "epoch", "val_loss", "val_top1", "val_top5")}
LOSSES = ("train_loss", "val_loss")
REL = 1e-6      # one unit in the log's 6th decimal of a loss near 2 is 5e-7 relative
UPDATE = "if the change is deliberate, `make golden-update` and commit the new curve"


def curve(log_path):
    """The step and eval lines of a run's log.jsonl, without timings."""
    with open(log_path) as f:
        records = [json.loads(line) for line in f]
    return [{"event": r["event"], **{k: r[k] for k in KEPT[r["event"]]}}
            for r in records if r["event"] in KEPT]


def differences(stored, got):
    """One line per stored line the run did not repeat, in order."""
    problems = []
    for want, have in zip(stored, got):
        where = f"{want['event']} line of step {want['step']}"
        if (have["event"], have["step"]) != (want["event"], want["step"]):
            return problems + [f"{where}: the run wrote a {have['event']} line of step "
                               f"{have['step']} there"]
        for key, value in want.items():
            close = key in LOSSES and have[key] == pytest.approx(value, rel=REL)
            if have[key] != value and not close:
                problems.append(f"{where}: {key} {have[key]}, stored {value}")
    if len(stored) != len(got):
        problems.append(f"{len(got)} step and eval lines, stored {len(stored)}")
    return problems


@pytest.mark.procs
@pytest.mark.train
def test_a_short_run_repeats_the_stored_loss_curve(toy_dir, tmp_path, request):
    out = str(tmp_path / "run")
    proc = run_trainer(*RECIPE, "--data-dir", toy_dir, "--output-dir", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    made_by = {"event": "recipe", "argv": RECIPE, "toy": TOY}
    got = curve(os.path.join(out, "log.jsonl"))
    assert len(got) == 30 + 3                        # every update and each epoch's evaluation
    if request.config.getoption("--golden-update"):
        write_lines(GOLDEN, [made_by, *got])
    with open(GOLDEN) as f:
        stored = [json.loads(line) for line in f]
    assert stored[0] == made_by, \
        f"{GOLDEN} was made by another recipe or toy set ({stored[0]}): {UPDATE}"
    problems = differences(stored[1:], got)
    assert not problems, "the numerics changed:\n" + "\n".join(problems[:8]) + f"\n{UPDATE}"


def write_lines(path, records):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    os.replace(path + ".tmp", path)


def test_differences_allow_a_loss_the_last_digit_and_nothing_else():
    with open(GOLDEN) as f:
        stored = [json.loads(line) for line in f][1:]
    assert differences(stored, stored) == []
    edited = [dict(r) for r in stored]
    a, b, c = [i for i, r in enumerate(stored) if r["event"] == "step"][3:30:11]
    edited[a]["train_loss"] += 1e-6                  # a flipped last digit: how it was summed
    assert differences(stored, edited) == []
    edited[b]["train_loss"] += 1e-5                  # a change of the training
    edited[c]["lr"] += 1e-6                          # the schedule is pure arithmetic: exact
    assert differences(stored, edited) == [
        f"step line of step {stored[b]['step']}: train_loss {edited[b]['train_loss']}, "
        f"stored {stored[b]['train_loss']}",
        f"step line of step {stored[c]['step']}: lr {edited[c]['lr']}, stored {stored[c]['lr']}"]
    assert differences(stored, edited[:-1])[-1] == \
        f"{len(stored) - 1} step and eval lines, stored {len(stored)}"
