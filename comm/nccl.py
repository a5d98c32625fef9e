"""The NCCL backend: the same plan on nnabla-ext-cuda's communicator, on nnabla NdArrays.

NOT VERIFIED ON A GPU. This project has no GPU; the adapter is written against nnabla
1.39.0 and nnabla-ext-cuda 1.39.0's source and kept thin: grid, groups and buckets come from
comm/plan.py, which the MPI backend runs and the tests check. It is rehearsed on CPU ranks
against rehearsal/'s double of nnabla's communicator, which enforces the real one's rules
(docs/gpu.md); nnabla's NCCL communicator itself has not run here.

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
  - List calls pack in C++: out of place, ``all_reduce``/``reduce``/``bcast`` copy the list
    into one buffer and back (copy_inside_device, copy_back_inside_device, .cu:516-561),
    ``reduce_scatter`` packs its list and ``all_gather`` packs its destinations and copies
    back (.cu:815, :909-917). So a bucket is a list of whole arrays (plan.bucket_layout
    whole_arrays=True) plus a zero pad to a multiple of X: 1-3 Python calls per bucket, none
    per array. ``reduce`` stays out of place: in place, 1.39 drops its ``group`` and
    reduces over the world, which hangs. Out-of-place ``all_reduce`` asks the host once per
    array whether it is still zeroed (get_modified_arrays, .cu:335-346).
  - A half job's float32 arrays (cuDNN keeps BN's scale/shift gradients in float) travel on a
    second communicator made from the float context, not cast to float16 by the half one.
  - ``division=True`` is ncclAvg over the group: torus2d divides by X in the row and by Y in
    the column, so the bucket ends as the mean over X*Y ranks.
  - nnabla starts MPI at MPI_THREAD_SERIALIZED unless it already runs (Mpi::Mpi()); the
    watchdog calls MPI_Abort from its own thread, which needs MPI_THREAD_MULTIPLE, so MPI is
    started here first (``start_mpi``).
  - Collectives are enqueued on CUDA streams and return before the data has moved.
    ``all_reduce(wait=False)`` only enqueues; ``wait()`` synchronises the device under the
    watchdog (a stuck NCCL kernel fires it there); ``read()`` is the counted host read the
    trainer makes once per update. Counter seconds are host time.
  - A rank whose ``init()`` fails (no GPU for its local_rank, .cu:424; ncclCommInitRank,
    .cu:426-429) prints one line and aborts the job: the others would wait forever.
  - There is no point-to-point API, so the ``ring`` algorithm is MPI-only; ``native`` is
    NCCL's own all-reduce (rings/trees); 16-bit traffic comes from ``type_config=half``.
"""
import os
import sys
import time
from types import SimpleNamespace

import numpy as np

from . import plan
from .bucketed import BucketedCommunicator
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


