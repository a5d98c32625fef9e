"""train_resnet50.py under mpirun: ranks stay in sync; comm config errors are one line."""
import json
import re
import os

import pytest

from mpi import REPO, error_lines, run_mpi
from training.config import ConfigError, load_config

TINY = ["--set", "model.width=0.125", "--set", "data.image_size=32",
        "--set", "train.global_batch=16", "--set", "train.epochs=1",
        "--set", "optim.warmup_epochs=0.2", "--set", "eval.batch_size=20",
        "--set", "train.log_every_steps=5"]


def trainer(*args):
    return [os.path.join(REPO, "train_resnet50.py"), "--config", "configs/cpu_demo_constant.yaml", *args]


@pytest.mark.procs
@pytest.mark.train
def test_four_ranks_end_with_identical_parameters(toy_dir, tmp_path):
    """Broadcast at start + averaged gradients every step: every rank must end with the same
    bytes. (This failed while the trainer all-reduced stale gradient views.)"""
    out = str(tmp_path / "run")
    proc = run_mpi(4, trainer("--data-dir", toy_dir, "--output-dir", out, "--param-digest",
                              "--set", "comm.grid=2x2", *TINY), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = {open(os.path.join(out, f"param_digest.rank{r}")).read() for r in range(4)}
    assert len(digests) == 1, digests
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["world_size"] == 4 and summary["comm_grid"] == "2x2"
    assert summary["comm_algorithm"] == "torus2d" and summary["allreduce_s"] > 0
    with open(os.path.join(out, "log.jsonl")) as f:
        records = [json.loads(line) for line in f]
    epochs = [r for r in records if r["event"] == "epoch"]
    assert len(epochs) == 1 and 0 < epochs[0]["allreduce_s"] <= summary["allreduce_s"]
    assert records[0]["world_size"] == 4
    assert [r["step"] for r in records if r["event"] == "end"] == [15]   # 240 images / 16
    assert not [f for f in os.listdir(out) if f.endswith(".tmp")]


@pytest.mark.procs
def test_a_grid_that_does_not_fit_fails_on_every_rank(toy_dir, tmp_path):
    proc = run_mpi(2, trainer("--data-dir", toy_dir, "--output-dir", str(tmp_path / "o"),
                              "--set", "comm.grid=2x2", *TINY), timeout=120)
    assert proc.returncode != 0
    errors = error_lines(proc.stderr)
    assert len(errors) == 2, proc.stderr
    assert all("comm.grid=2x2 has 4 ranks but the job has 2" in e for e in errors)
    assert not os.path.exists(tmp_path / "o" / "log.jsonl")


@pytest.mark.parametrize("override,message", [
    ("comm.algorithm=tree", "comm.algorithm='tree' is not one of torus2d, ring"),
    ("comm.grid=4by2", "comm.grid='4by2' is not 'auto' or 'XxY'"),
    ("comm.wire_dtype=int8", "comm.wire_dtype='int8' is not one of"),
    ("comm.bucket_mb=0", "comm.bucket_mb=0.0 must be positive"),
    ("comm.timeout_s=-5", "comm.timeout_s=-5.0 must be >= 0"),
])
def test_comm_config_is_validated(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_comm_config_defaults_and_overrides():
    cfg = load_config(None, ["comm.grid=8x272", "comm.wire_dtype=float16"])
    assert (cfg.comm.algorithm, cfg.comm.grid, cfg.comm.wire_dtype) == \
        ("torus2d", "8x272", "float16")
