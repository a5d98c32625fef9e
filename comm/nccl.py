"""The NCCL backend: the same plan on nnabla-ext-cuda's communicator, on nnabla NdArrays.

NOT VERIFIED ON A GPU. This project has no GPU; the adapter is written against nnabla
1.39.0 and nnabla-ext-cuda 1.39.0's source and kept thin: grid, groups and buckets come from
comm/plan.py, which the MPI backend runs and the tests check. It is rehearsed on CPU ranks
against rehearsal/'s double of nnabla's communicator, which enforces the real one's rules
(README "GPU"); nnabla's NCCL communicator itself has not run here.

Facts it relies on (multi_process_data_parallel_communicator.cu, ".cu" below):
  - ``new_group((name, ranks))`` is called on every rank for every group, in the same order;
    the NCCL rank inside a group is the position in ``ranks``, so ``reduce(dst=0)`` and
    ``bcast(src=0)`` address the group's first rank (the row leader).
  - Every collective casts its inputs to the communicator's type: made from a half context
    (``type_config=half``), the communicator sums in float16. Gradients may travel so;
    nothing else may. Metric totals, the resume step check, BN statistics and the weight
    broadcast (``full_precision=True``, and ``bcast``) and any numpy array (NCCL takes
    NdArrays only) go over the host instead: mpi4py on numpy views, summed in at least
    float32, each result rounded once into its array's own dtype.
  - Out-of-place calls copy every input into a packed buffer and back (copy_inside_device,
    copy_back_inside_device); ``reduce_scatter`` packs its list and ``all_gather`` even
    copies its destinations first. So each bucket is one flat NdArray: ``all_reduce`` and
    ``bcast`` run in place, ``reduce_scatter`` gets ``[flat]`` and ``all_gather`` one
    destination of X*c elements. ``reduce`` stays out of place: in place, 1.39 drops its
    ``group`` and reduces over the world, which hangs (``bcast``/``all_reduce`` keep it).
  - ``division=True`` is ncclAvg over the group: torus2d divides by X in the row and by Y in
    the column, so the bucket ends as the mean over X*Y ranks.
  - nnabla starts MPI at MPI_THREAD_SERIALIZED unless it already runs (Mpi::Mpi()); the
    watchdog calls MPI_Abort from its own thread, which needs MPI_THREAD_MULTIPLE, so MPI is
    started here first (``start_mpi``).
  - Collectives are enqueued on CUDA streams and return before the data has moved. Every
    device all_reduce ends by reading one element of its last bucket on the host, under the
    watchdog: a stuck NCCL kernel fires it there, not in some later unwatched host read.
    Counter seconds are host time.
  - There is no point-to-point API, so the ``ring`` algorithm is MPI-only; ``native`` is
    NCCL's own all-reduce (rings/trees); 16-bit traffic comes from ``type_config=half``.
"""
import os
import sys
import time

import numpy as np

from . import plan
from .counters import Counters
from .plan import CommError
from .watchdog import Watchdog

NCCL_ALGORITHMS = ("torus2d", "hierarchical", "native")
CALLBACK_PACK_SIZE = 2 << 20      # elements per packed buffer, as nnabla-examples use


def start_mpi():
    """Start MPI at MPI_THREAD_MULTIPLE through mpi4py, before nnabla's communicator would
    start it at MPI_THREAD_SERIALIZED (Mpi::Mpi() in the .cu only calls MPI_Init_thread when
    MPI is not initialised yet). At SERIALIZED, the watchdog thread's MPI_Abort while the
    main thread waits inside MPI is erroneous. mpi4py finalises MPI at exit (Py_AtExit,
    after nnabla's communicators are gone); nnabla's ~Mpi() then finds it finalised."""
    import mpi4py
    if "mpi4py.MPI" not in sys.modules:
        mpi4py.rc.thread_level = "multiple"
        mpi4py.rc.finalize = True
    from mpi4py import MPI
    if not MPI.Is_initialized():
        MPI.Init_thread(MPI.THREAD_MULTIPLE)
    level = MPI.Query_thread()
    if level < MPI.THREAD_MULTIPLE:
        raise CommError(f"MPI runs at thread level {level}, below MPI_THREAD_MULTIPLE "
                        f"({MPI.THREAD_MULTIPLE}), so the watchdog could not abort a stuck job "
                        "from its thread: something started MPI before comm did (mpi4py.rc."
                        "thread_level?); let comm start it, or set comm.timeout_s=0")
    return MPI


