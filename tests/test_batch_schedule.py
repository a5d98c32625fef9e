"""schedules/: stage placement, per-rank split, learning rate and exact sample accounting."""
import math
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from conftest import REPO
from data.sampler import ShardedStream, epoch_permutation, padded_epoch_length
from schedules.batch import BatchPlan, ScheduleError, check_stages, split_batch
from schedules.lr import peak_lr
from schedules.schedule import TrainingSchedule
from training.config import ConfigError, load_config

TWO = [{"until_epoch": 2, "global_batch": 300}, {"until_epoch": 5, "global_batch": 600}]


@pytest.mark.procs
def test_importing_schedules_pulls_in_neither_nnabla_nor_mpi():
    code = ("import sys, schedules.batch, schedules.schedule, schedules.lr; "
            "bad = [m for m in ('nnabla', 'mpi4py') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_a_stage_begins_with_the_first_step_that_starts_at_or_after_its_boundary():
    plan = BatchPlan(TWO, 5, epoch_length=1000, world_size=1)
    a, b = plan.stages
    # 2000 samples / 300 = 6.67: seven steps start before epoch 2, the 7th ends at 2100.
    assert (a.first_step, a.steps, a.start_sample) == (0, 7, 0)
    assert (b.first_step, b.steps, b.start_sample) == (7, 5, 2100)   # ceil(2900 / 600) = 5
    assert plan.total_steps == 12 and plan.total_samples == 5100
    assert plan.stage_of_step(6) is a and plan.stage_of_step(7) is b
    assert plan.samples_before(7) == 2100 and plan.samples_before(8) == 2700
    # A step that starts exactly on the boundary belongs to the next stage.
    exact = BatchPlan([{"until_epoch": 3, "global_batch": 300},
                       {"until_epoch": 5, "global_batch": 500}], 5, 1000, 1)
    assert exact.stages[0].steps == 10 and exact.stages[1].start_sample == 3000
    assert exact.stages[1].steps == 4 and exact.total_samples == 5000
    # Fractional boundaries are exact in samples (0.3 * 1000 is not exact in binary).
    frac = BatchPlan([{"until_epoch": 0.3, "global_batch": 100},
                      {"until_epoch": 1, "global_batch": 100}], 1, 1000, 1)
    assert frac.stages[0].steps == 3 and frac.stages[1].start_sample == 300


def test_per_rank_split_in_both_modes():
    assert split_batch(34816, 2176, "grow_local") == (16, 1)
    assert split_batch(69632, 2176, "grow_local") == (32, 1)
    assert split_batch(69632, 2176, "accumulate", micro_batch=16) == (16, 2)
    # accumulate also splits a first stage that exceeds the cap into micro-steps
    assert split_batch(96, 2, "accumulate", max_local_batch=32) == (24, 2)
    plan = BatchPlan([{"until_epoch": 5, "global_batch": 34816},
                      {"until_epoch": 90, "global_batch": 69632}], 90,
                     padded_epoch_length(1281167, 2176), 2176, "accumulate")
    assert [(s.local_batch, s.accumulation) for s in plan.stages] == [(16, 1), (16, 2)]


def schedule_for(mode, stages=TWO, world=1, lr_batch="stage", scaling="linear", warmup=1.0):
    plan = BatchPlan(stages, 5, padded_epoch_length(1000, world), world, mode)
    return TrainingSchedule(plan, 0.1, scaling, lr_batch, warmup_epochs=warmup, decay="cosine")


def test_learning_rate_at_warmup_and_stage_boundaries():
    s = schedule_for("grow_local")
    p0, p1 = peak_lr(0.1, 300), peak_lr(0.1, 600)
    cos = lambda e: 0.5 * (1 + math.cos(math.pi * (e - 1) / 4))   # noqa: E731
    assert s.lr_at_step(0) == 0.0
    assert s.lr_at_step(3) == pytest.approx(0.9 * p0)        # epoch 0.9: warm-up, per iteration
    assert s.lr_at_step(4) == pytest.approx(p0 * cos(1.2))    # epoch 1.2: past warm-up
    assert s.lr_at_step(6) == pytest.approx(p0 * cos(1.8))    # last step of stage 0
    assert s.lr_at_step(7) == pytest.approx(p1 * cos(2.1))    # first of stage 1: 2x the peak
    # per sample the rate is continuous across the switch (linear rule)
    assert s.lr_at_step(7) / 600 == pytest.approx(s.lr_at_step(6) / 300 * cos(2.1) / cos(1.8))
    first = schedule_for("grow_local", lr_batch="first")
    assert first.lr_at_step(7) == pytest.approx(p0 * cos(2.1))  # no jump
    sqrt = schedule_for("grow_local", scaling="sqrt")
    assert sqrt.lr_at_step(7) / sqrt.lr_at_step(6) == pytest.approx(
        math.sqrt(2) * cos(2.1) / cos(1.8))
    # the rate between steps and at step starts agree
    for step in range(s.total_steps):
        assert s.lr_at_epoch(s.plan.epoch_before(step)) == pytest.approx(s.lr_at_step(step))
    rows = s.rows()
    assert [r["steps"] for r in rows] == [7, 5] and rows[1]["lr_start"] == s.lr_at_step(7)


def test_grow_local_and_accumulate_give_the_same_rates_and_samples():
    a, b = schedule_for("grow_local", world=2), schedule_for("accumulate", world=2)
    assert a.total_steps == b.total_steps and a.plan.total_samples == b.plan.total_samples
    for step in range(a.total_steps):
        sa, sb = a.stage(step), b.stage(step)
        assert sa.local_batch * sa.accumulation == sb.local_batch * sb.accumulation
        assert a.lr_at_step(step) == b.lr_at_step(step)
    assert [(s.local_batch, s.accumulation) for s in b.plan.stages] == [(150, 1), (150, 2)]


def run_streams(plan, num_samples, seed=3):
    """Feed every rank's stream as the trainer does; per rank, per update: (indices, epochs)."""
    world = plan.world_size
    streams = [ShardedStream(num_samples, r, world, seed) for r in range(world)]
    taken = [[] for _ in range(world)]
    for step in range(plan.total_steps):
        stage = plan.stage_of_step(step)
        for r, stream in enumerate(streams):
            parts = [stream.take(stage.local_batch) for _ in range(stage.accumulation)]
            taken[r].append((np.concatenate([p[0] for p in parts]),
                             np.concatenate([p[1] for p in parts])))
    return streams, taken


@pytest.mark.parametrize("mode", ["grow_local", "accumulate"])
def test_every_epoch_uses_each_sample_once_across_stage_changes(mode):
    n, world = 100, 3                                   # padded to 102: two repeats per epoch
    stages = [{"until_epoch": 1.5, "global_batch": 12}, {"until_epoch": 4, "global_batch": 36}]
    plan = BatchPlan(stages, 4, padded_epoch_length(n, world), world, mode)
    streams, taken = run_streams(plan, n)
    assert streams[0].epochs_done == pytest.approx(plan.total_samples / plan.epoch_length)
    assert sum(len(i) for r in taken for i, _ in r) == plan.total_samples
    for epoch in range(4):
        per_rank = [np.concatenate([i[e == epoch] for i, e in taken[r]]) for r in range(world)]
        for r, idx in enumerate(per_rank):               # no rank repeats a sample in an epoch
            assert len(np.unique(idx)) == len(idx) == 34, (epoch, r)
        union = np.sort(np.concatenate(per_rank))
        assert np.array_equal(union, np.sort(epoch_permutation(n, world, 3, epoch)))
        assert set(union) == set(range(n))               # nothing skipped


def test_accumulate_reads_the_same_samples_per_update_as_grow_local():
    stages = [{"until_epoch": 1.5, "global_batch": 12}, {"until_epoch": 4, "global_batch": 36}]
    plans = [BatchPlan(stages, 4, padded_epoch_length(100, 3), 3, m)
             for m in ("grow_local", "accumulate")]
    (_, grow), (_, acc) = run_streams(plans[0], 100), run_streams(plans[1], 100)
    for r in range(3):
        for (i1, e1), (i2, e2) in zip(grow[r], acc[r]):
            assert np.array_equal(i1, i2) and np.array_equal(e1, e2)


@pytest.mark.parametrize("stages,world,mode,cap,message", [
    ([{"until_epoch": 90, "global_batch": 34000}], 2176, "grow_local", None,
     r"batch.stages\[0\].global_batch=34,000 is not divisible by 2,176 ranks; "
     r"nearest valid: 32,640 or 34,816"),
    ([{"until_epoch": 5, "global_batch": 34816}, {"until_epoch": 90, "global_batch": 69632}],
     2176, "grow_local", 16,
     r"batch.stages\[1\]: per-rank batch 32 .*exceeds batch.max_local_batch=16; use "
     r"batch.mode=accumulate \(2 micro-steps of 16\), global_batch <= 34,816, or at least "
     r"4,352 ranks"),
    ([{"until_epoch": 5, "global_batch": 64}, {"until_epoch": 90, "global_batch": 96}],
     4, "accumulate", None,
     r"batch.stages\[1\].global_batch=96 is not a whole number of micro-steps of 16 per rank "
     r"x 4 ranks \(= 64\).*64 or 128"),
    ([{"until_epoch": 5, "global_batch": 64}, {"until_epoch": 5.00001, "global_batch": 128},
      {"until_epoch": 90, "global_batch": 128}],
     1, "grow_local", None, r"batch.stages\[1\] \(until epoch 5.00001\) gets no steps: "
     r"the previous stage's last step already reaches epoch 5.000041 \(sample 6,405,888\)"),
])
def test_invalid_stages_say_which_stage_and_what_would_work(stages, world, mode, cap, message):
    with pytest.raises(ScheduleError, match=message):
        BatchPlan(stages, 90, padded_epoch_length(1281167, world), world, mode, cap)


@pytest.mark.parametrize("stages,message", [
    ([], "batch.stages is empty"),
    ([{"until_epoch": 90}], r"batch.stages\[0\] needs global_batch"),
    ([{"until_epoch": 90, "global_batch": 256, "lr": 1}], r"unknown key\(s\) 'lr'"),
    ([{"until_epoch": 30, "global_batch": 256}, {"until_epoch": 20, "global_batch": 512}],
     r"batch.stages\[1\].until_epoch=20 must be a number greater than the previous stage's \(30\)"),
    ([{"until_epoch": 80, "global_batch": 256}],
     r"batch.stages\[0\].until_epoch=80 must equal train.epochs=90"),
    ([{"until_epoch": 90, "global_batch": 25.5}], r"global_batch=25.5 must be a positive integer"),
    ([{"until_epoch": 90, "global_batch": 256, "momentum": 1.5}], r"momentum=1.5 must be"),
])
def test_malformed_stage_lists(stages, message):
    with pytest.raises(ScheduleError, match=message):
        check_stages(stages, 90)


def test_config_has_one_way_to_set_the_batch(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {epochs: 4}\noptim: {warmup_epochs: 1}\nbatch:\n  stages:\n"
                    "    - {until_epoch: 1, global_batch: 32}\n"
                    "    - {until_epoch: 4, global_batch: 64, label_smoothing: 0.1}\n")
    with pytest.raises(ConfigError, match="train.global_batch=256 and batch.stages are both set"):
        load_config(str(path))
    cfg = load_config(str(path), ["train.global_batch=null"])
    sched = TrainingSchedule.from_config(cfg, 1000, 2)
    assert [s.local_batch for s in sched.plan.stages] == [16, 32]
    assert sched.hyper(sched.plan.stages[1])["label_smoothing"] == 0.1
    assert sched.hyper(sched.plan.stages[0])["label_smoothing"] == cfg.optim.label_smoothing
    with pytest.raises(ConfigError, match=r"batch.stages\[1\].until_epoch=4 must equal "
                                          r"train.epochs=5"):
        load_config(str(path), ["train.global_batch=null", "train.epochs=5"])
    with pytest.raises(ConfigError, match="batch.mode='grow' is not one of"):
        load_config(str(path), ["train.global_batch=null", "batch.mode=grow"])
    # without stages: the constant train.global_batch, as before batch-size control existed
    cfg = load_config(None, ["train.epochs=2", "optim.warmup_epochs=1"])
    const = TrainingSchedule.from_config(cfg, 1000, 1)
    assert [(s.global_batch, s.steps) for s in const.plan.stages] == [(256, 8)]


def test_the_paper_schedule_for_2176_gpus():
    cfg = load_config(f"{REPO}/configs/paper_224s.yaml")
    length = padded_epoch_length(1281167, 2176)
    s = TrainingSchedule.from_config(cfg, length, 2176)
    a, b = s.plan.stages
    assert (a.global_batch, a.local_batch, b.global_batch, b.local_batch) == (34816, 16, 69632, 32)
    assert a.steps == math.ceil(5 * length / 34816)
    assert s.lr_at_step(b.first_step) == pytest.approx(2 * s.lr_at_step(b.first_step - 1), 0.02)
    assert s.table().splitlines()[0].split()[:2] == ["stage", "epochs"]


def test_schedule_needs_no_nnabla_config_object():
    """from_config reads plain attributes: any object with the sections works (e.g. a tool)."""
    cfg = SimpleNamespace(
        train=SimpleNamespace(epochs=2.0, global_batch=64),
        batch=SimpleNamespace(stages=[], mode="grow_local", max_local_batch=None,
                              lr_batch="stage"),
        optim=SimpleNamespace(base_lr=0.1, lr_scaling="linear", warmup_epochs=0.5,
                              warmup_start_factor=0.0, decay="poly", momentum=0.9,
                              weight_decay=1e-4, label_smoothing=0.0, poly_power=2.0,
                              step_milestones=[], step_gamma=0.1, final_lr_factor=0.0))
    s = TrainingSchedule.from_config(cfg, 640, 4)
    assert s.total_steps == 20 and s.lr_at_step(5) == pytest.approx(0.025)


def test_decimal_epochs_are_exact_not_binary_floats():
    # 0.2 * 240 is 48 samples = 3 steps of 16, not 4 (the float 0.2 is slightly above 1/5)
    plan = BatchPlan([{"until_epoch": 0.2, "global_batch": 16}], 0.2, 240, 1)
    assert plan.total_steps == 3 and plan.total_samples == 48
