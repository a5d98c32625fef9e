"""Checks before any work: output dir, resume compatibility; and FP16 loss scaling for real
(nnabla's half context on the CPU). Single-process runs of the trainer on the toy set."""
import json
import os

import pytest

from conftest import run_trainer
from mpi import REPO, run_mpi

pytestmark = pytest.mark.procs

TINY = ["--config", "configs/cpu_demo_constant.yaml", "--set", "model.width=0.125",
        "--set", "data.image_size=16", "--set", "train.global_batch=16",
        "--set", "train.epochs=0.2", "--set", "optim.warmup_epochs=0",
        "--set", "eval.batch_size=40", "--set", "train.log_every_steps=1"]


def one_error_line(proc):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished(toy_dir, tmp_path_factory):
    """A completed tiny single-process run with checkpoints (3 updates)."""
    out = str(tmp_path_factory.mktemp("finished"))
    proc = run_trainer(*TINY, "--data-dir", toy_dir, "--output-dir", out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_an_unwritable_output_dir_is_refused_before_training(toy_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    line = one_error_line(run_trainer(*TINY, "--data-dir", toy_dir,
                                      "--output-dir", str(blocker / "run")))
    assert "cannot write to the output dir" in line and "--output-dir" in line


@pytest.mark.parametrize("change,message", [
    (["--set", "model.width=0.25"], "the checkpoint holds another model (model.width differ)"),
    (["--set", "train.global_batch=32"], "global batch schedule"),
    (["--set", "train.epochs=0.4"], "over 0.2 epochs (this run: [(0.4, 16)] over 0.4)"),
])
@pytest.mark.train
def test_resume_refuses_a_different_model_or_batch_schedule(finished, toy_dir, change, message):
    line = one_error_line(run_trainer(*TINY, *change, "--data-dir", toy_dir,
                                      "--output-dir", finished, "--resume"))
    assert message in line


@pytest.mark.train
def test_resume_of_a_missing_file_and_from_nothing(toy_dir, tmp_path):
    line = one_error_line(run_trainer(*TINY, "--data-dir", toy_dir, "--output-dir",
                                      str(tmp_path / "a"), "--resume", str(tmp_path / "x.npz")))
    assert "no such checkpoint file" in line
    proc = run_trainer(*TINY, "--data-dir", toy_dir, "--output-dir", str(tmp_path / "b"),
                       "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "no checkpoint in" in proc.stdout and "starting from the beginning" in proc.stdout


@pytest.mark.train
def test_a_completed_run_resumed_on_two_ranks_has_nothing_left(finished, toy_dir):
    """Another world size continues a run when asked to (--accept-changes) and the global
    batch divides it; without the flag it is refused (another experiment)."""
    argv = [os.path.join(REPO, "train_resnet50.py"), *TINY, "--data-dir", toy_dir,
            "--output-dir", finished, "--resume", "--set", "comm.grid=1x2"]
    refused = run_mpi(2, argv, timeout=300)
    assert refused.returncode != 0 and "1 ranks (now 2)" in refused.stderr and \
        "--accept-changes" in refused.stderr, refused.stderr[-3000:]
    proc = run_mpi(2, argv + ["--accept-changes"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resume: --accept-changes: the checkpoint was trained with 1 ranks (now 2)" in \
        proc.stdout
    with open(os.path.join(finished, "log.jsonl")) as f:
        resume = [json.loads(line) for line in f if '"resume"' in line][-1]
    assert resume["world_size"] == 2 and resume["step"] == 3


@pytest.mark.train
def test_fp16_overflow_skips_updates_and_lowers_the_loss_scale(toy_dir, tmp_path):
    """A loss scale of 2**20 makes half-precision gradients overflow (max 65504): those steps
    are skipped, the scale halves until the gradients are finite, and training goes on."""
    out = tmp_path / "half"
    proc = run_trainer(*TINY, "--data-dir", toy_dir, "--output-dir", str(out),
                       "--set", "type_config=half", "--set", "loss_scale.initial=1048576",
                       "--set", "loss_scale.growth_interval=1000", "--set", "train.epochs=0.8",
                       "--set", "eval.batch_size=80")
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "log.jsonl") as f:
        steps = [json.loads(line) for line in f if '"event": "step"' in line]
    scales = [r["loss_scale"] for r in steps]
    assert scales[0] == 2 ** 19 and scales == sorted(scales, reverse=True), scales
    with open(out / "summary.json") as f:
        summary = json.load(f)
    assert summary["status"] == "completed"
    halvings = sum(b < a for a, b in zip([2 ** 20] + scales, scales))
    assert summary["skipped_updates"] == halvings >= 2          # one skipped update per halving
    assert summary["skipped_updates"] < len(steps)              # and then it trains
