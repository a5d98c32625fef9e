"""MPI worker: every algorithm on every grid given, against a float64 reference.

    mpirun -np 4 python tests/mpi_workers/allreduce_cases.py --grids 2x2,4x1,1x4

Rank 0 prints one line ``RESULT {json}``: how many checks ran, the failures (each names the
grid, algorithm, case and error), the counters measured for the formula tests, and what
each rank saw for the error cases. Data are a function of (case, array, rank), so every
rank can compute the exact reference of the sum over all ranks.
"""
import argparse
import json
import sys
import zlib

import numpy as np
from mpi4py import MPI

import comm
from comm.plan import CommError

WORLD = MPI.COMM_WORLD
F16, F32, F64 = np.float16, np.float32, np.float64

CASES = {   # name -> [(shape, dtype)]
    "odd_shapes": [((7,), F32), ((3, 5), F32), ((1,), F32), ((0,), F32), ((13, 1, 3), F32),
                   ((1001,), F32)],
    "single_element": [((1,), F32)],
    "empty_list": [],
    "only_empty": [((0,), F32), ((0, 3), F64)],
    "mixed_dtypes": [((100,), F16), ((37, 3), F64), ((5,), F32), ((0,), F64), ((3,), F16),
                     ((2, 2), F32)],
    "larger": [((70001,), F32), ((5,), F32)],
}
TINY_BUCKET_MB = 64 / 2 ** 20     # 16 float32 per bucket: boundaries fall inside arrays
TINY_CASES = ("odd_shapes", "single_element", "mixed_dtypes")


def data(case, rank):
    return [np.random.default_rng([zlib.crc32(case.encode()), i, rank])
            .standard_normal(shape).astype(dt) for i, (shape, dt) in enumerate(CASES[case])]


def reference(case, n, average):
    total = [np.zeros(shape, F64) for shape, _ in CASES[case]]
    for r in range(n):
        for t, a in zip(total, data(case, r)):
            t += a.astype(F64)
    return [t / n for t in total] if average else total


def tolerance(dtype, wire):
    if dtype == F16 or wire == "float16":
        return 0.05, 0.01
    if dtype == F32 or wire == "float32":
        return 1e-5, 1e-5
    return 1e-12, 1e-12


def run_case(c, case, average, wire, where):
    """Returns a failure message or None; also checks every rank got identical bytes."""
    n = WORLD.size
    arrays = data(case, WORLD.rank)
    c.all_reduce(arrays, average=average)
    worst = None
    for i, (out, ref) in enumerate(zip(arrays, reference(case, n, average))):
        atol, rtol = tolerance(out.dtype, wire)
        if out.shape != ref.shape or out.dtype != CASES[case][i][1]:
            return f"{where}: array {i} changed shape/dtype to {out.shape} {out.dtype}"
        err = np.abs(out.astype(F64) - ref)
        bad = err > atol + rtol * np.abs(ref)
        if bad.any():
            worst = f"{where}: array {i} off by up to {err.max():.3g} ({bad.sum()} elements)"
            break
    digest = zlib.crc32(b"".join(a.tobytes() for a in arrays))
    seen = WORLD.allgather((worst, digest))
    first = next((w for w, _ in seen if w), None)
    if first:
        return first
    if len({d for _, d in seen}) > 1:
        return f"{where}: ranks hold different results"
    return None


# (bucket_mb, wire dtype, case, average): every case plain; average, tiny buckets (bucket
# boundaries inside arrays) and a 16-bit wire on the cases where they can go wrong.
RUNS = ([(4.0, None, case, False) for case in CASES]
        + [(4.0, None, case, True) for case in ("odd_shapes", "mixed_dtypes")]
        + [(TINY_BUCKET_MB, None, case, case == "mixed_dtypes") for case in TINY_CASES]
        + [(4.0, "float16", "odd_shapes", True), (4.0, "float16", "mixed_dtypes", False),
           (TINY_BUCKET_MB, "float16", "odd_shapes", False),
           (4.0, "float32", "mixed_dtypes", True)])


