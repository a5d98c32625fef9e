"""mlperf.log: the resume cut, the evaluation cadence and blocks, MLPerf's compliance checker,
and the report's time-to-train. The real runs behind it are in test_resume.py (4 ranks, killed
and resumed); here the pieces, on lines written by training/mlperf_log.py itself."""
import json
import os
import re

import pytest

from conftest import REPO
from mlperf_check import comparable, compliance_failures, mllog_lines
from train_resnet50 import crossed
from training.config import load_config
from training.mlperf_log import FILE, TOKEN, MLPerfLog, next_eval_epoch, truncate


# --- the resume cut --------------------------------------------------------------------------
def test_truncate_keeps_the_lines_up_to_the_checkpoint_and_drops_run_stop(tmp_path):
    path = tmp_path / FILE
    lines = [{"key": "run_start", "metadata": {"step": 0}},
             {"key": "epoch_stop", "metadata": {"step": 5}},
             {"key": "epoch_start", "metadata": {"step": 5}},
             {"key": "epoch_stop", "metadata": {"step": 9}},
             {"key": "run_stop", "metadata": {"step": 5, "status": "aborted"}}]
    path.write_text("".join(f"{TOKEN}{json.dumps(x)}\n" for x in lines)
                    + TOKEN + '{"key": "eval_st')          # what a SIGKILL can leave
    assert truncate(str(path), 5) == 3
    assert [(x["key"], x["metadata"]["step"]) for x in mllog_lines(path)] == [
        ("run_start", 0), ("epoch_stop", 5), ("epoch_start", 5)]
    assert path.read_text().endswith("\n")


def test_log_jsonl_is_cut_the_same_way(tmp_path):
    """log.jsonl: lines of later steps go, and so does a stage line at the checkpoint's step
    (written when the next update began, after the checkpoint; the resumed run writes it)."""
    from training.runlog import truncate_log
    path = tmp_path / "log.jsonl"
    records = [{"event": "start", "step": 0}, {"event": "epoch", "step": 15},
               {"event": "stage", "step": 15}, {"event": "step", "step": 16}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + '{"event": "st')
    assert truncate_log(str(path), 15) == 3
    assert [json.loads(x)["event"] for x in path.read_text().splitlines()] == ["start", "epoch"]


# --- the evaluation cadence ------------------------------------------------------------------
def test_crossed_with_a_first_epoch_gives_mlperfs_cadence():
    epochs = [i * 0.3 for i in range(40)]                   # progress after each update
    hits = [round(b, 1) for b, a in zip(epochs, epochs[1:]) if crossed(b, a, 4.0, 2.0)]
    assert hits == [1.8, 5.7, 9.9]                           # just before epochs 2, 6, 10
    plain = [round(b, 1) for b, a in zip(epochs, epochs[1:]) if crossed(b, a, 4.0)]
    assert plain == [3.9, 7.8]                               # the default: multiples of 4


@pytest.mark.parametrize("done,expected", [(0, 2), (1.9, 2), (2, 6), (5, 6), (86, 90), (89, 90)])
def test_next_eval_epoch(done, expected):
    assert next_eval_epoch(done, 4, 2, 90) == expected


@pytest.mark.parametrize("override,message", [
    ("eval.first_epoch=13", "eval.first_epoch=13 is past train.epochs=12"),
    ("eval.first_epoch=0", "eval.first_epoch=0 must be positive"),
    ("optim.peak_lr=2", "optim.base_lr=0.8 and optim.peak_lr=2 are both set"),
    ("optim.base_lr=null", "no learning rate"),
    ("optim.end_lr=0.5", "must be below the peak rate"),
    ("mlperf.division=secret", "mlperf.division='secret' is not one of closed, open"),
])
def test_config_errors_name_the_key(override, message):
    from training.config import ConfigError
    extra = ["optim.base_lr=null", "optim.peak_lr=0.4"] if "end_lr" in override else []
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(os.path.join(REPO, "configs", "cpu_demo.yaml"), extra + [override])


