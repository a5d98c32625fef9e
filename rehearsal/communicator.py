"""A double of ``nnabla.communicators.MultiProcessDataParallelCommunicator`` on CPU ranks.

nnabla's communicator exists only in nnabla-ext-cuda (NCCL on GPUs); nnabla's CPU build
registers none. This module implements the same Python interface over mpi4py on CPU
NdArrays, and enforces every rule of the real one that this project can trip over, each
marked ``Mirrors:`` with the function of nnabla 1.39.0 / nnabla-ext-cuda 1.39.0 it copies:

  - python/src/nnabla/communicator.pyx (the Python layer, "pyx" below);
  - src/nbla/cuda/communicator/multi_process_data_parallel_communicator.cu
    (MultiProcessDataParallelCommunicatorNccl<T>, ".cu" below);
  - src/nbla/cuda/init.cpp.tmpl (which T a context gets) and nnabla's synced_array.cpp.

What it cannot mirror: CUDA kernels, NCCL's transport and its reduction order (here MPI's),
and any timing. nnabla's own watchdog (NNABLA_MPI_WATCH_DOG_ENABLE) is refused by comm/nccl.py
with one line. Where the real one hangs or reads out of bounds, the double stops with one
line instead.

Streams, as far as the host can tell them apart: the real collectives only enqueue work
and return (.cu:738-758, :813-825, :908-918); their results exist once the device has run
it. Here a collective computes at once but its results stay hidden until ``synchronize()``
(this module's stand-in for ``nnabla_ext.cuda.synchronize``): until then its output arrays
hold NaN, so a host read between enqueue and sync reads NaN here (on a GPU it would stall
the host until the device is done, the cost this rule exists to catch). Later collectives
see earlier results (one device, program order). Stricter than the real one: nnabla
functions run between enqueue and sync also see NaN (on a GPU they are stream-ordered).

Stated hardware, through the environment (read by ``init()``):
  - ``REHEARSE_VISIBLE_GPUS=N``: N GPUs per host; a rank whose local_rank has none fails as
    cuda_set_device does (.cu:424, common.cpp:20-26);
  - ``REHEARSE_FAIL_INIT_RANKS=1,3``: ncclCommInitRank fails on those world ranks
    (.cu:426-429); the others wait in it (here: a world barrier), as on a GPU.

    from rehearsal.communicator import MultiProcessDataParallelCommunicator
    nc = MultiProcessDataParallelCommunicator(get_extension_context("cpu", type_config="half"))
    nc.init()                      # a half context: every collective runs in float16
"""
import atexit
import os
import socket
import sys
import threading
import time
import weakref
import zlib

import numpy as np

import mpi4py

# Mirrors Mpi::Mpi() (.cu): MPI starts in init(), not when the library is imported, so a
# program that never initialised MPI itself gets nnabla's MPI_THREAD_SERIALIZED. mpi4py
# then finalises at exit (Py_AtExit), as nnabla's ~Mpi() would.
if "mpi4py.MPI" not in sys.modules:      # (a no-op if mpi4py.MPI was imported before)
    mpi4py.rc.initialize = False
    mpi4py.rc.finalize = True
from mpi4py import MPI  # noqa: E402

import nnabla as nn  # noqa: E402

# Mirrors init.cpp.tmpl: MultiProcessDataParallelCommunicatorNccl<float> registered for
# "cuda:float", <Half> for "cuda:half". Here nnabla's CPU contexts stand in for cudnn's.
REGISTERED = {"cpu:float": np.dtype(np.float32), "cpu:half": np.dtype(np.float16)}
GROUP_CHECK_TIMEOUT_S = 120.0
_LIVE = weakref.WeakSet()         # communicators whose enqueued results synchronize() shows
SYNCS = {"count": 0}


def synchronize(device_id=None):
    """Stands in for nnabla_ext.cuda.synchronize (cudaDeviceSynchronize): the results of every
    enqueued collective become visible to the host."""
    SYNCS["count"] += 1
    for c in list(_LIVE):
        c._publish()


def _env_ranks(name):
    text = os.environ.get(name, "").strip()
    return {int(r) for r in text.split(",") if r.strip()} if text else set()


class DoubleError(RuntimeError):
    """The real communicator would fail, hang or read out of bounds here (one line)."""


