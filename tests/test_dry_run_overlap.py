"""The dry run predicts what the trainer does: communication hides behind backward only where
the trainer reduces during backward (all_reduce_callback), and every assumption is printed.

scale_model must stay pure, so it states the trainer's condition instead of importing it;
the first test holds the two statements (and the Exchange that obeys the trainer's) together
on every combination."""
import itertools
import re

import nnabla as nn
import pytest

from conftest import run_trainer
from scale_model import model as sim
from scale_model.presets import get_preset
from training import device

ALGORITHMS = ("ring", "torus2d", "hierarchical", "native")


class RecordingComm:
    """Only what Exchange.backward_callback reads: the backend, algorithm and size, and a
    backward_callback that says it was asked (the decision is under test, not nnabla's
    callback, which tests/test_comm_trainer.py runs)."""

    def __init__(self, backend, algorithm, size):
        self.backend, self.algorithm, self.size = backend, algorithm, size

    def backward_callback(self, arrays):
        return ("all_reduce_callback", len(arrays))


@pytest.mark.parametrize("algorithm,backend,callback,accumulation,world",
                         list(itertools.product(ALGORITHMS, ("mpi", "nccl"), (False, True),
                                                (1, 2), (1, 8))))
def test_the_model_overlaps_exactly_where_the_trainer_does(algorithm, backend, callback,
                                                           accumulation, world):
    trainer = device.reduces_during_backward(callback, backend, algorithm, accumulation, world)
    params = {"w": nn.Variable((3,), need_grad=True)}
    exchange = device.Exchange(RecordingComm(backend, algorithm, world), params, callback)
    assert (exchange.backward_callback(accumulation) is not None) == trainer
    assert sim.trainer_uses_callback(algorithm, backend, callback, accumulation, world) == trainer
    overlap, reason = sim.trainer_overlap(algorithm, backend, callback, accumulation, world)
    assert overlap == (sim.DEFAULT_OVERLAP if trainer else 0.0)
    if trainer:
        assert "all_reduce_callback" in reason and "assumed" in reason
    elif world > 1:
        assert algorithm in reason and sim.OVERLAP_RULE in reason


def test_only_the_callback_case_overlaps():
    overlapping = [combo for combo in itertools.product(ALGORITHMS, ("mpi", "nccl"),
                                                        (False, True), (1, 2), (1, 8))
                   if sim.trainer_overlap(*combo)[0] > 0]
    assert overlapping == [("native", "nccl", True, 1, 8)]
    with pytest.raises(sim.SimError, match="backend 'gloo' is not comm/'s mpi or nccl"):
        sim.trainer_overlap("native", "gloo", True)


def stage_numbers(out, stage):
    line = next(ln for ln in out.splitlines() if ln.startswith(f"stage {stage} "))
    detail = out.splitlines()[out.splitlines().index(line) + 1]
    exposed = float(re.search(r"exposed communication ([\d.]+) ms", line).group(1))
    allreduce = float(re.search(r"of [\d.]+ MB: ([\d.]+) ms", detail).group(1))
    hidden = float(re.search(r"hides ([\d.]+) ms", detail).group(1))
    return exposed, allreduce, hidden, line


def assumed(out):
    return [ln[len("assumed:"):].strip() for ln in out.splitlines() if ln.startswith("assumed:")]


def predicted_ttt(out):
    return float(re.search(r"predicted  time to train (\d+) s", out).group(1))


PAPER = ["--config", "configs/paper_224s.yaml", "--dry-run", "--world-size", "2176",
         "--local-size", "4"]


