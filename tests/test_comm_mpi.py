"""comm/ on real mpirun launches: results, counters, errors and the watchdog.

Each launch costs seconds on this 2-core machine, so one launch per world size runs every
algorithm on every grid of that size (tests/mpi_workers/allreduce_cases.py) and the tests
below read its RESULT line.
"""
import json
import os
import subprocess
import time

import pytest

from mpi import WORKERS, error_lines, run_mpi

pytestmark = pytest.mark.procs

LAUNCHES = {1: "1x1", 2: "1x2,2x1", 4: "2x2,4x1,1x4", 6: "2x3,3x2"}


@pytest.fixture(scope="module")
def results():
    """{world size: RESULT dict}, launched lazily once per size."""
    cache = {}

    def get(n):
        if n not in cache:
            argv = [os.path.join(WORKERS, "allreduce_cases.py"), "--grids", LAUNCHES[n]]
            if n > 1:
                argv += ["--counters", "--errors"]
            proc = run_mpi(n, argv, timeout=240)
            assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            assert len(lines) == 1, proc.stdout[-2000:]
            cache[n] = json.loads(lines[0][len("RESULT "):])
        return cache[n]
    return get


@pytest.mark.parametrize("n", sorted(LAUNCHES))
def test_every_algorithm_matches_the_float64_reference(results, n):
    """Grids 1x1, 1x2, 2x1, 2x2, 4x1, 1x4, 2x3, 3x2; odd lengths, empty arrays, mixed dtypes,
    average, bucket boundaries inside arrays, 16-bit wire; identical bytes on every rank."""
    r = results(n)
    assert r["ranks"] == n
    assert r["failures"] == []
    # 4 algorithms + torus2d with the column ring forced, x 15 runs
    assert r["checked"] == 75 * len(LAUNCHES[n].split(","))
    assert all(r["bcast_ok"].values()), r["bcast_ok"]


@pytest.mark.parametrize("n", [2, 4, 6])
def test_counters_match_the_closed_forms(results, n):
    """Bytes sent per rank = 2(N-1)/N*S for torus2d and ring; steps per bucket
    2(X-1)+2(Y-1) for torus2d against 2(N-1) for the ring."""
    for grid, by_alg in results(n)["counters"].items():
        x, y = map(int, grid.split("x"))
        for alg, c in by_alg.items():
            s = c["nbytes"]
            assert c["bytes"] == pytest.approx(2 * (n - 1) / n * s), (grid, alg, c)
            steps = 2 * (x - 1) + 2 * (y - 1) if alg.startswith("torus2d") else 2 * (n - 1)
            assert c["steps"] == steps * c["buckets"], (grid, alg, c)
        expected = [p for p, keep in (("ag_row", x > 1), ("ar_col", y > 1), ("rs_row", x > 1))
                    if keep]
        # one node: auto keeps MPI_Allreduce in the column (faster on shared memory)
        assert by_alg["torus2d"]["column_ring"] is False
        assert by_alg["torus2d_column_ring"]["column_ring"] is (y > 1)
        for torus in (by_alg["torus2d"], by_alg["torus2d_column_ring"]):
            assert torus["phases"] == expected
            assert torus["calls"] == len(expected) * torus["buckets"]
        assert by_alg["ring"]["phases"] == ["ag_ring", "rs_ring"]


@pytest.mark.parametrize("n", [2, 4])
def test_bad_input_is_one_error_on_every_rank(results, n):
    errors = results(n)["errors"]
    for key, text in [("grid_mismatch", f"has {n + 1} ranks but the job has {n}"),
                      ("different_lists", "different list of arrays on different ranks"),
                      ("not_contiguous", "not a writable C-contiguous array"),
                      ("integer_array", "has dtype int64")]:
        msgs = errors[key]
        assert len(msgs) == n and all(m and text in m and "\n" not in m for m in msgs), (key, msgs)
    assert errors["auto_grid"] == [n, 1]     # one node: one row of every rank


def _gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_a_frozen_rank_makes_the_job_exit_within_the_timeout(tmp_path):
    timeout_s = 2.0
    try:
        proc = run_mpi(4, [os.path.join(WORKERS, "freeze.py"), "--timeout-s", str(timeout_s),
                           "--frozen-rank", "1", "--pid-dir", str(tmp_path)], timeout=90)
    except subprocess.TimeoutExpired:
        pytest.fail("the job hung: no watchdog fired")
    ended = time.time()
    frozen_at = float((tmp_path / "frozen_at").read_text())
    pids = [int((tmp_path / f"rank{r}.pid").read_text()) for r in range(4)]
    deadline = time.time() + 10
    while not all(_gone(p) for p in pids) and time.time() < deadline:
        time.sleep(0.2)
    survivors = [p for p in pids if not _gone(p)]
    for p in survivors:              # leave nothing behind, then fail
        os.kill(p, 9)
    assert not survivors, f"ranks still alive after mpirun ended: {survivors}"
    assert proc.returncode != 0
    assert ended - frozen_at < timeout_s + 10, (ended - frozen_at, proc.stderr[-3000:])
    lines = error_lines(proc.stderr, "comm watchdog:")
    assert lines, proc.stderr[-3000:]
    reporters = {int(ln.split()[3]) for ln in lines}
    assert 1 not in reporters and reporters <= {0, 2, 3}
    # rank 0 shares row0 with the frozen rank 1 and must name it as not responding
    row0 = [ln for ln in lines if ln.startswith("comm watchdog: rank 0 ")]
    assert row0 and "rs_row" in row0[0] and "group row0 = ranks [0, 1]" in row0[0]
    assert "waiting on rank 1 (not responding" in row0[0]


def test_nccl_adapter_logic_on_the_double_of_nnabla_communicator():
    """comm/nccl.py over rehearsal/'s double of nnabla's NCCL communicator (as strict as the
    real one): groups created in the plan's order on every rank, buckets chunked and
    reassembled correctly, numpy arrays over the host, MPI started at THREAD_MULTIPLE for
    the watchdog. (nnabla's NCCL communicator itself cannot run here: not verified on a GPU.)"""
    proc = run_mpi(4, [os.path.join(WORKERS, "nccl_adapter.py"), "--grids", "2x2,4x1,1x4"],
                   timeout=180, env={"NNABLA_CONFIG_FILE_PATH":
                                     os.path.join(os.path.dirname(WORKERS), "..",
                                                  "nnabla.conf")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    r = json.loads(line[len("RESULT "):])
    assert r["failures"] == [] and r["checked"] == 24
    assert r["groups_ok"] and r["bcast_ok"] and r["host_ok"]
    assert r["thread_level"] == 3          # MPI_THREAD_MULTIPLE, not nnabla's SERIALIZED