def MultiProcessDataParallelCommunicator(ctx):  # noqa: N802 (nnabla's name)
    """Mirrors pyx MultiProcessDataParallelCommunicator -> the registry's query(): the
    first backend of ``ctx.backend`` with a registered implementation decides the type
    every collective runs in (function_registry.hpp ``query``)."""
    return _query(ctx, Communicator)


def _query(ctx, cls):
    for backend in ctx.backend:
        if backend in REGISTERED:
            return cls(ctx, REGISTERED[backend])
    raise RuntimeError(f"value error in query: Any of [{', '.join(ctx.backend)}] could not be "
                       f"found in [{', '.join(REGISTERED)}]")


def _sum_float16(inbuf, inoutbuf, datatype):
    a = np.frombuffer(inbuf, np.float16)
    b = np.frombuffer(inoutbuf, np.float16)
    np.add(a, b, out=b)      # rounded to float16 at every addition, as NCCL's half sum


def _host_hash(name):
    """Mirrors get_host_name + get_host_hash (.cu): the name up to its first '.', DJB2."""
    h = 5381
    for c in name.split(".", 1)[0].encode():
        h = (h * 33 + c) & 0xFFFFFFFFFFFFFFFF
    return h


def _as_list(data, what):
    """Mirrors pyx all_reduce/reduce/bcast: ``type(data) == list`` or one array; every item
    goes through ``<NdArray> x``, an UNCHECKED Cython cast: anything else (a numpy array, a
    Variable, a tuple as ``data``) is undefined behaviour in the real one, a crash at best."""
    items = data if type(data) == list else [data]   # noqa: E721 (exactly as the pyx)
    for i, x in enumerate(items):
        _check_ndarray(x, f"{what}: item {i}" if type(data) == list else what)  # noqa: E721
    return items


def _check_ndarray(x, what):
    if not isinstance(x, nn.NdArray):
        raise DoubleError(
            f"{what} is a {type(x).__module__}.{type(x).__name__}, not an nnabla NdArray: "
            "nnabla's communicator.pyx casts it unchecked (<NdArray> x), undefined behaviour "
            "on a GPU (a crash at best); pass NdArrays (variable.data, variable.grad, "
            "nn.NdArray.from_numpy_array)")


class _Group:
    def __init__(self, ranks, comm):
        self.ranks = list(ranks)
        self.comm = comm              # MPI communicator of the members (COMM_NULL otherwise)


