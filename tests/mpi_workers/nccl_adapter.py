"""MPI worker: comm/nccl.py's adapter on CPU NdArrays, over an mpi4py stand-in for nnabla's
NCCL communicator.

    mpirun -np 4 python tests/mpi_workers/nccl_adapter.py --grids 2x2,4x1,1x4

nnabla's communicator has no CPU implementation, so ``MpiNnablaComm`` below implements the
same Python interface (new_group, reduce_scatter, all_reduce, all_gather, reduce, bcast with
group-relative roots, as in nnabla-ext-cuda) with mpi4py. This checks the adapter's own
logic (group order, chunking, reassembly) on real ranks; it does not check NCCL.
Rank 0 prints ``RESULT {json}``.
"""
import argparse
import json
import sys

import nnabla as nn
import numpy as np
from mpi4py import MPI

from comm.nccl import NcclCommunicator
from comm.plan import Grid

WORLD = MPI.COMM_WORLD


class MpiNnablaComm:
    """nnabla.communicators' MultiProcessDataParallelCommunicator interface, on mpi4py."""

    def __init__(self):
        self.rank, self.size, self.local_rank = WORLD.rank, WORLD.size, WORLD.rank
        self.groups = {"world": (list(range(self.size)), WORLD)}
        self.created = []

    def new_group(self, name_ranks):
        name, ranks = name_ranks
        assert name not in self.groups, f"group_name = {name} already exists"
        # Split is collective over the world: a rank creating groups in another order
        # than the others would build wrong groups (and the results would be wrong).
        member = self.rank in ranks
        sub = WORLD.Split(0 if member else MPI.UNDEFINED,
                          ranks.index(self.rank) if member else 0)
        self.groups[name] = (list(ranks), sub)
        self.created.append((name, list(ranks)))
        return name

    def _comm(self, group):
        ranks, sub = self.groups[group]
        if self.rank not in ranks:
            raise RuntimeError(f"self (rank={self.rank}) is not included in {group}.")
        return sub

    def reduce_scatter(self, ndarray_list, ndarray, division=False, group="world"):
        sub = self._comm(group)
        send = np.concatenate([a.data.reshape(-1) for a in ndarray_list])
        out = np.empty(ndarray.size, send.dtype)
        sub.Reduce_scatter_block(send, out, op=MPI.SUM)
        ndarray.data[...] = out / sub.size if division else out

    def all_reduce(self, data, division=False, inplace=False, group="world"):
        sub = self._comm(group)
        for a in (data if isinstance(data, list) else [data]):
            buf = np.ascontiguousarray(a.data)
            sub.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            a.data[...] = buf / sub.size if division else buf

    def all_gather(self, ndarray, ndarray_list, group="world"):
        sub = self._comm(group)
        out = np.empty(ndarray.size * sub.size, ndarray.data.dtype)
        sub.Allgather(np.ascontiguousarray(ndarray.data), out)
        for i, a in enumerate(ndarray_list):
            a.data[...] = out[i * ndarray.size:(i + 1) * ndarray.size].reshape(a.shape)

    def reduce(self, data, dst, division=False, inplace=False, group="world"):
        sub = self._comm(group)
        for a in data:
            buf = np.ascontiguousarray(a.data)
            res = np.empty_like(buf) if sub.rank == dst else None
            sub.Reduce(buf, res, op=MPI.SUM, root=dst)
            if sub.rank == dst:
                a.data[...] = res / sub.size if division else res

    def bcast(self, data, src, inplace=False, group="world"):
        sub = self._comm(group)
        for a in data:
            buf = np.ascontiguousarray(a.data)
            sub.Bcast(buf, root=src)
            a.data[...] = buf

    def barrier(self):
        WORLD.Barrier()

    def abort(self):
        WORLD.Abort(1)


def arrays_of(rank, shapes):
    return [np.random.default_rng([i, rank]).standard_normal(s).astype(np.float32)
            for i, s in enumerate(shapes)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--grids", required=True)
    args = p.parse_args()
    n, failures, checked, groups_ok = WORLD.size, [], 0, True
    shapes = [(7,), (3, 5), (1,), (0,), (13, 1, 3), (1001,)]
    ref = [sum(arrays_of(r, shapes)[i].astype(np.float64) for r in range(n))
           for i in range(len(shapes))]
    for grid in args.grids.split(","):
        x, y = map(int, grid.split("x"))
        for alg in ("torus2d", "hierarchical", "native"):
            # 256-byte buckets: boundaries inside arrays (torus2d only, to keep the run short)
            for bucket_mb in (4.0, 256 / 2 ** 20) if alg == "torus2d" else (4.0,):
                fake = MpiNnablaComm()
                c = NcclCommunicator(None, alg, grid, bucket_mb=bucket_mb, timeout_s=60,
                                     nnabla_comm=fake)
                groups_ok &= fake.created == Grid.from_shape(x, y, n).groups()
                for average in (False, True):
                    nds = [nn.NdArray.from_numpy_array(a) for a in arrays_of(WORLD.rank, shapes)]
                    c.all_reduce(nds, average=average)
                    for i, (a, r) in enumerate(zip(nds, ref)):
                        want = r / n if average else r
                        if a.shape != want.shape or not np.allclose(a.data, want, atol=1e-5):
                            failures.append(f"{grid} {alg} bucket_mb={bucket_mb:g} "
                                            f"average={average} array {i}")
                            break
                    checked += 1
                c.close()
    c = NcclCommunicator(None, "torus2d", args.grids.split(",")[0], nnabla_comm=MpiNnablaComm())
    b = [nn.NdArray.from_numpy_array(np.full(4, WORLD.rank, np.float32))]
    c.bcast(b, root=n - 1)
    bcast_ok = all(WORLD.allgather(bool((b[0].data == n - 1).all())))
    failures = sorted(set(sum(WORLD.allgather(failures), [])))
    groups_ok = all(WORLD.allgather(groups_ok))
    if WORLD.rank == 0:
        print("RESULT " + json.dumps({"checked": checked, "failures": failures,
                                      "groups_ok": groups_ok, "bcast_ok": bcast_ok}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
