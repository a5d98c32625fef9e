"""tools/experiment_batch_control.py without its 20 minutes of training: the commands it runs
are recipes the trainer accepts, and its table is the mean and spread of what tools/report
reads from real run logs (the golden runs stand in for the arms' seeds)."""
import os

import pytest

from conftest import REPO
from tools import experiment_batch_control as exp
from training.config import load_config

GOLDEN = os.path.join(REPO, "tests", "golden")


@pytest.fixture
def args(tmp_path):
    os.makedirs(tmp_path / "toy" / "train")
    return exp.parse_args(["--data-dir", str(tmp_path / "toy"), "--seeds", "0,1",
                           "--out", str(tmp_path / "out")])


@pytest.mark.parametrize("arm,stages", [
    ("small", [{"until_epoch": 12, "global_batch": 128}]),
    ("large", [{"until_epoch": 12, "global_batch": 256}]),
    ("control", [{"until_epoch": 2, "global_batch": 128}, {"until_epoch": 12, "global_batch": 256}]),
])
def test_each_arm_is_a_recipe_the_trainer_accepts(args, arm, stages):
    cmd = exp.command(args, arm, 1, "/tmp/x")
    overrides = [cmd[i + 1] for i, a in enumerate(cmd) if a == "--set"]
    cfg = load_config(cmd[cmd.index("--config") + 1], overrides)
    assert cfg.batch.stages == stages and cfg.train.seed == 1 and cfg.train.epochs == 12


def test_table_is_mean_and_spread_over_seeds_of_the_logs(args):
    # golden final top-1: batch16 0.3875, batch32 0.30 (tests/golden/*/log.jsonl end lines)
    dirs = {(arm, seed): os.path.join(GOLDEN, "batch16" if seed == 0 else "batch32")
            for arm in exp.ARMS for seed in args.seeds}
    rows = exp.summarise(args, dirs)
    assert rows["small"]["final"][0] == pytest.approx((0.3875 + 0.30) / 2)
    assert rows["small"]["final"][1] == pytest.approx(0.0619, abs=1e-4)      # sample sd
    text = exp.table(args, rows, 240)
    assert "| control | 128 (53.3%) → 256 (106.7%) | 34.4 ± 6.2 |" in text
    exp.plot(rows, os.path.join(args.out, "p.png"))
    with open(os.path.join(args.out, "p.png"), "rb") as f:
        assert f.read(4) == b"\x89PNG"