class NcclCommunicator:
    backend = "nccl"

    def __init__(self, ctx, algorithm="torus2d", grid=None, bucket_mb=4.0, wire_dtype=None,
                 timeout_s=300.0, column_phase="auto", nnabla_comm=None,
                 communicator_factory=None):
        if algorithm not in NCCL_ALGORITHMS:
            raise CommError(f"comm.algorithm={algorithm!r} needs point-to-point calls that "
                            f"nnabla's communicator lacks; on nccl use one of "
                            f"{', '.join(NCCL_ALGORITHMS)}")
        if column_phase == "ring":
            # nnabla's communicator has no point-to-point calls; NCCL's all_reduce picks its
            # own ring or tree per call, which is what the column phase gets here
            raise CommError("comm.column_phase=ring is MPI-only (nnabla's communicator has no "
                            "point-to-point calls; NCCL picks ring or tree itself): use auto")
        if wire_dtype is not None:
            raise CommError("comm.wire_dtype is MPI-only; on nccl set type_config=half (nnabla "
                            "then picks its half-precision communicator)")
        if nnabla_comm is None:
            if ctx is None:
                raise CommError("backend nccl needs ctx=the nnabla extension context "
                                "(get_extension_context('cudnn', ...))")
            start_mpi()
            if communicator_factory is None:
                import nnabla.communicators as C
                communicator_factory = C.MultiProcessDataParallelCommunicator
            nnabla_comm = communicator_factory(ctx)
            nnabla_comm.init()
        self.nc = nnabla_comm
        self.algorithm = algorithm
        self.bucket_mb, self.timeout_s = bucket_mb, timeout_s
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
        self._host_comm = None
        self._seq = 0

    # --- public API -----------------------------------------------------------------------
    def all_reduce(self, arrays, average=False, full_precision=False):
        """Sum (or mean) over all ranks; results land in the same arrays. NdArrays travel on
        NCCL in the communicator's type (float16 with type_config=half), unless
        ``full_precision``; numpy arrays always go over the host (see the module docstring)."""
        if self.size == 1 or not arrays:
            return arrays
        on_host = [isinstance(a, np.ndarray) for a in arrays]
        if any(on_host) and not all(on_host):
            raise CommError("all_reduce got numpy arrays and NdArrays in one list: pass one "
                            "kind per call")
        if full_precision or all(on_host):
            return self._on_host("all_reduce", arrays, average=average)
        import nnabla.functions as F
        t_start = time.perf_counter()
        layout = plan.bucket_layout([a.size for a in arrays], _dtypes(arrays),
                                    self.bucket_bytes, self.multiple)
        self._seq += 1
        pieces = {}                      # array index -> [(offset, NdArray)]
        flat = None
        for k, bucket in enumerate(layout.buckets):
            packed = _pack(F, arrays, bucket)
            flat = getattr(self, "_" + self.algorithm)(packed, bucket, k, len(layout.buckets),
                                                       average)
            if flat is packed and _is_whole_array(bucket, arrays):
                continue         # the collective ran in place on the array itself
            for s in bucket.segments:
                piece = F.slice(flat, start=(s.bucket_offset,),
                                stop=(s.bucket_offset + s.length,), step=(1,))
                pieces.setdefault(s.index, []).append((s.offset, piece))
        for index, parts in pieces.items():
            parts = [p for _, p in sorted(parts, key=lambda op: op[0])]
            whole = parts[0] if len(parts) == 1 else F.concatenate(*parts, axis=0)
            arrays[index].copy_from(whole.view(arrays[index].shape))
        if flat is not None:      # wait for the queued NCCL work, under the watchdog
            self._call("sync", "world", list(range(self.size)), len(layout.buckets) - 1,
                       len(layout.buckets), lambda: F.slice(flat, (0,), (1,), (1,)).data)
        self.counters_.ops += 1
        self.counters_.buckets += len(layout.buckets)
        self.counters_.seconds += time.perf_counter() - t_start
        return arrays

    def bcast(self, arrays, root=0):
        """Every rank gets ``root``'s values, exactly (over the host: the initial weights
        must not pass through a half-precision communicator)."""
        if self.size > 1 and arrays:
            self._on_host("bcast", arrays, root=root)
        return arrays

    def backward_callback(self, arrays, pack_size=CALLBACK_PACK_SIZE):
        """nnabla's all_reduce_callback over the world: the mean of ``arrays`` (gradients),
        computed during backward. Pass it to training/device.py's ``backward``. NOT measured
        on a GPU: for every gradient it first runs a blocking host MPI_Allreduce over the
        world (the .cu's on_finish_function_backward), which can cost more than it hides."""
        self.counters_.ops += 1
        self.counters_.add("callback", 0.0)
        return self.nc.all_reduce_callback(list(arrays), pack_size, division=True)

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
        if self._host_comm is not None:
            self._host_comm.close()

    # --- algorithms on one bucket (a flat NdArray); each returns the reduced bucket ---------
    def _torus2d(self, flat, bucket, k, nb, division):
        import nnabla as nn
        x, y = self.grid
        c = bucket.padded // x
        if x > 1:            # one flat send buffer: the communicator packs a list by copying
            shard = nn.NdArray((c,))
            self._call("rs_row", self.row_name, self.row_ranks, k, nb,
                       lambda: self.nc.reduce_scatter([flat], shard, division=division,
                                                      group=self.row_name),
                       "reduce_scatter", bucket.padded * bucket.wire.itemsize, x)
        else:
            shard = flat
        if y > 1:
            self._call("ar_col", self.col_name, self.col_ranks, k, nb,
                       lambda: self.nc.all_reduce([shard], division=division, inplace=True,
                                                  group=self.col_name),
                       "all_reduce", c * bucket.wire.itemsize, y)
        if x == 1:
            return shard
        gathered = nn.NdArray((x * c,))     # one destination: each would be copied first
        self._call("ag_row", self.row_name, self.row_ranks, k, nb,
                   lambda: self.nc.all_gather(shard, [gathered], group=self.row_name),
                   "all_gather", bucket.padded * bucket.wire.itemsize, x)
        return gathered

    def _hierarchical(self, flat, bucket, k, nb, division):
        x, y = self.grid
        nbytes = bucket.padded * bucket.wire.itemsize
        if x > 1:    # dst/src 0 = the group's first rank = the row leader; out of place: see top
            self._call("reduce_row", self.row_name, self.row_ranks, k, nb,
                       lambda: self.nc.reduce([flat], dst=0, division=division, inplace=False,
                                              group=self.row_name), "reduce", nbytes, x)
        if y > 1 and self.rank == self.row_ranks[0]:
            self._call("ar_leaders", self.col_name, self.col_ranks, k, nb,
                       lambda: self.nc.all_reduce([flat], division=division, inplace=True,
                                                  group=self.col_name), "all_reduce", nbytes, y)
        if x > 1:
            self._call("bcast_row", self.row_name, self.row_ranks, k, nb,
                       lambda: self.nc.bcast([flat], src=0, inplace=True,
                                             group=self.row_name), "bcast", nbytes, x)
        return flat

    def _native(self, flat, bucket, k, nb, division):
        self._call("ar_world", "world", list(range(self.size)), k, nb,
                   lambda: self.nc.all_reduce([flat], division=division, inplace=True),
                   "all_reduce", bucket.padded * bucket.wire.itemsize, self.size)
        return flat

    # --- plumbing ----------------------------------------------------------------------------
    def _on_host(self, what, arrays, **kwargs):
        """all_reduce (full precision) or bcast over MPI on the host, in place: numpy arrays
        as they are, NdArrays through their numpy views (a device-to-host copy on a GPU; the
        next device use copies the result back)."""
        views = [a if isinstance(a, np.ndarray) else a.data
                 for a in arrays if _check_initialised(a, arrays)]
        t = time.perf_counter()
        if what == "bcast":
            self._host().bcast(views, **kwargs)
        else:
            self._host().all_reduce(views, full_precision=True, **kwargs)
        self.counters_.add("host", time.perf_counter() - t, calls=0)
        return arrays

    def _host(self):
        """comm's MPI backend over the same ranks (made on first use: every rank reaches the
        first full-precision call at the same point, as with any collective)."""
        if self._host_comm is None:
            start_mpi()
            from .mpi import MpiCommunicator
            self._host_comm = MpiCommunicator("native", f"{self.size}x1", self.bucket_mb,
                                              None, self.timeout_s)
        return self._host_comm

    def _call(self, phase, group, ranks, k, nb, fn, kind=None, nbytes=0, group_size=1):
        self.watchdog.arm(phase, group, ranks, self._seq, k, nb)
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        self.watchdog.disarm()
        steps = plan.collective_steps(kind, group_size) if kind else 0
        nbytes = plan.collective_bytes(kind, nbytes, group_size) if kind else 0
        self.counters_.add(phase, dt, nbytes=nbytes, steps=steps)


