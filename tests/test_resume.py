"""Distributed training survives what clusters do to it: SIGKILL, the scheduler's stop signal,
a frozen rank, a truncated checkpoint, divergence. Real mpirun, 4 ranks as a 2x2 torus.

The runs use LARS with MLPerf's closed-division schedule (poly 2 to 1e-4), so their
mlperf.log is also held against MLPerf's compliance checker here."""
import json
import os
import random
import signal
import subprocess
import time

import pytest

from mlperf_check import comparable, compliance_failures, mllog_lines, toy_failures
from mpi import REPO, mpirun_command, run_mpi

pytestmark = [pytest.mark.procs, pytest.mark.train]

# 240 toy images, batch 16 -> 32 after the first epoch: 15 + 8 = 23 updates in 2 epochs
TINY = ["--set", "model.width=0.125", "--set", "data.image_size=32",
        "--set", "train.epochs=2", "--set", "train.global_batch=null",
        "--set", "batch.stages=[{until_epoch: 1, global_batch: 16}, "
                 "{until_epoch: 2, global_batch: 32}]",
        "--set", "optim.warmup_epochs=0.5", "--set", "eval.batch_size=20",
        "--set", "train.log_every_steps=1", "--set", "checkpoint.every_steps=3",
        "--set", "checkpoint.every_epochs=0", "--set", "comm.grid=2x2",
        "--set", "optim.optimizer=lars", "--set", "optim.base_lr=null",
        "--set", "optim.peak_lr=2.0", "--set", "optim.decay=poly", "--set", "optim.end_lr=1e-4"]
TOTAL_STEPS = 23


def trainer(toy_dir, out, *extra):
    return [os.path.join(REPO, "train_resnet50.py"), "--config", "configs/cpu_demo.yaml",
            "--data-dir", toy_dir, "--output-dir", out, "--param-digest", *TINY, *extra]


def digests(out, ranks=4):
    found = set()
    for r in range(ranks):
        with open(os.path.join(out, f"param_digest.rank{r}")) as f:
            found.add(f.read())
    assert len(found) == 1, f"ranks differ: {found}"          # every rank holds the same
    return dict(line.split() for line in found.pop().splitlines())


def records(out):
    with open(os.path.join(out, "log.jsonl")) as f:
        return [json.loads(line) for line in f]


def start(argv, log_path):
    """mpirun in the background, in its own session so the whole job can be signalled."""
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    return subprocess.Popen(mpirun_command(4, argv), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True), log_path


def wait_for_step(log_path, step, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"run ended before step {step}: {proc.communicate()[1][-2000:]}")
        if os.path.exists(log_path):
            with open(log_path) as f:
                steps = [json.loads(line).get("step") for line in f if line.endswith("\n")]
            if any(s is not None and s >= step for s in steps):
                return
        time.sleep(0.05)
    raise AssertionError(f"step {step} not reached in {timeout} s")


