"""--rehearse-gpu: the trainer's GPU path on CPU ranks, through rehearsal/'s double of nnabla's
NCCL communicator. Real mpirun with 4 ranks as a 2x2 torus; compared with the MPI CPU path.

The double is strict (rehearsal/communicator.py): these runs would fail the way the first
GPU run would have -- numpy arrays handed to the NCCL backend, uninitialised NdArrays, values
rounded by a half-precision communicator -- and did before the fixes (git log).
"""
import json
import os
import random
import signal
import subprocess

import pytest

from mpi import REPO, WORKERS, error_lines, mpirun_command, run_mpi
from test_resume import digests, records, wait_for_step

pytestmark = pytest.mark.procs

# 240 toy images: batch 16 for 0.6 epochs (9 updates), then 32 (3): 12 updates, two stages
TINY = ["--config", "configs/cpu_demo.yaml", "--set", "model.width=0.125",
        "--set", "data.image_size=32", "--set", "train.epochs=1",
        "--set", "train.global_batch=null",
        "--set", "batch.stages=[{until_epoch: 0.6, global_batch: 16}, "
                 "{until_epoch: 1, global_batch: 32}]",
        "--set", "optim.warmup_epochs=0.3", "--set", "eval.batch_size=20",
        "--set", "train.log_every_steps=1", "--set", "checkpoint.every_steps=3",
        "--set", "checkpoint.every_epochs=0", "--set", "comm.grid=2x2"]
TOTAL_STEPS = 12
# FP16 on nnabla's CPU is ~100x slower than float: ResNet-18 at 1/8 width, 2 ranks, 24 updates
HALF = ["--config", "configs/cpu_demo_constant.yaml", "--set", "type_config=half",
        "--set", "model.depth=18", "--set", "model.width=0.125", "--set", "data.image_size=24",
        "--set", "train.global_batch=8", "--set", "train.epochs=0.8",
        "--set", "optim.warmup_epochs=0.2", "--set", "eval.batch_size=40",
        "--set", "train.log_every_steps=1", "--set", "checkpoint.every_epochs=0",
        "--set", "loss_scale.initial=1024", "--set", "comm.grid=2x1"]


def trainer(toy_dir, out, *extra, recipe=TINY):
    return [os.path.join(REPO, "train_resnet50.py"), *recipe, "--data-dir", toy_dir,
            "--output-dir", out, "--param-digest", *extra]