class NcclCommunicator(BucketedCommunicator):
    backend = "nccl"

    def __init__(self, ctx, algorithm="torus2d", grid=None, bucket_mb=4.0, wire_dtype=None,
                 timeout_s=300.0, column_phase="auto", nnabla_comm=None,
                 communicator_factory=None, synchronize=None):
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
        refuse_nnabla_watchdog()
        self.factory = communicator_factory
        if nnabla_comm is None:
            if ctx is None:
                raise CommError("backend nccl needs ctx=the nnabla extension context "
                                "(get_extension_context('cudnn', ...))")
            start_mpi()
            if self.factory is None:
                import nnabla.communicators as C
                self.factory = C.MultiProcessDataParallelCommunicator
            nnabla_comm = _init_or_end_job(self.factory(ctx))
        self.nc = nnabla_comm
        self.algorithm = algorithm
        self.bucket_mb, self.timeout_s = bucket_mb, timeout_s
        self.bucket_bytes = int(bucket_mb * 2 ** 20)
        self.rank, self.size, self.local_rank = self.nc.rank, self.nc.size, self.nc.local_rank
        self.layout_grid, self.local_size = self._grid(grid)
        self.grid = self.layout_grid.shape
        # a half job's float32 gradients (cuDNN's BN scale/shift, DRV_BN_T) travel on a float
        # communicator: the half one would cast them to float16 still times the loss scale
        self.full_nc = None
        if ctx is not None and _is_half(ctx) and self.factory is not None:
            self.full_nc = _init_or_end_job(self.factory(_float_context(ctx)))
        for nc in filter(None, (self.nc, self.full_nc)):
            for name, ranks in self.layout_grid.groups():   # every rank, every group, same order
                nc.new_group((name, ranks))
        i, j = self.layout_grid.position(self.rank)
        self.row_name, self.row_ranks = f"row{i}", list(self.layout_grid.rows[i])
        self.col_name, self.col_ranks = f"col{j}", list(self.layout_grid.cols[j])
        self.multiple = plan.chunk_multiple(algorithm, self.layout_grid)
        self.phases = plan.phases(algorithm, self.layout_grid)
        self.watchdog = Watchdog(self.rank, timeout_s, lambda code: self.nc.abort())
        self.counters_ = Counters()
        # None: the host read after wait() is the synchronisation (a blocking cudaMemcpy,
        # cuda_array.cpp:182-206), under the watchdog too
        self._synchronize = synchronize or getattr(self.factory, "synchronize", None)
        self._host_comm = None
        self._plans = {}
        self._pending = 0
        self._seq = 0

    def _grid(self, spec):
        """(plan.Grid, ranks on this node). XxY: rows of consecutive ranks. auto: one row per
        node, the nodes found as the MPI backend finds them (MPI_COMM_TYPE_SHARED), whatever
        the mapping; refused if nnabla's local_rank (its GPU: the count of lower ranks on
        this host, .cu:391-411) is not this rank's place on its node, as where host names
        repeat across nodes."""
        shape = plan.parse_grid(spec)
        if shape is not None:    # mpirun exports the local size; nnabla reports none
            local_size = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", "0")) or None
            return plan.Grid.from_shape(*shape, self.size, spec=spec), local_size
        from mpi4py import MPI
        world = MPI.COMM_WORLD
        node = world.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        local_size, node_rank, node_id = node.size, node.rank, node.bcast(self.rank, root=0)
        node.Free()
        bad = [r for r, b in enumerate(world.allgather(node_rank != self.local_rank)) if b]
        if bad:
            raise CommError(f"nnabla's communicator numbers ranks {bad} differently from the "
                            "nodes MPI sees (host names repeat across nodes?), so they would "
                            "take the wrong GPU: give every node its own host name")
        return plan.Grid.from_nodes(world.allgather(node_id)), local_size

    # --- public API -----------------------------------------------------------------------
    def all_reduce(self, arrays, average=False, full_precision=False, wait=True):
        """Sum (or mean) over all ranks; results land in the same arrays. NdArrays travel on
        NCCL in the communicator's type (float16 with type_config=half; float32 arrays of a
        half job on the float communicator), unless ``full_precision``; numpy arrays always
        go over the host (see the module docstring). ``wait=False`` only enqueues: call
        ``wait()`` before anything reads the arrays (the host, or another device op)."""
        if self.size == 1 or not arrays:
            return arrays
        on_host = [isinstance(a, np.ndarray) for a in arrays]
        if any(on_host) and not all(on_host):
            raise CommError("all_reduce got numpy arrays and NdArrays in one list: pass one "
                            "kind per call")
        if full_precision or all(on_host):
            return self._on_host("all_reduce", arrays, average=average)
        t_start = time.perf_counter()
        plan_ = self._plan(arrays)
        self._seq += 1
        nb = len(plan_.layout.buckets)
        for k, bucket in enumerate(plan_.layout.buckets):
            members = [arrays[s.index] for s in bucket.segments]
            operands = SimpleNamespace(nc=self._nc_for(bucket.wire), members=members,
                                       padded=members + plan_.pads[k], shard=plan_.shards[k],
                                       division=average)
            self._run_phases(operands, bucket, k, nb)
        self._pending = nb
        self.counters_.ops += 1
        self.counters_.buckets += nb
        self.counters_.seconds += time.perf_counter() - t_start
        if wait:
            self.wait()
        return arrays

    def wait(self):
        """Wait, under the watchdog, until the enqueued collectives have finished (the one
        device synchronisation of an update: a stuck NCCL kernel fires the watchdog here).
        Without a ``synchronize`` function, ``read`` is where the host waits."""
        if self._pending:
            nb, self._pending = self._pending, 0
            if self._synchronize is not None:
                self._call("sync", "world", list(range(self.size)), nb - 1, nb,
                           self._synchronize)

    def read(self, ndarray):
        """The host's copy of a device array, after ``wait``, under the watchdog: the
        trainer's one host read per update goes through here and is counted."""
        self.wait()
        out = []
        self._call("read", "world", list(range(self.size)), 0, 1,
                   lambda: out.append(np.array(ndarray.data, copy=True)))
        self.counters_.host_reads += 1
        return out[0]

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

    def close(self):
        self.watchdog.close()
        if self._host_comm is not None:
            self._host_comm.close()

    # --- the collectives plan.phases asks for, on one bucket: a list of whole arrays, which
    # nnabla packs in C++ (copy_inside_device / copy_back_inside_device, .cu:516-561): a
    # constant number of calls per bucket, none per array.
    def _collective(self, phase, ops):
        group = {} if phase.group == "world" else {"group": self._group(phase.group)[0]}
        nc, c = ops.nc, phase.collective
        if c == "reduce_scatter":     # ops.padded: the zero pad makes it divide into X chunks
            nc.reduce_scatter(ops.padded, ops.shard, division=ops.division, **group)
        elif c == "all_gather":
            nc.all_gather(ops.shard, ops.padded, **group)
        elif c == "all_reduce" and phase.operand == "shard":
            nc.all_reduce([ops.shard], division=ops.division, inplace=True, **group)
        elif c == "all_reduce":
            nc.all_reduce(ops.members, division=ops.division, inplace=False, **group)
        elif c == "reduce":   # dst/src 0 = the group's first rank = the row leader; out of place
            nc.reduce(ops.members, dst=0, division=ops.division, inplace=False, **group)
        elif c == "bcast":
            nc.bcast(ops.members, src=0, inplace=False, **group)

    # --- plumbing ----------------------------------------------------------------------------
    def _on_host(self, what, arrays, **kwargs):
        """all_reduce (full precision) or bcast over MPI on the host, in place: numpy arrays
        as they are, NdArrays through their numpy views (a device-to-host copy on a GPU; the
        next device use copies the result back)."""
        self.wait()
        views = [a if isinstance(a, np.ndarray) else a.data
                 for a in arrays if _check_initialised(a, arrays)]
        self.counters_.host_reads += sum(not isinstance(a, np.ndarray) for a in arrays)
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

    def _plan(self, arrays):
        """The buckets (whole arrays, cut between them), each bucket's zero pad and shard, for
        this list of sizes and dtypes: made once, then reused every step."""
        dtypes = _dtypes(arrays)
        key = (tuple(a.size for a in arrays), tuple(dtypes))
        if key not in self._plans:
            import nnabla as nn
            layout = plan.bucket_layout(key[0], dtypes, self.bucket_bytes, self.multiple,
                                        whole_arrays=True)
            pads, shards = [], []
            for b in layout.buckets:
                pad = []
                if b.padded > b.length:
                    pad = [nn.NdArray.from_numpy_array(np.zeros(b.padded - b.length, b.wire))]
                pads.append(pad)
                shards.append(nn.NdArray((b.padded // self.grid[0],)))
            self._plans[key] = SimpleNamespace(layout=layout, pads=pads, shards=shards)
        return self._plans[key]

    def _nc_for(self, wire):
        """The communicator a bucket of ``wire`` travels on (see __init__: full_nc)."""
        if self.full_nc is not None and wire != np.float16:
            return self.full_nc
        return self.nc


def refuse_nnabla_watchdog():
    """nnabla's own watchdog, switched on, throws in its thread when a call takes longer than
    50 s on rank 0 and 250 s on the others (watch_dog.cpp:40-51, .cu:715-720), and
    std::terminate then ends that rank without MPI_Abort: the others hang, and a slow but
    healthy step (rank 0 writing a checkpoint) can trigger it. comm's watchdog
    (comm.timeout_s) ends a stuck job instead."""
    value = os.environ.get("NNABLA_MPI_WATCH_DOG_ENABLE")
    if value and not value.startswith("0"):
        raise CommError(f"NNABLA_MPI_WATCH_DOG_ENABLE={value} makes nnabla end one rank without "
                        "MPI_Abort after 50 s (rank 0) / 250 s in a collective, leaving the "
                        "others hanging: unset it (comm.timeout_s ends a stuck job instead)")


def _init_or_end_job(nnabla_comm):
    """nnabla_comm.init(), or one line and MPI_Abort: a rank whose init() fails (no GPU for its
    local_rank: cuda_set_device, .cu:424; ncclCommInitRank, .cu:426-429) would otherwise
    leave the others waiting in ncclCommInitRank, which has no timeout."""
    try:
        nnabla_comm.init()
    except RuntimeError as e:
        from mpi4py import MPI
        first = (str(e).strip().splitlines() or ["?"])[-1][:300]
        print(f"error: rank {MPI.COMM_WORLD.rank}: nnabla's communicator init() failed "
              f"({first}); if it names cudaSetDevice, this node has fewer visible GPUs than "
              "ranks: launch at most one rank per GPU (mpirun -np / --map-by ppr:N:node) and "
              "check CUDA_VISIBLE_DEVICES", file=sys.stderr, flush=True)
        MPI.COMM_WORLD.Abort(1)
    return nnabla_comm


def _is_half(ctx):
    return any(str(b).endswith(":half") for b in ctx.backend)


def _float_context(ctx):
    import nnabla as nn
    return nn.Context([str(b).replace(":half", ":float") for b in ctx.backend],
                      ctx.array_class, ctx.device_id)


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