@pytest.fixture(scope="module")
def reference(toy_dir, tmp_path_factory):
    """The uninterrupted run every interrupted one must match."""
    out = str(tmp_path_factory.mktemp("reference"))
    proc = run_mpi(4, trainer(toy_dir, out), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_sigkill_mid_epoch_then_resume_ends_bitwise_identical(reference, toy_dir, tmp_path):
    out = str(tmp_path / "killed")
    kill_at = random.Random().randint(4, TOTAL_STEPS - 3)   # after the first checkpoint
    proc, log_path = start(trainer(toy_dir, out), os.path.join(out, "log.jsonl"))
    try:
        wait_for_step(log_path, kill_at, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)                  # mpirun and every rank, no warning
        proc.communicate()
    assert not os.path.exists(os.path.join(out, "summary.json"))

    resumed = run_mpi(4, trainer(toy_dir, out, "--resume"), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resume: step" in resumed.stdout
    assert digests(out) == digests(reference), f"killed at step {kill_at}"
    steps = [r["step"] for r in records(out) if r["event"] == "step"]
    assert steps == list(range(1, TOTAL_STEPS + 1)), f"killed at step {kill_at}"  # no duplicates
    kinds = [r["event"] for r in records(out)]
    assert kinds.count("resume") == 1 and kinds.count("start") == 1 and kinds[-1] == "end"
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    with open(os.path.join(reference, "summary.json")) as f:
        expected = json.load(f)
    assert summary["status"] == "completed" and summary["steps"] == TOTAL_STEPS
    assert summary["final_val_top1"] == expected["final_val_top1"]

    # mlperf.log: cut back to the checkpoint and continued, it says what the uninterrupted
    # run's says (one init, one run_start, one run_stop), and MLPerf's checker passes it but
    # for what a toy run of batch-size control cannot meet
    lines = mllog_lines(os.path.join(out, "mlperf.log"))
    keys = [x["key"] for x in lines]
    assert keys.count("init_start") == keys.count("run_start") == keys.count("run_stop") == 1
    assert comparable(lines) == comparable(mllog_lines(os.path.join(reference, "mlperf.log")))
    failures, text = compliance_failures(os.path.join(out, "mlperf.log"), str(tmp_path))
    assert failures == toy_failures(summary["best_val_top1"]), text


def test_sigusr1_checkpoints_and_exits_cleanly_then_resume_finishes(reference, toy_dir, tmp_path):
    out = str(tmp_path / "stopped")
    proc, log_path = start(trainer(toy_dir, out), os.path.join(out, "log.jsonl"))
    try:
        wait_for_step(log_path, 5, proc)
        os.kill(proc.pid, signal.SIGUSR1)    # mpirun forwards SIGUSR1 to every rank
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    last = records(out)[-1]
    assert last["event"] == "stop" and last["signal"] == "SIGUSR1"
    stopped_at = last["step"]
    assert 5 <= stopped_at < TOTAL_STEPS
    assert os.path.exists(os.path.join(out, "checkpoints", f"step-{stopped_at:09d}.npz"))
    with open(os.path.join(out, "summary.json")) as f:
        assert json.load(f)["status"] == "stopped"     # so a job chain does not skip the rest
    assert f"stopped by SIGUSR1 after step {stopped_at}" in stdout

    resumed = run_mpi(4, trainer(toy_dir, out, "--resume"), timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # The stop averaged BN statistics at an extra step; the trained weights are unaffected.
    assert digests(out)["trainable"] == digests(reference)["trainable"]
    steps = [r["step"] for r in records(out) if r["event"] == "step"]
    assert steps == list(range(1, TOTAL_STEPS + 1))
    stops = [x for x in mllog_lines(os.path.join(out, "mlperf.log")) if x["key"] == "run_stop"]
    assert [x["metadata"]["trainer_status"] for x in stops] == ["completed"]   # "stopped" cut


def test_truncated_newest_checkpoint_falls_back_to_the_previous(reference, toy_dir, tmp_path):
    out = str(tmp_path / "truncated")
    proc = run_mpi(4, trainer(toy_dir, out, "--set", "train.epochs=1", "--set",
                              "batch.stages=[{until_epoch: 1, global_batch: 16}]"), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = sorted(os.listdir(os.path.join(out, "checkpoints")))
    assert ckpts == ["step-000000009.npz", "step-000000012.npz", "step-000000015.npz"]
    newest = os.path.join(out, "checkpoints", ckpts[-1])
    with open(newest, "r+b") as f:
        f.truncate(os.path.getsize(newest) // 3)
    os.remove(os.path.join(out, "summary.json"))
    resumed = run_mpi(4, trainer(toy_dir, out, "--set", "train.epochs=1", "--set",
                                 "batch.stages=[{until_epoch: 1, global_batch: 16}]", "--resume"),
                      timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step-000000015.npz is unreadable" in resumed.stdout
    assert "resume: step 12 of 15" in resumed.stdout


def test_a_frozen_rank_ends_the_job_within_the_timeout(toy_dir, tmp_path):
    out = str(tmp_path / "frozen")
    timeout_s = 8
    proc, log_path = start(trainer(toy_dir, out, "--set", f"comm.timeout_s={timeout_s}"),
                           os.path.join(out, "log.jsonl"))
    try:
        wait_for_step(log_path, 3, proc)
        victim = rank_pid(out, 2)
        os.kill(victim, signal.SIGSTOP)
        t0 = time.time()
        stdout, stderr = proc.communicate(timeout=timeout_s + 60)
        waited = time.time() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-KILL", "-f", out])       # the stopped rank, if it survived
    assert proc.returncode != 0
    assert waited < timeout_s + 30, waited
    assert "rank 2" in stderr, stderr[-3000:]                # survivors name whom they waited for


def rank_pid(out, rank):
    """The pid of the training process of ``rank`` in the job writing to ``out``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().split(b"\0")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        if out.encode() in cmd and b"train_resnet50.py" in b" ".join(cmd) \
                and env.get(b"OMPI_COMM_WORLD_RANK") == str(rank).encode():
            return int(pid)
    raise AssertionError(f"no rank {rank} process found for {out}")


def test_divergence_stops_with_the_step_and_keeps_the_last_good_checkpoint(toy_dir, tmp_path):
    out = str(tmp_path / "diverged")
    proc = run_mpi(4, trainer(toy_dir, out, "--set", "optim.peak_lr=1.0e+6", "--set",
                              "optim.warmup_epochs=0", "--set", "checkpoint.every_steps=1"),
                   timeout=300)
    assert proc.returncode == 1
    assert "diverged:" in proc.stderr and "the last good checkpoint is kept" in proc.stderr
    with open(os.path.join(out, "summary.json")) as f:
        summary = json.load(f)
    assert summary["status"].startswith("diverged")
    bad_step = int(summary["status"].split("at step ")[1].split()[0])
    kept = sorted(os.listdir(os.path.join(out, "checkpoints")))
    assert kept and kept[-1] == f"step-{bad_step - 1:09d}.npz"   # nothing from the bad step