class Communicator:
    """Mirrors MultiProcessDataParallelCommunicatorNccl<T>; ``self.dtype`` is T."""

    def __init__(self, ctx, dtype):
        self.ctx = nn.Context(list(ctx.backend), ctx.array_class, ctx.device_id)
        self.dtype = np.dtype(dtype)
        self.name = f"MultiProcessDataParallelCommunicatorNccl<{self.dtype.name}> (double)"
        self._initialized = False
        self._groups = {}
        self._created = 0
        self._inside_mpi = 0          # main thread's MPI calls in flight (for abort())
        self._main_thread = threading.main_thread()
        self.host_checks = 0          # blocking host MPI_Allreduce per array (mpi_check_all)
        self.calls = 0                # collective calls made on this communicator
        self._pending = []            # (arrays, buffer): results not yet visible to the host
        _LIVE.add(self)

    # --- setup ---------------------------------------------------------------------------
    def init(self):
        """Mirrors init() (.cu): MPI_Init_thread(MPI_THREAD_SERIALIZED) only if MPI is not
        initialised yet (Mpi::Mpi()); rank/size of MPI_COMM_WORLD; local_rank = the number of
        lower ranks whose host-name hash equals this rank's; the "world" group."""
        if not MPI.Is_initialized():
            provided = MPI.Init_thread(MPI.THREAD_SERIALIZED)
            if provided != MPI.THREAD_SERIALIZED:
                raise RuntimeError(f"MPI_Init_thread failed since provided ({provided}) is not "
                                   f"equal to requiredThreadLevelSupport "
                                   f"({MPI.THREAD_SERIALIZED})")
            atexit.register(lambda: MPI.Is_finalized() or MPI.Finalize())
        world = MPI.COMM_WORLD
        self._rank, self._size = world.rank, world.size
        hashes = self._mpi(world.allgather, _host_hash(socket.gethostname()))
        self._mpi(world.Barrier)
        self._local_rank = sum(1 for h in hashes[:self._rank] if h == hashes[self._rank])
        self.ctx.device_id = str(self._local_rank)     # as ctx_.device_id in init()
        self._mpi(world.bcast, 0, root=0)               # the NCCL id (.cu:414-420)
        self._mpi(world.Barrier)
        visible = os.environ.get("REHEARSE_VISIBLE_GPUS")
        if visible is not None and self._local_rank >= int(visible):   # cuda_set_device
            raise RuntimeError('(cudaSetDevice(device)) failed with "invalid device ordinal" '
                               f"(cudaErrorInvalidDevice). [double: local_rank "
                               f"{self._local_rank}, REHEARSE_VISIBLE_GPUS={visible}]")
        if self._rank in _env_ranks("REHEARSE_FAIL_INIT_RANKS"):
            raise RuntimeError("ncclCommInitRank failed. [double: REHEARSE_FAIL_INIT_RANKS]")
        self._mpi(world.Barrier)     # ncclCommInitRank: collective, no timeout
        self._groups["world"] = _Group(range(self._size), world)
        self._fp16_sum = MPI.Op.Create(_sum_float16, commute=True)
        self._initialized = True

    @property
    def rank(self):
        return self._require_init()._rank

    @property
    def size(self):
        return self._require_init()._size

    @property
    def local_rank(self):
        return self._require_init()._local_rank

    def new_group(self, name_ranks):
        """Mirrors new_group (.cu): the name must be new, ranks within [0, size); the MPI
        group is MPI_Group_incl(world, ranks) -- so the rank inside the group is the position
        in ``ranks`` -- and MPI_Comm_create_group, collective over the members only; members
        then agree on an NCCL id (here: a barrier).

        Checked here, as nnabla's docs require but the real one cannot: every rank creates
        every group, in the same order (a mismatch builds wrong NCCL groups or hangs)."""
        self._require_init()
        name, ranks = name_ranks[0], [int(r) for r in name_ranks[1]]
        if name in self._groups:
            raise RuntimeError(f"value error in new_group: group_name = {name} already exists")
        if not ranks or max(ranks) >= self._size:
            raise RuntimeError("value error in new_group: Max value of the specified ranks "
                               "should be less than the size () of the communicator.")
        if min(ranks) < 0:
            raise RuntimeError("value error in new_group: Min value of the specified ranks is "
                               "greater than or equal to 0.")
        if len(set(ranks)) != len(ranks):
            raise DoubleError(f"new_group(({name!r}, {ranks})): a rank appears twice; "
                              "MPI_Group_incl would fail")
        self._check_same_group_everywhere(name, ranks)
        world = MPI.COMM_WORLD
        group = world.Get_group().Incl(ranks)
        sub = self._mpi(world.Create_group, group, 0)
        group.Free()
        self._groups[name] = _Group(ranks, sub)
        self._created += 1
        if sub != MPI.COMM_NULL:
            self._mpi(sub.Barrier)
        return name

    def _check_same_group_everywhere(self, name, ranks):
        key = zlib.crc32(repr((self._created, name, ranks)).encode())
        mine = np.array([key], np.int64)
        every = np.empty(self._size, np.int64)
        request = MPI.COMM_WORLD.Iallgather(mine, every)
        self._wait(request, GROUP_CHECK_TIMEOUT_S,
                   f"new_group(({name!r}, {ranks})) (group #{self._created + 1} of this rank): "
                   f"not every rank created a group within {GROUP_CHECK_TIMEOUT_S:g} s")
        if len(set(every.tolist())) != 1:
            differ = [r for r in range(self._size) if every[r] != key]
            raise DoubleError(
                f"rank {self._rank}: group #{self._created + 1} is ({name!r}, {ranks}) here but "
                f"another group on ranks {differ}: every rank must call new_group for every "
                "group, in the same order (nnabla's docs)")

    def list_groups(self):
        return {k: list(g.ranks) for k, g in self._groups.items()}

    def find_group(self, group):
        g = self._groups.get(group)
        return list(g.ranks) if g else []

    # --- collectives -----------------------------------------------------------------------
    def all_reduce(self, data, division=False, inplace=False, group="world"):
        """Mirrors all_reduce(list) (.cu): arrays that still hold their zero() on every member
        are skipped (get_modified_arrays / mpi_check_all); the others are cast to T in the
        communicator's context (copy_inside_device, or per array in place), so their dtype
        becomes T; ncclAllReduce sums, or ncclAvg (division) averages over the group."""
        g = self._member(group)
        arrays = _as_list(data, "all_reduce data")
        self._check_same_arrays(g, arrays, "all_reduce")
        flags = np.array([a.zeroing for a in arrays], np.bool_)
        all_zeroing = np.empty_like(flags)
        self.host_checks += len(arrays)       # one MPI_Allreduce per array (.cu:335-346, :743)
        self._mpi(g.comm.Allreduce, flags, all_zeroing, op=MPI.LAND)
        modified = [a for a, skip in zip(arrays, all_zeroing) if not skip]
        if modified:
            buf = self._pack(modified)
            self._allreduce_buffer(g, buf, division)
            self._unpack(modified, buf)

    def reduce(self, data, dst, division=False, inplace=False, group="world"):
        """Mirrors reduce(list) (.cu): ncclReduce to the group's rank ``dst`` (its position in
        the group's ranks); other members keep their (cast) values. In place, 1.39 calls the
        per-array reduce WITHOUT the group, so it reduces over "world" -- with a group that
        hangs (only the members call it): the double stops instead."""
        g = self._member(group)
        arrays = _as_list(data, "reduce data")
        if inplace and group != "world":
            raise DoubleError(
                f"reduce(inplace=True, group={group!r}): nnabla-ext-cuda 1.39's in-place reduce "
                "drops the group and reduces over 'world' (multi_process_data_parallel_"
                "communicator.cu, reduce()), which hangs when only the group calls it; pass "
                "inplace=False")
        self._check_root(g, dst, "reduce dst")
        self._check_same_arrays(g, arrays, "reduce")
        buf = self._pack(arrays)
        send = buf
        if division:                  # ncclAvg pre-multiplies what each member sends
            send = buf.copy()
            self._divide(send, len(g.ranks))
        send_, op = self._mpi_view(send)
        if g.comm.rank == dst:
            self._mpi(g.comm.Reduce, send_ if division else MPI.IN_PLACE,
                      self._mpi_view(buf)[0], op=op, root=dst)
        else:                         # NCCL leaves a non-root's buffer as it was
            self._mpi(g.comm.Reduce, send_, None, op=op, root=dst)
        self._unpack(arrays, buf)

    def bcast(self, data, src, inplace=False, group="world"):
        """Mirrors bcast(list) (.cu): ncclBcast from the group's rank ``src``, in T (every
        array is cast to T first, also on the root). In place it keeps the group."""
        g = self._member(group)
        arrays = _as_list(data, "bcast data")
        self._check_root(g, src, "bcast src")
        self._check_same_arrays(g, arrays, "bcast")
        buf = self._pack(arrays)
        self._mpi(g.comm.Bcast, buf.view(np.uint8), root=src)
        self._unpack(arrays, buf)

    def reduce_scatter(self, ndarray_list, ndarray, division=False, group="world"):
        """Mirrors reduce_scatter (.cu): the list is concatenated in T (copy_inside_device)
        and ncclReduceScatter gives member i elements [i*n, (i+1)*n) of the sum, n =
        ndarray.size; ``ndarray`` is cast to T (created if it never held data). NCCL reads
        group_size * n elements: a shorter list is read out of bounds (stopped here)."""
        g = self._member(group)
        items = list(ndarray_list)              # the pyx iterates it: any sequence
        for i, x in enumerate(items):
            _check_ndarray(x, f"reduce_scatter ndarray_list item {i}")
        _check_ndarray(ndarray, "reduce_scatter ndarray")
        n, total = ndarray.size, sum(a.size for a in items)
        if total < len(g.ranks) * n:
            raise DoubleError(f"reduce_scatter: the list holds {total} elements but NCCL reads "
                              f"{len(g.ranks)} x {n} (group {group!r} x ndarray.size): out of "
                              "bounds on a GPU")
        self._check_same_arrays(g, items + [ndarray], "reduce_scatter")
        send = self._pack(items)[:len(g.ranks) * n]
        recv = np.empty(n, self.dtype)
        if division:
            self._divide(send, len(g.ranks))
        send_, op = self._mpi_view(send)
        self._mpi(g.comm.Reduce_scatter_block, send_, self._mpi_view(recv)[0], op=op)
        self._unpack([ndarray], recv)

    def all_gather(self, ndarray, ndarray_list, group="world"):
        """Mirrors all_gather (.cu): the destinations are first copied into one buffer in T
        (copy_inside_device: never-initialised ones are created as zeros), ncclAllGather puts
        member i's ``ndarray`` at [i*n, (i+1)*n), and the buffer is copied back into the
        destinations (cast to T). NCCL writes group_size * n elements: fewer destination
        elements would be written out of bounds (stopped here)."""
        g = self._member(group)
        _check_ndarray(ndarray, "all_gather ndarray")
        items = list(ndarray_list)
        for i, x in enumerate(items):
            _check_ndarray(x, f"all_gather ndarray_list item {i}")
        n, total = ndarray.size, sum(a.size for a in items)
        if total < len(g.ranks) * n:
            raise DoubleError(f"all_gather: the destinations hold {total} elements but NCCL "
                              f"writes {len(g.ranks)} x {n}: out of bounds on a GPU")
        self._check_same_arrays(g, [ndarray] + items, "all_gather")
        recv = self._pack(items)
        send = np.ascontiguousarray(ndarray.get_data("r", dtype=self.dtype).reshape(-1))
        self._mpi(g.comm.Allgather, send.view(np.uint8),
                  recv[:len(g.ranks) * n].view(np.uint8))
        self._unpack(items, recv)

    def all_reduce_callback(self, data, pack_size, division=False, group="world", scale_grad=1,
                            keep_dtype=False):
        """Mirrors all_reduce_callback (.cu): see AllReduceCallback."""
        self._member(group)
        arrays = _as_list(data, "all_reduce_callback data")
        return AllReduceCallback(self, arrays, int(pack_size), division, group,
                                 float(scale_grad), keep_dtype)

    def barrier(self):
        """Mirrors barrier(): MPI_Barrier(MPI_COMM_WORLD)."""
        self._require_init()
        self._mpi(MPI.COMM_WORLD.Barrier)

    def abort(self):
        """Mirrors abort(): MPI_Abort(MPI_COMM_WORLD, -1). Called from a second thread while
        the main thread is inside MPI, that is erroneous below MPI_THREAD_MULTIPLE (the MPI
        standard; nnabla asks for SERIALIZED): the double refuses with one line."""
        if (threading.current_thread() is not self._main_thread and self._inside_mpi
                and MPI.Query_thread() < MPI.THREAD_MULTIPLE):
            raise DoubleError(
                "abort() from a second thread while the main thread is inside MPI, at MPI "
                f"thread level {MPI.Query_thread()} (< MPI_THREAD_MULTIPLE = "
                f"{MPI.THREAD_MULTIPLE}): erroneous in MPI; initialise MPI at "
                "MPI_THREAD_MULTIPLE (mpi4py) before the communicator's init()")
        MPI.COMM_WORLD.Abort(-1)

    # --- rules shared by the collectives ---------------------------------------------------
    def _require_init(self):
        if not self._initialized:
            raise DoubleError("the communicator is used before init(): call init() first")
        return self

    def _member(self, group):
        """Mirrors find_self (nnabla's multi_process_data_parallel_communicator.cpp): the
        calling rank must be in the group (an unknown group has no ranks)."""
        self._require_init()
        self._publish()               # one device: a collective sees the ones before it
        self.calls += 1
        g = self._groups.get(group)
        if g is None or self._rank not in g.ranks:
            raise RuntimeError(f"value error: self (rank={self._rank}) is not included in "
                               f"{group}.")
        return g

    def _check_root(self, g, root, what):
        if not 0 <= int(root) < len(g.ranks):
            raise DoubleError(f"{what}={root} is outside the group's ranks 0..{len(g.ranks) - 1} "
                              "(group-relative: the position in its ranks list)")

    def _check_same_arrays(self, g, arrays, what):
        """Members calling one collective with different array lists would mismatch NCCL's
        counts (wrong results or a hang on a GPU): checked here."""
        key = np.array([zlib.crc32(repr([a.size for a in arrays]).encode())], np.int64)
        every = np.empty(len(g.ranks), np.int64)
        self._mpi(g.comm.Allgather, key, every)
        if len(set(every.tolist())) != 1:
            raise DoubleError(f"{what}: the members of the group pass different array sizes "
                              f"(rank {self._rank}: {[a.size for a in arrays][:8]}...); every "
                              "member must pass the same shapes in the same order")

    def _pack(self, arrays):
        """Mirrors copy_inside_device (.cu): each array is cast to T in the communicator's
        context (``NdArray.cast``: its dtype becomes T; one that never held data is created
        filled with zeros, as nnabla's SyncedArray does), then copied into one buffer."""
        out = np.empty(sum(a.size for a in arrays), self.dtype)
        offset = 0
        for a in arrays:
            a.cast(self.dtype, self.ctx)
            out[offset:offset + a.size] = a.get_data("r", dtype=self.dtype).reshape(-1)
            offset += a.size
        return out

    def _unpack(self, arrays, buf):
        """Mirrors copy_back_inside_device (.cu): the buffer back into the arrays, in T, once
        the device has run it: until ``synchronize()`` the host sees NaN there."""
        for a in arrays:
            a.cast(self.dtype, self.ctx)
            a.get_data("rw", dtype=self.dtype)[...] = np.nan
        self._pending.append((list(arrays), np.array(buf, copy=True)))

    def _publish(self):
        pending, self._pending = self._pending, []
        for arrays, buf in pending:
            self._write(arrays, buf)

    def _write(self, arrays, buf):
        offset = 0
        for a in arrays:
            a.cast(self.dtype, self.ctx)
            a.get_data("rw", dtype=self.dtype)[...] = buf[offset:offset + a.size].reshape(a.shape)
            offset += a.size

    def _mpi_view(self, buf):
        if self.dtype == np.float16:
            return buf.view(np.uint16), self._fp16_sum
        return buf, MPI.SUM

    def _divide(self, buf, n):
        """ncclAvg on floating types is a pre-multiplied sum: x * T(1/n), rounded in T."""
        np.multiply(buf, self.dtype.type(1.0 / n), out=buf)

    def _allreduce_buffer(self, g, buf, division):
        if division:
            self._divide(buf, len(g.ranks))
        data, op = self._mpi_view(buf)
        self._mpi(g.comm.Allreduce, MPI.IN_PLACE, data, op=op)

    def _mpi(self, fn, *args, **kwargs):
        """Every MPI call of the main thread goes through here (abort() needs to know)."""
        self._inside_mpi += 1
        try:
            return fn(*args, **kwargs)
        finally:
            self._inside_mpi -= 1

    def _wait(self, request, timeout_s, message):
        deadline = time.monotonic() + timeout_s
        self._inside_mpi += 1
        try:
            while not request.Test():
                if time.monotonic() > deadline:
                    raise DoubleError(f"rank {self._rank}: {message}")
                time.sleep(0.001)
        finally:
            self._inside_mpi -= 1