# --- a whole file, written by the module, checked by MLPerf's checker ------------------------
def write_a_run(out, cfg, kill_at=None, checkpoint=None):
    """Drive MLPerfLog exactly as the trainer does (top-1 = epoch / 5); ``kill_at``: the first
    process dies after that update, and a second one resumes from ``checkpoint``."""
    from schedules.schedule import TrainingSchedule
    schedule = TrainingSchedule.from_config(cfg, epoch_length=100, world_size=1)
    epoch = lambda step: schedule.plan.epoch_before(step)  # noqa: E731
    evals, first = [], 0
    for resume in (None, checkpoint):
        log = MLPerfLog(str(out), cfg, 1, resume_step=resume)
        log.run_start(schedule, 100, 50)
        evals = [e for e in evals if resume is None or e[1] <= resume]
        for step in range(resume or 0, schedule.total_steps):
            before, now, last = epoch(step), epoch(step + 1), step + 1 == schedule.total_steps
            if crossed(before, now, 1.0):
                log.epoch_stop(step + 1, now)
            evaluate = last or crossed(before, now, cfg.eval.every_epochs, cfg.eval.first_epoch)
            if evaluate:
                log.eval_start(step + 1, now)
                evals.append([now, step + 1, 0.0, now / 5, 1.0])
                log.eval_stop(step + 1, now, now / 5)
            log.next_update(step + 1, before, now, evaluate)
            if resume is None and step + 1 == kill_at:
                break                                          # SIGKILL: no run_stop
        else:
            log.run_stop(schedule.total_steps, "completed", evals)
            log.close()
            return mllog_lines(out / FILE)
        log.close()
    raise AssertionError("the resumed run did not finish")


@pytest.fixture
def lars_cfg():
    """LARS as MLPerf's closed rules want it; the batch grows from 4 to 5 at epoch 2 of 4."""
    return load_config(os.path.join(REPO, "configs", "cpu_demo.yaml"), [
        "train.epochs=4", "optim.optimizer=lars", "optim.base_lr=null", "optim.peak_lr=2",
        "optim.decay=poly", "optim.end_lr=1e-4", "optim.weight_decay=1e-4",
        "eval.every_epochs=2", "eval.first_epoch=1",
        "batch.stages=[{until_epoch: 2, global_batch: 4}, {until_epoch: 4, global_batch: 5}]"])


@pytest.mark.procs
def test_a_written_run_nests_its_intervals_and_passes_the_checker(lars_cfg, tmp_path):
    lines = write_a_run(tmp_path, lars_cfg)
    keys = [x["key"] for x in lines]
    assert keys.count("run_start") == keys.count("run_stop") == keys.count("init_stop") == 1
    epochs = [(x["key"], x["metadata"]["epoch_num"]) for x in lines
              if x["key"] in ("epoch_start", "epoch_stop")]
    assert epochs == [(k, n) for n in (1, 2, 3, 4) for k in ("epoch_start", "epoch_stop")]
    blocks = [(x["key"], x["metadata"]["first_epoch_num"], x["metadata"].get("epoch_count"))
              for x in lines if x["key"].startswith("block_")]
    assert blocks == [("block_start", 1, 1), ("block_stop", 1, None),    # evaluated after
                      ("block_start", 2, 2), ("block_stop", 2, None),    # epochs 1 and 3,
                      ("block_start", 4, 1), ("block_stop", 4, None)]    # and at the end
    assert [x["metadata"]["epoch_num"] for x in lines if x["key"] == "eval_accuracy"] == [1, 3, 4]
    assert [x["value"] for x in lines if x["key"] == "global_batch_size"] == [4, 5]
    assert lines[-1]["metadata"]["status"] == "success"                # 0.8 >= 0.759
    keys, text = compliance_failures(str(tmp_path / FILE), str(tmp_path))
    assert keys == {"global_batch_size"}, text       # the one rule batch-size control breaks


def test_a_killed_and_resumed_run_writes_the_same_file(lars_cfg, tmp_path):
    for name in ("clean", "killed"):
        os.makedirs(tmp_path / name)
    clean = write_a_run(tmp_path / "clean", lars_cfg)
    resumed = write_a_run(tmp_path / "killed", lars_cfg, kill_at=73, checkpoint=50)
    assert comparable(resumed) == comparable(clean)