@pytest.mark.procs
def test_torus2d_dry_run_exposes_the_whole_all_reduce_and_says_why():
    proc = run_trainer(*PAPER)
    assert proc.returncode == 0, proc.stderr
    for stage in (0, 1):
        exposed, allreduce, hidden, _ = stage_numbers(proc.stdout, stage)
        assert hidden == 0 and exposed == pytest.approx(allreduce, abs=0.05)
    lines = assumed(proc.stdout)
    assert lines[0] == ("overlap 0 of backward: torus2d's exchange runs after backward (" +
                        sim.OVERLAP_RULE + ")")
    assert "gradients 16-bit on the wire (type_config half): 2 B x 25,557,032 parameters = " \
           "51.1 MB" in lines[1]
    v100 = get_preset("abci2-v100")
    assert any(ln.startswith(f"compute per step = {v100.step_overhead_ms.value:g} ms")
               and f"{v100.train_images_per_s.value:g} img/s" in ln for ln in lines)
    assert any(ln.startswith("hardware of preset abci2-v100") for ln in lines)
    band = [ln for ln in proc.stdout.splitlines() if ln.startswith("band       ")]
    assert len(band) == 1 and "14 published step times" in band[0]
    assert not any("backward = 2/3" in ln for ln in lines)     # unused at overlap 0
    assert len(lines) == len(set(lines))                         # once each, not per stage
    stages = [(5.025, 34816), (90.051, 69632)]                   # the plan's stage ends
    at = {o: sim.time_to_train(stages, 2176, "abci2-v100", "torus2d", None, 4,
                               overlap=o)["train_s"] for o in (0.0, sim.DEFAULT_OVERLAP)}
    assert predicted_ttt(proc.stdout) == pytest.approx(at[0.0], abs=1)
    assert abs(predicted_ttt(proc.stdout) - at[sim.DEFAULT_OVERLAP]) > 5   # not the 0.5 guess


NATIVE_GPU = ["--config", "configs/goyal_8k.yaml", "--dry-run", "--world-size", "256",
              "--local-size", "8", "--set", "device=gpu", "--set", "comm.algorithm=native"]


@pytest.mark.procs
def test_native_with_the_callback_on_gpu_overlaps_half_and_pays_the_host_checks():
    proc = run_trainer(*NATIVE_GPU, "--set", "comm.backward_callback=true")
    plain = run_trainer(*NATIVE_GPU)
    assert proc.returncode == 0 and plain.returncode == 0, proc.stderr + plain.stderr
    lines = assumed(proc.stdout)
    assert lines[0].startswith("overlap 0.5 of backward: nnabla's all_reduce_callback sends "
                               "finished gradients during backward; the fraction 0.5 is assumed")
    assert "backward = 2/3 of compute (backward ~ 2x forward; not measured)" in lines
    assert any(ln.startswith("all_reduce_callback's 161 host checks per step") for ln in lines)
    exposed, allreduce, hidden, line = stage_numbers(proc.stdout, 0)
    expect = sim.predict_step(32, 256, 8, "abci3-h200", "native", bytes_per_param=4,
                              overlap=0.5, callback_checks=161)
    assert hidden == pytest.approx(expect["hidden_s"] * 1e3, abs=0.01) and hidden > 0
    assert float(line.split("step ")[1].split(" ms")[0]) == \
        pytest.approx(expect["step_s"] * 1e3, abs=0.05)
    assert assumed(plain.stdout)[0].startswith(
        "overlap 0 of backward: native without comm.backward_callback runs after backward")
    assert stage_numbers(plain.stdout, 0)[2] == 0


@pytest.mark.procs
def test_a_stage_that_accumulates_loses_the_callback_and_its_overlap():
    proc = run_trainer(*PAPER, "--set", "comm.algorithm=native", "--set",
                       "comm.backward_callback=true", "--set", "batch.mode=accumulate",
                       "--set", "batch.max_local_batch=16")
    assert proc.returncode == 0, proc.stderr
    first, second = stage_numbers(proc.stdout, 0), stage_numbers(proc.stdout, 1)
    assert first[2] > 0 and "host checks" in first[3]          # 16 x 1: the callback
    assert second[2] == 0 and "host checks" not in second[3]   # 16 x 2: after backward
    assert any(ln.startswith("overlap 0 of backward: accumulation 2: all_reduce_callback is "
                             "used only with one micro-batch") for ln in assumed(proc.stdout))


@pytest.mark.procs
def test_on_the_mpi_backend_nothing_overlaps():
    proc = run_trainer(*PAPER, "--set", "device=cpu", "--set", "data.device=cpu", "--set",
                       "comm.algorithm=native", "--set", "comm.backward_callback=true")
    assert proc.returncode == 0, proc.stderr
    assert stage_numbers(proc.stdout, 0)[2] == 0 and "host checks" not in proc.stdout
    lines = assumed(proc.stdout)
    assert lines[0].startswith("overlap 0 of backward: native on the MPI backend (CPU) runs "
                               "after backward")
    assert "native on the MPI backend is MPI's own all-reduce: NCCL's tree stands in for it" \
        in lines
