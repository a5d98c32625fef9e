"""GPU mode, checked from a machine without a GPU: the printed plan, the missing-library
errors, and the NCCL group plan against the MPI one. (Running on a GPU: tools/gpu_selfcheck.sh.)"""
import os

import pytest

from comm.nccl import NcclCommunicator
from comm.plan import Grid
from conftest import run_trainer
from mpi import REPO, error_lines, run_mpi


@pytest.mark.procs
def test_dry_run_prints_the_gpu_plan_of_the_paper_recipe():
    proc = run_trainer("--config", "configs/paper_224s.yaml", "--dry-run",
                       "--world-size", "2176", "--local-size", "4")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "context cudnn, type_config half (FP16 forward/backward, loss in float)" in out
    assert "device_id = local rank 0..3 on each node" in out
    assert "dynamic loss scaling from 32768" in out
    assert "per-GPU batch by stage: 16 x 1, 32 x 1" in out
    assert "torus2d on grid 4x544: every rank calls new_group for all 548 groups" in out
    assert "row0: ranks 0, 1, 2, 3" in out
    assert "col3: ranks 3, 7, 11, 15, ..., 2171, 2175" in out


@pytest.mark.procs
def test_dry_run_predicts_step_and_time_to_train_from_the_scale_model():
    proc = run_trainer("--config", "configs/paper_224s.yaml", "--dry-run",
                       "--world-size", "2176", "--local-size", "4")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    stage_lines = [ln for ln in lines if ln.startswith(("stage 0 ", "stage 1 "))]
    assert len(stage_lines) == 2 and "abci2-v100, 2176 GPUs (4 per node)" in stage_lines[0]
    assert "16 per GPU" in stage_lines[0] and "32 per GPU" in stage_lines[1]
    assert "all-reduce torus2d 4x544 of 51.1 MB" in proc.stdout     # FP16 gradients
    assert any(ln.startswith("predicted  time to train") for ln in lines)
    bad = run_trainer("--config", "configs/paper_224s.yaml", "--dry-run", "--preset", "dgx")
    assert bad.returncode != 0 and "--preset dgx: unknown" in bad.stderr


@pytest.mark.procs
def test_dry_run_of_native_nccl_charges_the_callback_for_its_host_checks():
    """all_reduce_callback is opt-in: it blocks the host in one world MPI_Allreduce per
    gradient array, and the prediction charges those 161 checks instead of calling it faster."""
    common = ["--config", "configs/goyal_8k.yaml", "--dry-run", "--world-size", "256",
              "--local-size", "8", "--set", "device=gpu", "--set", "comm.algorithm=native"]
    plain = run_trainer(*common)
    callback = run_trainer(*common, "--set", "comm.backward_callback=true")
    assert plain.returncode == 0 and callback.returncode == 0, plain.stderr + callback.stderr
    assert "native: NCCL's own all-reduce after backward" in plain.stdout
    assert "all_reduce_callback reduces gradients during backward" in callback.stdout
    assert "not measured on a GPU" in callback.stdout

    def step_ms(out):
        line = next(ln for ln in out.splitlines() if ln.startswith("stage 0 "))
        return float(line.split("step ")[1].split(" ms")[0]), line
    plain_ms, _ = step_ms(plain.stdout)
    callback_ms, line = step_ms(callback.stdout)
    assert "all_reduce_callback's host checks" in line and callback_ms > plain_ms


@pytest.mark.procs
def test_without_the_gpu_stack_each_missing_piece_is_one_line(toy_dir, tmp_path):
    proc = run_trainer("--config", "configs/cpu_demo.yaml", "--data-dir", toy_dir,
                       "--output-dir", str(tmp_path / "o"), "--set", "device=gpu")
    assert proc.returncode != 0
    lines = error_lines(proc.stderr, "error: ")
    assert len(lines) == 2 and len(proc.stderr.strip().splitlines()) == 2, proc.stderr
    assert "nnabla-ext-cuda is not installed" in lines[0]
    assert "libcudnn.so.8" in lines[1]
    assert all("GPU=1 make setup" in line for line in lines)
    assert not os.path.exists(tmp_path / "o")                     # no work was started


@pytest.mark.procs
def test_under_mpirun_nccl_and_libmpi_are_checked_too(toy_dir, tmp_path):
    proc = run_mpi(2, [os.path.join(REPO, "train_resnet50.py"), "--config",
                       "configs/cpu_demo.yaml", "--data-dir", toy_dir, "--output-dir",
                       str(tmp_path / "o"), "--set", "device=gpu"], timeout=120)
    assert proc.returncode != 0
    lines = error_lines(proc.stderr, "error: ")
    assert any("NCCL (libnccl.so.2) is not loadable" in line for line in lines), proc.stderr
    assert any("Open MPI's libmpi.so is not loadable" in line and "OMPI_HOME" in line
               for line in lines)


class RecordingNnablaComm:
    """Records the ``new_group`` calls the NCCL adapter makes on one rank (no collectives)."""

    def __init__(self, rank, size):
        self.rank, self.size, self.local_rank = rank, size, rank
        self.created = []

    def new_group(self, name_ranks):
        self.created.append(name_ranks)
        return name_ranks[0]


@pytest.mark.parametrize("shape", [(2, 3), (3, 2), (4, 1), (1, 4), (8, 4)])
def test_nccl_groups_match_the_mpi_split_on_every_rank(shape):
    x, y = shape
    size = x * y
    grid = Grid.from_shape(x, y, size)
    orders = set()
    for rank in range(size):
        nc = RecordingNnablaComm(rank, size)
        adapter = NcclCommunicator(None, "torus2d", f"{x}x{y}", nnabla_comm=nc, timeout_s=0)
        orders.add(tuple((name, tuple(ranks)) for name, ranks in nc.created))
        # The MPI backend splits the world with color = row (column) index, key = position
        # in it: the members it gets, in order, are these.
        i, j = grid.position(rank)
        mpi_row = sorted((q for q in range(size) if grid.position(q)[0] == i),
                         key=lambda q: grid.position(q)[1])
        mpi_col = sorted((q for q in range(size) if grid.position(q)[1] == j),
                         key=lambda q: grid.position(q)[0])
        assert adapter.row_ranks == mpi_row and adapter.col_ranks == mpi_col
        assert adapter.grid == (x, y)
    assert len(orders) == 1           # every rank creates every group, in the same order
    (order,) = orders
    assert len(order) == (y if x > 1 else 0) + (x if y > 1 else 0)
