"""The run log's TensorBoard sink with the real writer (tensorboardX) and tensorboard's own
reader: which line's keys become which scalars, and a resume hiding the redone steps."""
import os

import pytest

from training.runlog import RunLog


def scalars(directory):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(directory)
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)]
            for tag in acc.Tags()["scalars"]}


def write_steps(log, steps, loss):
    for step in steps:
        log.write("step", epoch=step / 10, step=step, elapsed_s=float(step), train_loss=loss,
                  lr=0.1, global_batch=32, images_per_s=100.0)


def test_lines_become_scalars_at_their_step(tmp_path):
    log = RunLog(str(tmp_path), tensorboard=True)
    log.write("start", epoch=0.0, step=0, elapsed_s=0.0, global_batch=32)
    write_steps(log, [5, 10], 2.0)
    log.write("epoch", epoch=1.0, step=10, elapsed_s=10.0, train_loss=2.0, global_batch=32,
              data_wait_frac=0.25, allreduce_frac=0.125, images_per_s=90.0)
    log.write("eval", epoch=1.0, step=10, elapsed_s=11.0, val_top1=0.5, val_top5=0.75,
              val_loss=1.5)
    log.close()
    got = scalars(os.path.join(str(tmp_path), "tb"))
    assert got["train/loss"] == [(5, 2.0), (10, 2.0)]
    assert got["train/global_batch"] == [(5, 32.0), (10, 32.0)]
    assert got["train/images_per_s"] == [(5, 100.0), (10, 100.0)]   # step lines only
    assert got["time/data_wait_share"] == [(10, 0.25)]
    assert got["time/allreduce_share"] == [(10, 0.125)]
    assert got["val/top1"] == [(10, 0.5)] and got["val/top5"] == [(10, 0.75)]
    assert got["val/loss"] == [(10, 1.5)]


def test_a_resume_hides_what_the_interrupted_attempt_logged_after_the_checkpoint(tmp_path):
    out = str(tmp_path)
    first = RunLog(out, tensorboard=True)
    first.write("start", epoch=0.0, step=0, elapsed_s=0.0)
    write_steps(first, range(1, 11), 9.0)        # killed after step 10; checkpoint at 6
    first.close()
    resumed = RunLog(out, tensorboard=True, append=True)
    resumed.write("resume", epoch=0.6, step=6, elapsed_s=6.0)
    write_steps(resumed, range(7, 13), 1.0)
    resumed.close()
    loss = scalars(os.path.join(out, "tb"))["train/loss"]
    assert [s for s, _ in loss] == list(range(1, 13))
    assert loss == [(s, 9.0) for s in range(1, 7)] + [(s, 1.0) for s in range(7, 13)]


def test_off_writes_no_event_files(tmp_path):
    log = RunLog(str(tmp_path), tensorboard=False)
    write_steps(log, [1], 1.0)
    log.close()
    assert not os.path.exists(os.path.join(str(tmp_path), "tb"))


def test_ranks_other_than_0_write_nothing(tmp_path):
    log = RunLog(str(tmp_path / "r1"), enabled=False, tensorboard=True)
    write_steps(log, [1], 1.0)
    log.close()
    assert not os.path.exists(str(tmp_path / "r1"))


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_loss_is_left_out_as_in_the_log(tmp_path, value):
    log = RunLog(str(tmp_path), tensorboard=True)
    write_steps(log, [1], 1.0)
    write_steps(log, [2], value)
    log.close()
    assert scalars(os.path.join(str(tmp_path), "tb"))["train/loss"] == [(1, 1.0)]