class NoOpCommunicator(Communicator):
    """The double with collectives that move no data and check nothing across ranks: each
    call only checks its own arguments and is counted. For measuring what the caller's host
    does per all-reduce (tools/bench_comm.py --host-overhead), not for results."""

    def all_reduce(self, data, division=False, inplace=False, group="world"):
        self._member(group)
        _as_list(data, "all_reduce data")

    def reduce(self, data, dst, division=False, inplace=False, group="world"):
        self._check_root(self._member(group), dst, "reduce dst")
        _as_list(data, "reduce data")

    def bcast(self, data, src, inplace=False, group="world"):
        self._check_root(self._member(group), src, "bcast src")
        _as_list(data, "bcast data")

    def reduce_scatter(self, ndarray_list, ndarray, division=False, group="world"):
        self._member(group)
        _check_ndarray(ndarray, "reduce_scatter ndarray")

    def all_gather(self, ndarray, ndarray_list, group="world"):
        self._member(group)
        _check_ndarray(ndarray, "all_gather ndarray")


def NoOpMultiProcessDataParallelCommunicator(ctx):  # noqa: N802
    """As MultiProcessDataParallelCommunicator, with NoOpCommunicator's collectives."""
    return _query(ctx, NoOpCommunicator)


# comm/nccl.py finds the double's stand-in for nnabla_ext.cuda.synchronize on its factory
MultiProcessDataParallelCommunicator.synchronize = synchronize
NoOpMultiProcessDataParallelCommunicator.synchronize = synchronize