def _check_initialised(a, arrays):
    """An NdArray that never held data has no dtype (nnabla: "Array is not initialized.")."""
    if isinstance(a, np.ndarray):
        return True
    try:
        a.dtype
    except RuntimeError:
        raise CommError(f"array {arrays.index(a)} (an NdArray of shape {a.shape}) was never "
                        "initialised, so it has no dtype (nnabla: 'Array is not initialized.'): "
                        "give it values first (nn.NdArray.from_numpy_array(...), .data = ..., "
                        "or .cast(dtype))") from None
    return True


def _dtypes(arrays):
    import nnabla as nn
    for i, a in enumerate(arrays):
        if not isinstance(a, nn.NdArray):
            raise CommError(f"array {i} is a {type(a).__name__}: the NCCL backend reduces "
                            "nnabla NdArrays on the device (a list of numpy arrays goes over "
                            "the host)")
        _check_initialised(a, arrays)
    return [a.dtype for a in arrays]


def _pack(F, arrays, bucket):
    """One flat NdArray holding the bucket's segments, zero-padded to ``bucket.padded``."""
    import nnabla as nn
    parts = []
    for s in bucket.segments:
        flat = arrays[s.index].view((arrays[s.index].size,))   # shares memory: no copy
        if s.offset or s.length != arrays[s.index].size:
            flat = F.slice(flat, start=(s.offset,), stop=(s.offset + s.length,), step=(1,))
        parts.append(flat)
    if bucket.padded > bucket.length:
        pad = nn.NdArray((bucket.padded - bucket.length,))
        pad.zero()
        parts.append(pad)
    return parts[0] if len(parts) == 1 else F.concatenate(*parts, axis=0)


def _is_whole_array(bucket, arrays):
    """The bucket is one whole array, so _pack handed over (a view of) the array itself."""
    (s, *more) = bucket.segments
    return not more and s.offset == 0 and bucket.padded == s.length == arrays[s.index].size
