"""The NCCL backend: the same plan on nnabla-ext-cuda's communicator, on nnabla NdArrays.

NOT VERIFIED ON A GPU. This project has no GPU; the adapter is written against the
documented nnabla API (nnabla.communicators, sony/nnabla-ext-cuda
multi_process_data_parallel_communicator.cu) and kept thin: grid, groups and buckets come
from comm/plan.py, which the MPI backend runs and the tests check. Its own logic (group
creation order, slicing buckets into chunks, reassembling arrays) is tested on the CPU
against an mpi4py implementation of the nnabla communicator interface
(tests/mpi_workers/nccl_adapter.py); nnabla's NCCL communicator itself is not.

Facts it relies on (checked in nnabla-ext-cuda's source):
  - ``new_group((name, ranks))`` must be called on every rank for every group, in the same
    order; the NCCL rank inside a group is the position in ``ranks``, so ``reduce(dst=0)``
    and ``bcast(src=0)`` address the group's first rank (the row leader).
  - ``reduce``/``bcast`` with ``inplace=True`` on a list drop the ``group`` argument in
    1.39's CUDA code, so this adapter always passes ``inplace=False``.
  - Collectives are enqueued on CUDA streams and return before the data has moved: the
    watchdog here only sees host-side stalls; nnabla's own (``NNABLA_MPI_WATCH_DOG_ENABLE=1``)
    covers its all_reduce. Counter seconds are host time.
  - There is no point-to-point API, so the ``ring`` algorithm is MPI-only; ``native`` is
    NCCL's own all-reduce (rings/trees); 16-bit traffic comes from ``type_config=half``.
"""
import os
import sys
import time

from . import plan
from .counters import Counters
from .plan import CommError
from .watchdog import Watchdog

NCCL_ALGORITHMS = ("torus2d", "hierarchical", "native")