def check_algorithms(grids, torus_column="ring"):
    """Every algorithm (torus2d with comm.column_phase=auto), then torus2d with its column
    phase forced to ``torus_column``: on one node auto picks MPI_Allreduce, across nodes the
    ring, so the default extra run covers the other one."""
    checked, failures = 0, []
    variants = [(alg, "auto") for alg in comm.ALGORITHMS] + [("torus2d", torus_column)]
    for grid in grids:
        for alg, column in variants:
            comms = {}
            for bucket_mb, wire, case, average in RUNS:
                c = comms.get((bucket_mb, wire))
                if c is None:
                    c = comms[bucket_mb, wire] = comm.create(
                        alg, grid, bucket_mb=bucket_mb, wire_dtype=wire, timeout_s=60,
                        column_phase=column)
                    if grid != "auto":      # auto: the grid found from the nodes
                        assert c.grid == tuple(map(int, grid.split("x"))), (c.grid, grid)
                where = (f"grid {grid} {alg} column_phase={column} wire={wire} "
                         f"bucket_mb={bucket_mb:g} {case} average={average}")
                msg = run_case(c, case, average, wire, where)
                checked += 1
                if msg:
                    failures.append(msg)
            for c in comms.values():
                c.close()
    return checked, failures


def check_bcast(grid):
    c = comm.create("torus2d", grid, bucket_mb=TINY_BUCKET_MB)
    root = WORLD.size - 1
    shapes = [((5,), np.int32), ((3, 3), F32), ((0,), F64), ((17,), np.uint8), ((2,), F16)]
    mine = [np.full(s, WORLD.rank + 1, dt) for s, dt in shapes]
    c.bcast(mine, root=root)
    ok = all((a == root + 1).all() and a.dtype == dt for a, (_, dt) in zip(mine, shapes))
    c.close()
    return all(WORLD.allgather(ok))


def measure_counters(grid):
    """Counters of one all_reduce of S = 60 * 10007 float32 (divisible by every X and N)."""
    out = {}
    for key, alg, column in (("torus2d", "torus2d", "auto"), ("ring", "ring", "auto"),
                             ("torus2d_column_ring", "torus2d", "ring")):
        c = comm.create(alg, grid, bucket_mb=1.0, column_phase=column)
        arrays = [np.ones(60 * 10007 - 7, F32), np.ones(7, F32)]
        c.all_reduce(arrays)                      # first call: layout check across ranks
        before = c.counters()
        c.all_reduce(arrays)
        after = c.counters()
        out[key] = {k: after[k] - before[k] for k in ("calls", "bytes", "steps", "buckets")}
        out[key]["nbytes"] = sum(a.nbytes for a in arrays)
        out[key]["column_ring"] = getattr(c, "column_ring", False)
        out[key]["phases"] = sorted(k for k, v in after["phases"].items()
                                    if v["calls"] and k != "check")
        c.close()
    return out


def catch(fn):
    """Run fn on every rank; return each rank's CommError message (or None)."""
    try:
        fn()
        msg = None
    except CommError as e:
        msg = str(e)
    return WORLD.allgather(msg)


def check_errors():
    n = WORLD.size
    out = {"grid_mismatch": catch(lambda: comm.create("torus2d", f"{n + 1}x1"))}
    c = comm.create("torus2d", "auto")
    out["auto_grid"] = list(c.grid)
    shapes = [(5,)] if WORLD.rank == 0 else [(6,)]
    out["different_lists"] = catch(lambda: c.all_reduce([np.ones(s, F32) for s in shapes]))
    out["not_contiguous"] = catch(lambda: c.all_reduce([np.ones((4, 4), F32)[:, 1]]))
    out["integer_array"] = catch(lambda: c.all_reduce([np.ones(3, np.int64)]))
    c.all_reduce([np.ones(3, F32)])    # still usable after the errors above
    c.close()
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--grids", required=True)
    p.add_argument("--counters", action="store_true")
    p.add_argument("--errors", action="store_true")
    args = p.parse_args()
    grids = args.grids.split(",")
    checked, failures = check_algorithms(grids)
    result = {"ranks": WORLD.size, "checked": checked, "failures": failures,
              "bcast_ok": {g: check_bcast(g) for g in grids}}
    if args.counters:
        result["counters"] = {g: measure_counters(g) for g in grids}
    if args.errors:
        result["errors"] = check_errors()
    if WORLD.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
