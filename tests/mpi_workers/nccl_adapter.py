"""MPI worker: comm/nccl.py's adapter on CPU NdArrays, over rehearsal/'s double of nnabla's
NCCL communicator (as strict as nnabla-ext-cuda's: see rehearsal/communicator.py).

    mpirun -np 4 python tests/mpi_workers/nccl_adapter.py --grids 2x2,4x1,1x4

Checks the adapter's own logic (group order, chunking, reassembly, in-place calls, the
host path for numpy arrays and full precision) on real ranks; it does not check NCCL.
Rank 0 prints ``RESULT {json}``.
"""
import argparse
import json
import sys

import rehearsal                              # before mpi4py.MPI: comm starts MPI itself
import nnabla as nn  # noqa: E402
import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

from comm.nccl import NcclCommunicator  # noqa: E402
from comm.plan import Grid  # noqa: E402


class Recorder:
    """Wraps the double and records its new_group calls."""

    def __init__(self, ctx):
        self.nc = rehearsal.MultiProcessDataParallelCommunicator(ctx)
        self.created = []

    def __getattr__(self, name):
        return getattr(self.nc, name)

    def new_group(self, name_ranks):
        self.created.append((name_ranks[0], list(name_ranks[1])))
        return self.nc.new_group(name_ranks)


def arrays_of(rank, shapes):
    return [np.random.default_rng([i, rank]).standard_normal(s).astype(np.float32)
            for i, s in enumerate(shapes)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--grids", required=True)
    args = p.parse_args()
    ctx = rehearsal.contexts("float")[0]
    nn.set_default_context(ctx)
    world = None
    failures, checked, groups_ok = [], 0, True
    shapes = [(7,), (3, 5), (1,), (0,), (13, 1, 3), (1001,)]
    for grid in args.grids.split(","):
        for alg in ("torus2d", "hierarchical", "native"):
            # 256-byte buckets: boundaries inside arrays (torus2d only, to keep the run short)
            for bucket_mb in (4.0, 256 / 2 ** 20) if alg == "torus2d" else (4.0,):
                rec = Recorder(ctx)
                c = NcclCommunicator(ctx, alg, grid, bucket_mb=bucket_mb, timeout_s=60,
                                     communicator_factory=lambda _, r=rec: r,
                                     synchronize=rehearsal.synchronize)
                world = world or MPI.COMM_WORLD
                n = c.size
                x, y = map(int, grid.split("x"))
                groups_ok &= rec.created == Grid.from_shape(x, y, n).groups()
                ref = [sum(arrays_of(r, shapes)[i].astype(np.float64) for r in range(n))
                       for i in range(len(shapes))]
                for average in (False, True):
                    nds = [nn.NdArray.from_numpy_array(a) for a in arrays_of(c.rank, shapes)]
                    c.all_reduce(nds, average=average)
                    for i, (a, r) in enumerate(zip(nds, ref)):
                        want = r / n if average else r
                        if a.shape != want.shape or not np.allclose(a.data, want, atol=1e-5):
                            failures.append(f"{grid} {alg} bucket_mb={bucket_mb:g} "
                                            f"average={average} array {i}")
                            break
                    checked += 1
                c.close()
    c = NcclCommunicator(ctx, "torus2d", args.grids.split(",")[0], timeout_s=60,
                         communicator_factory=rehearsal.MultiProcessDataParallelCommunicator)
    b = [nn.NdArray.from_numpy_array(np.full(4, c.rank, np.float32))]
    c.bcast(b, root=c.size - 1)
    bcast_ok = all(world.allgather(bool((b[0].data == c.size - 1).all())))
    host = np.array([c.rank + 0.5, 1.0], np.float64)       # numpy: over the host, as float64
    c.all_reduce([host], average=True)
    host_ok = all(world.allgather(host.tolist() == [(c.size - 1) / 2 + 0.5, 1.0]))
    failures = sorted(set(sum(world.allgather(failures), [])))
    groups_ok = all(world.allgather(groups_ok))
    if c.rank == 0:
        print("RESULT " + json.dumps({"checked": checked, "failures": failures,
                                      "groups_ok": groups_ok, "bcast_ok": bcast_ok,
                                      "host_ok": host_ok,
                                      "thread_level": MPI.Query_thread()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