def train(toy_dir, out, *extra, ranks=4, recipe=TINY):
    proc = run_mpi(ranks, trainer(toy_dir, out, *extra, recipe=recipe), timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def summary(out):
    with open(os.path.join(out, "summary.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def mpi_reference(toy_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("mpi"))
    train(toy_dir, out)
    return out


@pytest.fixture(scope="module")
def rehearsal_torus(toy_dir, tmp_path_factory):
    """The GPU job's settings: images decoded 'on the GPU' (falls back to the CPU here)."""
    out = str(tmp_path_factory.mktemp("rehearsal"))
    proc = train(toy_dir, out, "--rehearse-gpu", "--set", "data.device=gpu")
    return out, proc


@pytest.mark.train
def test_rehearsal_says_what_it_cannot_rehearse_once_in_its_first_lines(rehearsal_torus):
    out, proc = rehearsal_torus
    lines = proc.stdout.splitlines()
    said = [i for i, ln in enumerate(lines) if ln.startswith("rehearse-gpu: NOT rehearsed:")]
    assert len(said) == 1 and said[0] < 3, lines[:5]
    for part in ("CUDA kernels", "cuDNN", "NCCL's transport", "DALI's GPU decoding", "speed"):
        assert part in lines[said[0]]
    assert sum("data.device=gpu decodes on the CPU here" in ln for ln in lines) == 1
    start = records(out)[0]
    assert start["config"]["device"] == "gpu" and start["rehearsal"] is True


@pytest.mark.train
def test_torus2d_rehearsal_matches_the_mpi_path(rehearsal_torus, mpi_reference):
    out, _ = rehearsal_torus
    assert digests(out) == digests(mpi_reference)            # every rank alike, and the same
    s, ref = summary(out), summary(mpi_reference)
    assert s["status"] == "completed" and s["steps"] == TOTAL_STEPS
    assert abs(s["final_val_top1"] - ref["final_val_top1"]) <= 0.01
    calls = s["comm_calls"]       # the NCCL backend's phases ran, one sync per update
    assert calls["rs_row"] == calls["ar_col"] == calls["ag_row"] == calls["sync"] == TOTAL_STEPS
    assert calls["read"] == TOTAL_STEPS          # one host read of a device array per update


@pytest.mark.parametrize("algorithm,callback", [("hierarchical", False), ("native", False),
                                                ("native", True)])
@pytest.mark.train
def test_other_algorithms_rehearse_like_the_mpi_path(algorithm, callback, toy_dir, tmp_path,
                                                     mpi_reference):
    out = str(tmp_path / "run")
    train(toy_dir, out, "--rehearse-gpu", "--set", f"comm.algorithm={algorithm}",
          "--set", f"comm.backward_callback={str(callback).lower()}")
    digest = digests(out)         # every rank ends with the same parameters
    s = summary(out)
    assert s["status"] == "completed" and s["comm_algorithm"] == algorithm
    assert abs(s["final_val_top1"] - summary(mpi_reference)["final_val_top1"]) <= 0.01
    assert digest["trainable"] == digests(mpi_reference)["trainable"]
    calls = s["comm_calls"]
    if callback:                  # gradients reduced during backward, none after it
        assert calls.get("callback") == TOTAL_STEPS and "ar_world" not in calls, calls
    elif algorithm == "native":
        assert calls["ar_world"] == TOTAL_STEPS and "callback" not in calls, calls
    else:
        assert calls["reduce_row"] == calls["bcast_row"] == TOTAL_STEPS, calls


@pytest.mark.train
def test_half_rehearsal_losses_agree_with_the_mpi_half_run(toy_dir, tmp_path):
    runs = {}
    for mode in ("mpi", "rehearsal"):
        out = str(tmp_path / mode)
        train(toy_dir, out, *(["--rehearse-gpu"] if mode == "rehearsal" else []), ranks=2,
              recipe=HALF)
        steps = [r for r in records(out) if r["event"] == "step"]
        runs[mode] = dict(losses=[r["train_loss"] for r in steps], digest=digests(out, 2),
                          summary=summary(out))
    m, r = runs["mpi"], runs["rehearsal"]
    assert len(r["losses"]) == 24 and r["summary"]["status"] == "completed"
    assert r["summary"]["skipped_updates"] < 24                 # it trained
    assert r["summary"]["comm_calls"]["read"] == 24    # the loss and the probe, one read
    assert r["digest"] == m["digest"]                  # the same parameters as the MPI path
    # fp16 rounding: 2^-11 relative per value; here the two paths even agree exactly
    assert all(abs(a - b) <= 2 ** -10 * abs(a) for a, b in zip(m["losses"], r["losses"]))
    assert r["summary"]["final_val_top1"] == pytest.approx(m["summary"]["final_val_top1"],
                                                           abs=0.0125)


@pytest.mark.train
def test_a_killed_rehearsal_resumes_to_where_the_uninterrupted_one_ends(rehearsal_torus,
                                                                        toy_dir, tmp_path):
    reference, _ = rehearsal_torus
    out = str(tmp_path / "killed")
    kill_at = random.Random().randint(4, TOTAL_STEPS - 2)    # after the first checkpoint
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONUNBUFFERED="1")
    argv = trainer(toy_dir, out, "--rehearse-gpu", "--set", "data.device=gpu")
    proc = subprocess.Popen(mpirun_command(4, argv), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            start_new_session=True)
    try:
        wait_for_step(os.path.join(out, "log.jsonl"), kill_at, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    resumed = train(toy_dir, out, "--rehearse-gpu", "--set", "data.device=gpu", "--resume")
    assert "resume: step" in resumed.stdout         # the step check passed on the NCCL path
    assert digests(out) == digests(reference), f"killed at step {kill_at}"
    steps = [r["step"] for r in records(out) if r["event"] == "step"]
    assert steps == list(range(1, TOTAL_STEPS + 1)), f"killed at step {kill_at}"


DOUBLE_RULES = [
    "numpy_rejected", "uninitialised_rejected", "fp16_rounding_in_a_half_communicator",
    "division_divides_by_the_group_size", "reduce_in_place_with_a_group_refused",
    "group_rank_numbering", "local_rank_is_the_index_on_the_host",
    "groups_created_in_another_order_refused", "zeroed_arrays_are_skipped",
    "out_of_bounds_reduce_scatter_refused", "callback_checks_every_gradient_on_the_host",
    "abort_from_a_thread_needs_thread_multiple", "results_hidden_until_synchronize",
    "every_listed_array_is_checked_on_the_host"]


def worker_result(name, ranks=4, *args):
    proc = run_mpi(ranks, [os.path.join(WORKERS, name), *args], timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="module")
def double_rules():
    return worker_result("double_rules.py")


def test_every_rule_of_the_double_is_checked(double_rules):
    assert sorted(double_rules) == sorted(DOUBLE_RULES)


@pytest.mark.parametrize("rule", DOUBLE_RULES)
def test_the_double_behaves_as_nnabla_ext_cuda(rule, double_rules):
    """One rule each (tests/mpi_workers/double_rules.py has the rule's docstring)."""
    assert double_rules[rule] is None, double_rules[rule]


FULL_PRECISION = ["counts_above_2048", "step_check", "weight_broadcast", "bn_statistics",
                  "exchange_loss"]


@pytest.fixture(scope="module")
def full_precision():
    return worker_result("full_precision.py")


@pytest.mark.parametrize("backend", ["nccl_half", "mpi_float16_wire"])
@pytest.mark.parametrize("check", FULL_PRECISION)
def test_metrics_step_check_statistics_and_weights_stay_exact(backend, check, full_precision):
    """On a half-precision NCCL communicator (and with MPI's float16 wire) these would round:
    4,801 images counted as 4,800, step 2,049 as 2,048, weights to fp16, BN means in fp16."""
    assert full_precision[backend][check] is None, full_precision[backend][check]


def test_bench_comm_rehearsal_has_no_wrong_element(tmp_path):
    out = tmp_path / "bench.jsonl"
    proc = run_mpi(4, [os.path.join(REPO, "tools", "bench_comm.py"), "--rehearse-gpu",
                       "--backend", "nccl", "--check", "--grid", "2x2", "--max-bytes", "64K",
                       "--no-resnet", "--rounds", "1", "--iter-bytes", "1", "--json", str(out)],
                   timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["algorithm"] for r in rows} == {"torus2d", "hierarchical", "native"}
    assert len(rows) == 9 and all(r["wrong"] == 0 for r in rows)       # 4K, 16K, 64K
    assert "# rehearse-gpu: NOT rehearsed:" in proc.stdout


def test_the_watchdog_ends_a_frozen_rehearsal(tmp_path):
    """comm starts MPI at MPI_THREAD_MULTIPLE, so the watchdog may abort from its thread
    (the double refuses at nnabla's SERIALIZED: the job would hang)."""
    try:
        proc = run_mpi(4, [os.path.join(WORKERS, "freeze.py"), "--timeout-s", "2",
                           "--frozen-rank", "1", "--pid-dir", str(tmp_path), "--rehearse-gpu"],
                       timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the job hung: the watchdog could not abort it")
    pids = [int((tmp_path / f"rank{r}.pid").read_text()) for r in range(4)]
    for p in pids:                                  # the frozen rank, if it survived
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert proc.returncode != 0
    assert "comm watchdog: rank 0" in proc.stderr and "DoubleError" not in proc.stderr


# --- the double fails where nnabla-ext-cuda's communicator fails ----------------------------
BENCH = [os.path.join(REPO, "tools", "bench_comm.py"), "--rehearse-gpu", "--backend", "nccl",
         "--no-resnet", "--max-bytes", "4K", "--rounds", "1", "--algorithms", "native"]


def errors(proc):
    return error_lines(proc.stderr)


@pytest.mark.procs
def test_init_failing_on_one_rank_ends_the_whole_job():
    """ncclCommInitRank fails on rank 1 (.cu:426-429); the others wait in it (no timeout) until
    comm's handler aborts the job: one line from rank 1, a non-zero exit, no hang (run_mpi
    raises TimeoutExpired if the job outlives its timeout)."""
    proc = run_mpi(4, BENCH, timeout=120, env={"REHEARSE_FAIL_INIT_RANKS": "1"})
    assert proc.returncode != 0
    lines = errors(proc)
    assert len(lines) == 1 and lines[0].startswith("error: rank 1: nnabla's communicator "
                                                   "init() failed (ncclCommInitRank failed."), \
        proc.stderr[-2000:]


@pytest.mark.procs
def test_a_rank_without_a_gpu_fails_as_cuda_set_device_and_ends_the_job():
    """4 ranks on a host stated to have 2 GPUs: local ranks 2 and 3 fail in cuda_set_device
    (.cu:424; common.cpp:20-26: cudaErrorInvalidDevice) and the job ends."""
    proc = run_mpi(4, BENCH, timeout=120, env={"REHEARSE_VISIBLE_GPUS": "2"})
    assert proc.returncode != 0
    lines = errors(proc)
    assert lines and all("invalid device ordinal" in ln and "fewer visible GPUs than ranks"
                         in ln for ln in lines), proc.stderr[-2000:]
    assert {ln.split(":")[1].strip() for ln in lines} <= {"rank 2", "rank 3"}


@pytest.mark.procs
def test_nnabla_own_watchdog_switched_on_is_refused_in_one_line():
    """NNABLA_MPI_WATCH_DOG_ENABLE=1 would end one rank by std::terminate (watch_dog.cpp:41-51)
    after 50 s on rank 0 (.cu:715-720): refused on every rank before any collective."""
    proc = run_mpi(2, BENCH, timeout=120, env={"NNABLA_MPI_WATCH_DOG_ENABLE": "1"})
    assert proc.returncode != 0
    lines = errors(proc)
    assert len(lines) == 2 and all("NNABLA_MPI_WATCH_DOG_ENABLE=1" in ln and "unset it" in ln
                                   for ln in lines), proc.stderr[-2000:]


@pytest.mark.procs
def test_host_overhead_counts_nnabla_calls_per_bucket_and_one_read_per_step(tmp_path):
    """bench_comm --host-overhead over the no-op double: torus2d makes 3 communicator calls per
    bucket (reduce_scatter, all_reduce, all_gather), native 1, whatever the 161 arrays; a
    training step reads the device once. Times are printed, never asserted."""
    out = str(tmp_path / "host.jsonl")
    proc = run_mpi(4, [BENCH[0], "--rehearse-gpu", "--backend", "nccl", "--host-overhead",
                       "--grid", "2x2", "--algorithms", "torus2d,native", "--iters", "3",
                       "--json", out], timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    with open(out) as f:
        rows = [json.loads(line) for line in f]
    per_bucket = {"torus2d": 3, "native": 1}
    reduces = [r for r in rows if r["measure"] == "allreduce"]
    assert {r["algorithm"] for r in reduces} == set(per_bucket)
    for r in reduces:
        assert r["arrays"] == 161 and r["buckets"] < 40
        assert r["nnabla_calls_per_allreduce"] == per_bucket[r["algorithm"]] * r["buckets"]
        assert r["host_ms_per_allreduce"] > 0
    steps = [r for r in rows if r["measure"] == "step"]
    assert len(steps) == 4 and all(r["host_reads_per_step"] == 1 for r in steps)
    for r in steps:            # half: the fp16 bucket and BN's float32 one (B2)
        buckets = 2 if r["type_config"] == "half" else 1
        assert r["nnabla_comm_calls_per_step"] == per_bucket[r["algorithm"]] * buckets, r
