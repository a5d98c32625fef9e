"""The trainer's parts in process: the Clock's cadence from whole sample counts, the start
checks that raise (no process, no sys.exit), and the config a rehearsal runs with."""
import math
from types import SimpleNamespace

import pytest

from schedules.clock import Clock, crossed
from schedules.schedule import TrainingSchedule
from training.config import load_config
from training.preflight import check_arguments, check_classes
from training.runtime import StartError, load_run_config


def float_crossed(before, after, every, first=None):
    """The trainer's former test on float epochs (with its 1e-9 tolerance)."""
    first = every if first is None else first
    count = lambda epoch: math.floor((epoch - first) / every + 1e-9)  # noqa: E731
    return every > 0 and count(after) > count(before) and count(after) >= 0


@pytest.mark.parametrize("overrides,epoch_length", [
    ([], 240),
    (["eval.every_epochs=0.5", "eval.first_epoch=0.75", "checkpoint.every_epochs=0.3"], 1000),
    (["eval.every_epochs=4", "eval.first_epoch=2", "train.epochs=12"], 1281167),
])
def test_the_clock_agrees_with_float_epochs_everywhere(overrides, epoch_length):
    cfg = load_config("configs/cpu_demo.yaml", overrides)
    schedule = TrainingSchedule.from_config(cfg, epoch_length, 4)
    clock, plan = Clock.from_config(cfg, schedule), schedule.plan
    for step in range(1, schedule.total_steps + 1):
        before = plan.samples_before(step - 1) / plan.epoch_length
        after = plan.samples_before(step) / plan.epoch_length
        e, last = clock.events(step), step == schedule.total_steps
        assert e.epoch_end == float_crossed(before, after, 1.0)
        assert e.evaluate == (last or float_crossed(before, after, cfg.eval.every_epochs,
                                                    cfg.eval.first_epoch))
        assert e.checkpoint == (last or float_crossed(before, after,
                                                      cfg.checkpoint.every_epochs))
        assert e.log == (step % cfg.train.log_every_steps == 0 or last)


def test_crossed_is_exact_at_a_boundary():
    assert crossed(9, 10, 1, None, 10) and not crossed(10, 11, 1, None, 10)
    assert crossed(2, 3, 1 / 3, None, 9)            # a third of 9 samples is exactly 3
    assert not crossed(0, 5, 0, None, 10)          # 0: off


ARGS = dict(dry_run=False, resume=None, accept_changes=False, world_size=None,
            local_size=None, plot_schedule=None, preset=None, overwrite=False)


@pytest.mark.parametrize("changes,message", [
    ({"accept_changes": True}, "--accept-changes qualifies --resume"),
    ({"world_size": 8}, "plan a run: add --dry-run"),
    ({"dry_run": True, "resume": "latest"}, "a dry run trains nothing"),
    ({"dry_run": True, "preset": "nope"}, "--preset nope: unknown"),
])
def test_contradicting_flags_raise_one_error_type(tmp_path, changes, message):
    with pytest.raises(StartError, match=message) as e:
        check_arguments(SimpleNamespace(**dict(ARGS, **changes)), str(tmp_path / "run"))
    assert e.value.same_on_every_rank


def test_classes_are_checked_and_counted():
    cfg = load_config("configs/cpu_demo.yaml")
    one = SimpleNamespace(classes=["a"], root="/d/train")
    with pytest.raises(StartError, match="the data set has 1 class"):
        check_classes(cfg, (one, one))
    ten = SimpleNamespace(classes=[str(i) for i in range(10)], root="/d/train")
    check_classes(cfg, (ten, ten))
    assert cfg.model.num_classes == 10
    cfg.model.num_classes = 5
    with pytest.raises(StartError, match="has 10 classes but model.num_classes=5"):
        check_classes(cfg, (ten, ten))


def test_a_rehearsal_config_is_what_runs_before_it_is_validated(tmp_path):
    recipe = tmp_path / "gpu.yaml"
    recipe.write_text("data:\n  device: gpu\nmodel:\n  channel_last: true\n")
    args = SimpleNamespace(config=str(recipe), set=["model.width=0.25"], rehearse_gpu=True,
                           dry_run=False, data_dir=None)
    cfg, notes = load_run_config(args)
    assert (cfg.device, cfg.data.device, cfg.model.channel_last) == ("gpu", "cpu", False)
    assert cfg.model.width == 0.25 and len(notes) >= 2
    with pytest.raises(StartError, match="--rehearse-gpu .* --dry-run"):
        load_run_config(SimpleNamespace(**dict(vars(args), dry_run=True)))