class NcclCommunicator:
    backend = "nccl"

    def __init__(self, ctx, algorithm="torus2d", grid=None, bucket_mb=4.0, wire_dtype=None,
                 timeout_s=300.0, nnabla_comm=None, communicator_factory=None):
        if algorithm not in NCCL_ALGORITHMS:
            raise CommError(f"comm.algorithm={algorithm!r} needs point-to-point calls that "
                            f"nnabla's communicator lacks; on nccl use one of "
                            f"{', '.join(NCCL_ALGORITHMS)}")
        if wire_dtype is not None:
            raise CommError("comm.wire_dtype is MPI-only; on nccl set type_config=half (nnabla "
                            "then picks its half-precision communicator)")
        if nnabla_comm is None:
            if ctx is None:
                raise CommError("backend nccl needs ctx=the nnabla extension context "
                                "(get_extension_context('cudnn', ...))")
            if communicator_factory is None:
                import nnabla.communicators as C
                communicator_factory = C.MultiProcessDataParallelCommunicator
            nnabla_comm = communicator_factory(ctx)
            nnabla_comm.init()
        self.nc = nnabla_comm
        self.algorithm = algorithm
        self.bucket_bytes = int(bucket_mb * 2 ** 20)
        self.rank, self.size, self.local_rank = self.nc.rank, self.nc.size, self.nc.local_rank
        # nnabla reports no local size; Open MPI's mpirun exports it to every rank
        self.local_size = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", "0")) or None
        shape = plan.parse_grid(grid)
        if shape is None:
            if not self.local_size or self.size % self.local_size:
                raise CommError("comm.grid=auto on nccl needs OMPI_COMM_WORLD_LOCAL_SIZE (set "
                                "by Open MPI's mpirun) dividing the world size; pass "
                                "comm.grid=XxY")
            shape = (self.local_size, self.size // self.local_size)
        self.layout_grid = plan.Grid.from_shape(*shape, self.size, spec=grid)
        self.grid = self.layout_grid.shape
        for name, ranks in self.layout_grid.groups():   # every rank, every group, same order
            self.nc.new_group((name, ranks))
        i, j = self.layout_grid.position(self.rank)
        self.row_name, self.row_ranks = f"row{i}", list(self.layout_grid.rows[i])
        self.col_name, self.col_ranks = f"col{j}", list(self.layout_grid.cols[j])
        self.multiple = plan.chunk_multiple(algorithm, self.layout_grid)
        self.watchdog = Watchdog(self.rank, timeout_s, lambda code: self.nc.abort())
        self.counters_ = Counters()
        self._seq = 0

    # --- public API -----------------------------------------------------------------------
    def all_reduce(self, arrays, average=False):
        """Sum (or mean) of NdArrays over all ranks; results land in the same NdArrays."""
        if self.size == 1 or not arrays:
            return arrays
        import nnabla.functions as F
        t_start = time.perf_counter()
        layout = plan.bucket_layout([a.size for a in arrays], [a.dtype for a in arrays],
                                    self.bucket_bytes, self.multiple)
        self._seq += 1
        pieces = {}                      # array index -> [(offset, NdArray)]
        for k, bucket in enumerate(layout.buckets):
            flat = _pack(F, arrays, bucket)
            if average:
                flat = F.mul_scalar(flat, 1.0 / self.size)
            flat = getattr(self, "_" + self.algorithm)(F, flat, bucket, k, len(layout.buckets))
            for s in bucket.segments:
                piece = F.slice(flat, start=(s.bucket_offset,),
                                stop=(s.bucket_offset + s.length,), step=(1,))
                pieces.setdefault(s.index, []).append((s.offset, piece))
        for index, parts in pieces.items():
            parts = [p for _, p in sorted(parts, key=lambda op: op[0])]
            whole = parts[0] if len(parts) == 1 else F.concatenate(*parts, axis=0)
            arrays[index].copy_from(F.reshape(whole, arrays[index].shape, inplace=False))
        self.counters_.ops += 1
        self.counters_.buckets += len(layout.buckets)
        self.counters_.seconds += time.perf_counter() - t_start
        return arrays

    def bcast(self, arrays, root=0):
        if self.size > 1 and arrays:
            self._seq += 1
            self._call("bcast", "world", list(range(self.size)), 0, 1,
                       lambda: self.nc.bcast(list(arrays), src=root, inplace=False))
        return arrays

    def barrier(self):
        self._seq += 1
        self._call("barrier", "world", list(range(self.size)), 0, 1, self.nc.barrier)

    def abort(self, message):
        print(message, file=sys.stderr, flush=True)
        self.nc.abort()
        os._exit(1)

    def counters(self):
        return self.counters_.snapshot()

    def close(self):
        self.watchdog.close()

    # --- algorithms on one bucket (a flat NdArray); each returns the reduced bucket ---------
    def _torus2d(self, F, flat, bucket, k, nb):
        import nnabla as nn
        x, y = self.grid
        c = bucket.padded // x
        if x > 1:
            chunks = [F.slice(flat, start=(i * c,), stop=((i + 1) * c,), step=(1,))
                      for i in range(x)]
            shard = nn.NdArray((c,))
            self._call("rs_row", self.row_name, self.row_ranks, k, nb,
                       lambda: self.nc.reduce_scatter(chunks, shard, division=False,
                                                      group=self.row_name),
                       "reduce_scatter", bucket.padded * bucket.wire.itemsize, x)
        else:
            shard = flat
        if y > 1:
            self._call("ar_col", self.col_name, self.col_ranks, k, nb,
                       lambda: self.nc.all_reduce([shard], division=False, inplace=False,
                                                  group=self.col_name),
                       "all_reduce", c * bucket.wire.itemsize, y)
        if x == 1:
            return shard
        gathered = [nn.NdArray((c,)) for _ in range(x)]
        self._call("ag_row", self.row_name, self.row_ranks, k, nb,
                   lambda: self.nc.all_gather(shard, gathered, group=self.row_name),
                   "all_gather", bucket.padded * bucket.wire.itemsize, x)
        return F.concatenate(*gathered, axis=0)

    def _hierarchical(self, F, flat, bucket, k, nb):
        x, y = self.grid
        nbytes = bucket.padded * bucket.wire.itemsize
        if x > 1:    # dst/src 0 = the group's first rank = the row leader
            self._call("reduce_row", self.row_name, self.row_ranks, k, nb,
                       lambda: self.nc.reduce([flat], dst=0, division=False, inplace=False,
                                              group=self.row_name), "reduce", nbytes, x)
        if y > 1 and self.rank == self.row_ranks[0]:
            self._call("ar_leaders", self.col_name, self.col_ranks, k, nb,
                       lambda: self.nc.all_reduce([flat], division=False, inplace=False,
                                                  group=self.col_name), "all_reduce", nbytes, y)
        if x > 1:
            self._call("bcast_row", self.row_name, self.row_ranks, k, nb,
                       lambda: self.nc.bcast([flat], src=0, inplace=False,
                                             group=self.row_name), "bcast", nbytes, x)
        return flat

    def _native(self, F, flat, bucket, k, nb):
        self._call("ar_world", "world", list(range(self.size)), k, nb,
                   lambda: self.nc.all_reduce([flat], division=False, inplace=False),
                   "all_reduce", bucket.padded * bucket.wire.itemsize, self.size)
        return flat

    def _call(self, phase, group, ranks, k, nb, fn, kind=None, nbytes=0, group_size=1):
        self.watchdog.arm(phase, group, ranks, self._seq, k, nb)
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        self.watchdog.disarm()
        steps = plan.collective_steps(kind, group_size) if kind else 0
        nbytes = plan.collective_bytes(kind, nbytes, group_size) if kind else 0
        self.counters_.add(phase, dt, nbytes=nbytes, steps=steps)


def _pack(F, arrays, bucket):
    """One flat NdArray holding the bucket's segments, zero-padded to ``bucket.padded``."""
    import nnabla as nn
    parts = []
    for s in bucket.segments:
        flat = F.reshape(arrays[s.index], (-1,), inplace=False)
        if s.offset or s.length != arrays[s.index].size:
            flat = F.slice(flat, start=(s.offset,), stop=(s.offset + s.length,), step=(1,))
        parts.append(flat)
    if bucket.padded > bucket.length:
        pad = nn.NdArray((bucket.padded - bucket.length,))
        pad.zero()
        parts.append(pad)
    return parts[0] if len(parts) == 1 else F.concatenate(*parts, axis=0)