class AllReduceCallback:
    """Mirrors AllReduceCallback (.cu), driven by the two calls nnabla's graph makes:
    ``on_finish_function_backward(f)`` after each function's backward and
    ``on_finish_backward()`` at the end (computation_graph/variable.cpp).

    A C++ callback goes into ``Variable.backward(communicator_callbacks=...)``, whose checked
    cast rejects this Python object; training/device.py's ``backward`` calls the same two
    methods through ``function_post_hook`` instead.

    For every input of a finished function whose gradient was listed, a BLOCKING
    MPI_Allreduce over "world" first asks whether every rank still holds its zero()
    (mpi_check_all(..., "world"), whatever the group); the gradient is then cast to T (or
    kept, keep_dtype), scaled by scale_grad and packed into buffers of ``pack_size``
    elements; a full buffer is all-reduced over the group and unpacked into the gradients.
    """

    def __init__(self, parent, arrays, pack_size, division, group, scale_grad, keep_dtype):
        if pack_size <= 0:
            raise DoubleError(f"all_reduce_callback pack_size={pack_size} must be positive")
        self.parent, self.group = parent, group
        self.arrays = set(arrays)       # NdArray hashes/compares the underlying array
        self.pack_size, self.division = pack_size, division
        self.scale_grad, self.keep_dtype = scale_grad, keep_dtype
        self._buffer = np.empty(pack_size, parent.dtype)
        self._used = 0
        self._pieces = []               # (grad NdArray, its dtype, offset, length) in buffer
        self._seen = set()
        self._finished = False
        self._error = None

    def on_finish_function_backward(self, f):
        """(An error here is raised by on_finish_backward: an exception inside nnabla's
        function_post_hook surfaces as an unreadable SystemError.)"""
        if self._error is not None:
            return
        if self._finished:
            self._error = DoubleError(
                "an all_reduce_callback serves one backward: on_finish_backward leaves its "
                "workspace filled (.cu); make a new callback for every backward, as "
                "nnabla-examples do")
            return
        p = self.parent
        for variable in f.inputs:
            grad = variable.grad
            if grad not in self.arrays:
                continue
            if grad in self._seen:
                self._error = DoubleError(
                    f"a listed gradient (shape {grad.shape}) finished twice in one backward: "
                    "all_reduce_callback does not support shared parameters (nnabla's docs); "
                    "reduce after backward instead")
                return
            self._seen.add(grad)
            flag = np.array([grad.zeroing], np.bool_)
            every = np.empty_like(flag)
            p.host_checks += 1
            p._mpi(MPI.COMM_WORLD.Allreduce, flag, every, op=MPI.LAND)
            if every[0]:
                continue                     # not updated on any rank: skipped
            dt = grad.dtype if self.keep_dtype else p.dtype
            grad.cast(dt, p.ctx)
            src = grad.get_data("r", dtype=dt).reshape(-1)
            offset = 0
            while offset < src.size:
                length = min(src.size - offset, self.pack_size - self._used)
                part = src[offset:offset + length]
                if self.scale_grad != 1.0:    # kernel_copy_and_scale: (T)(x * scale), in float
                    part = part.astype(np.float32) * np.float32(self.scale_grad)
                self._buffer[self._used:self._used + length] = part
                self._pieces.append((grad, dt, offset, self._used, length))
                self._used += length
                offset += length
                if self._used >= self.pack_size:
                    self._flush()

    def on_finish_backward(self):
        if self._error is not None:
            raise self._error
        if self._used:
            self._flush()
        self._finished = True

    def _flush(self):
        p = self.parent
        g = p._member(self.group)
        buf = self._buffer[:self._used]
        p._allreduce_buffer(g, buf, self.division)
        for grad, dt, offset, at, length in self._pieces:   # unpack: (dst dtype)(T value)
            grad.get_data("rw", dtype=dt).reshape(-1)[offset:offset + length] = \
                buf[at:at + length]
        self._pieces, self._used = [], 0
