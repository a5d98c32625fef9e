"""The MPI backend (mpi4py): executes the plan on numpy arrays, in place.

One all_reduce call: the arrays are cut into buckets (plan.bucket_layout); each bucket is
packed into one persistent flat buffer (cast to the wire dtype, pre-divided by N when
averaging), reduced by the algorithm's phases, and unpacked. Buckets run one after another
through a buffer of ``bucket_mb``: on a CPU that keeps the working set in cache, which measured
faster than one big buffer or a non-blocking pipeline (docs/comm.md).

float16 on the wire: MPI has no half-precision type or sum, so 16-bit buffers travel as
MPI_UINT16_T and are reduced by a user-defined commutative MPI op (numpy adds the float16
values; numpy rounds each pairwise sum to float16, as NCCL's half sum does).
"""
import os
import sys
import tempfile
import time
import zlib

import numpy as np
from mpi4py import MPI

from . import plan
from .bucketed import BucketedCommunicator
from .counters import Counters
from .job import abort_job
from .plan import CommError, describe
from .watchdog import FIELDS, ProgressBoard, Watchdog


def _sum_float16(inbuf, inoutbuf, datatype):
    a = np.frombuffer(inbuf, np.float16)
    b = np.frombuffer(inoutbuf, np.float16)
    np.add(a, b, out=b)


SUM_FLOAT16 = MPI.Op.Create(_sum_float16, commute=True)


def _mpi(buf):
    """(buffer as MPI sees it, the sum op for it)."""
    if buf.dtype == np.float16:
        return buf.view(np.uint16), SUM_FLOAT16
    return buf, MPI.SUM


class MpiCommunicator(BucketedCommunicator):
    backend = "mpi"

    def __init__(self, algorithm="torus2d", grid=None, bucket_mb=4.0, wire_dtype=None,
                 timeout_s=300.0, column_phase="auto", world=None):
        self.algorithm = algorithm
        self.bucket_bytes = int(bucket_mb * 2 ** 20)
        self.wire_dtype = wire_dtype
        parent = world or MPI.COMM_WORLD
        shape = plan.parse_grid(grid)
        if shape is not None:       # a mismatch fails on every rank before any communication
            plan.Grid.from_shape(*shape, parent.size, spec=grid)
        self.world = parent.Dup()                        # our traffic never meets the user's
        self.rank, self.size = self.world.rank, self.world.size
        node = self.world.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank, self.local_size = node.rank, node.size
        if shape is None:   # auto: one row per node (node id = the node's lowest world rank)
            node_id = node.bcast(self.rank, root=0)
            self.layout_grid = plan.Grid.from_nodes(self.world.allgather(node_id))
        else:
            self.layout_grid = plan.Grid.from_shape(*shape, self.size, spec=grid)
        self.grid = self.layout_grid.shape
        self.phases = plan.phases(algorithm, self.layout_grid)
        i, j = self.layout_grid.position(self.rank)
        self.row = self.world.Split(color=i, key=j)
        self.col = self.world.Split(color=j, key=i)
        self.column_ring = self._column_is_ring(column_phase)
        # the column ring cuts each row shard into Y chunks: buckets divide into X * Y
        self.multiple = (self.grid[0] * self.grid[1] if self.column_ring
                         else plan.chunk_multiple(algorithm, self.layout_grid))
        self.row_name, self.row_ranks = f"row{i}", list(self.layout_grid.row_of(self.rank))
        self.col_name, self.col_ranks = f"col{j}", list(self.layout_grid.col_of(self.rank))
        self.host = MPI.Get_processor_name()
        board = self._progress_board(node)
        node.Free()
        self.watchdog = Watchdog(self.rank, timeout_s, self._abort_job, board, host=self.host)
        self.counters_ = Counters()
        self._layouts = {}      # signature -> Layout (checked across ranks on first use)
        self._buffers = {}      # wire dtype -> (bucket buffer, chunk buffer)
        self._ring_recvs = {}   # wire dtype -> the column ring's receive chunk
        self._seq = 0

    # --- setup helpers ------------------------------------------------------------------------
    def _progress_board(self, node):
        """Node-shared records for the watchdog's diagnosis: a file in /dev/shm mapped by every
        rank of the node and unlinked at once (nothing is left behind, even after a crash).
        Plain shared memory rather than an MPI window: Open MPI 5's osc/ucx component prints
        errors on machines without UCX devices. A private board if anything fails."""
        path = None
        if node.rank == 0:
            try:
                folder = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
                fd, path = tempfile.mkstemp(prefix="comm-board-", dir=folder)
                os.ftruncate(fd, node.size * FIELDS * 8)
                os.close(fd)
            except OSError:
                path = None
        path = node.bcast(path, root=0)
        records = None
        if path is not None:
            try:
                records = np.memmap(path, np.int64, "r+", shape=(node.size, FIELDS))
                records = records.view(np.ndarray)     # plain ndarray: cheaper item writes
            except OSError:
                records = None
        node.Barrier()
        if node.rank == 0 and path is not None:
            os.unlink(path)
        if records is None:
            return ProgressBoard.local(self.rank)
        slots = {r: s for s, r in enumerate(node.allgather(self.rank))}
        return ProgressBoard(records, slots, self.rank)

    def _column_is_ring(self, column_phase):
        """torus2d's column phase: a ring of Sendrecv where a column spans nodes, else (and for
        "allreduce") Open MPI's MPI_Allreduce. Across emulated nodes with two rails the ring
        made torus2d 1.47x faster than MPI_Allreduce in the column (299 against 438 ms on
        ResNet-50's list; han/tuned are not a bandwidth-optimal ring there); inside one node
        MPI_Allreduce stays faster
        (docs/comm.md). The same answer on every rank: the column's node count is agreed."""
        if self.algorithm != "torus2d" or self.grid[1] == 1 or column_phase == "allreduce":
            return False
        if column_phase == "ring":
            return True
        on_my_node = self.col.Split_type(MPI.COMM_TYPE_SHARED, key=self.col.rank)
        spans_nodes = on_my_node.size < self.col.size
        on_my_node.Free()
        return bool(self.col.allreduce(int(spans_nodes), op=MPI.MAX))

    def _abort_job(self, code):
        abort_job(code)

    # --- public API ---------------------------------------------------------------------------
    def all_reduce(self, arrays, average=False, full_precision=False):
        """Sum (or mean) of ``arrays`` over all ranks, in place; returns ``arrays``.
        ``full_precision``: never narrowed to comm.wire_dtype, float16 summed as float32 (for
        metric totals, step numbers, BN statistics); each result is rounded once."""
        if self.size == 1:
            _flat_views(arrays)          # the same input checks as with many ranks
            return arrays
        t_start = time.perf_counter()
        flats = _flat_views(arrays)
        layout = self._layout(flats, full_precision)
        self._seq += 1
        scale = 1.0 / self.size if average else None
        nb = len(layout.buckets)
        for k, bucket in enumerate(layout.buckets):
            buf, chunk = self._bucket_buffers(bucket)
            t = time.perf_counter()
            _pack(flats, bucket, buf, scale)
            self.counters_.add("pack", time.perf_counter() - t, calls=0)
            self._run_phases(self._operands(buf, chunk), bucket, k, nb)
            t = time.perf_counter()
            _unpack(flats, bucket, buf)
            self.counters_.add("unpack", time.perf_counter() - t, calls=0)
        self.counters_.ops += 1
        self.counters_.buckets += nb
        self.counters_.seconds += time.perf_counter() - t_start
        return arrays

    def bcast(self, arrays, root=0):
        """Every rank gets ``root``'s values, in place (any dtype; no wire narrowing)."""
        if self.size == 1:
            return arrays
        t_start = time.perf_counter()
        flats = _flat_views(arrays, floats_only=False)
        layout = plan.bucket_layout([f.size for f in flats], [f.dtype for f in flats],
                                    self.bucket_bytes, floats_only=False)
        self._seq += 1
        for k, bucket in enumerate(layout.buckets):
            buf = self._bucket_buffers(bucket)[0]
            if self.rank == root:
                _pack(flats, bucket, buf, None)
            self._call("bcast", "world", list(range(self.size)), k, len(layout.buckets),
                       lambda: self.world.Bcast(buf.view(np.uint8), root=root),
                       "bcast", buf.nbytes, self.size)
            if self.rank != root:
                _unpack(flats, bucket, buf)
        self.counters_.ops += 1
        self.counters_.seconds += time.perf_counter() - t_start
        return arrays

    def barrier(self):
        t_start = time.perf_counter()
        self._seq += 1
        self._call("barrier", "world", list(range(self.size)), 0, 1, self.world.Barrier)
        self.counters_.ops += 1
        self.counters_.seconds += time.perf_counter() - t_start

    def abort(self, message):
        """Print one line on this rank and end the whole job with a non-zero exit."""
        print(message, file=sys.stderr, flush=True)
        self._abort_job(1)
        os._exit(1)

    def close(self):
        self.watchdog.close()
        for c in (self.row, self.col, self.world):
            c.Free()

    # --- the collectives plan.phases asks for, on one bucket ----------------------------------
    def _operands(self, buf, chunk):
        """The bucket buffer, and the shard: torus2d's row shard lands in the chunk buffer
        (no copy, as in place); the ring's receive chunk also lives there."""
        x = self.grid[0]
        shard = chunk[:buf.size // x] if self.algorithm == "torus2d" and x > 1 else buf
        return buf, shard, chunk

    def _collective(self, phase, operands):
        buf, shard, chunk = operands
        comm = {"row": self.row, "col": self.col, "world": self.world}[phase.group]
        target = shard if phase.operand == "shard" else buf
        if phase.ring or (self.column_ring and phase.group == "col"):
            return self._ring_phase(comm, phase, target, chunk)
        data, op = _mpi(target)
        if phase.collective == "reduce_scatter":
            # Non-blocking + Wait: Open MPI 5's blocking Reduce_scatter_block (coll/tuned) was
            # slower than libnbc's here (docs/comm.md)
            comm.Ireduce_scatter_block(data, _mpi(shard)[0], op=op).Wait()
        elif phase.collective == "all_gather":
            comm.Allgather(_mpi(shard)[0], data)
        elif phase.collective == "all_reduce":
            comm.Allreduce(MPI.IN_PLACE, data, op=op)
        elif phase.collective == "reduce":        # to the row leader (group rank 0)
            send, recv = (MPI.IN_PLACE, data) if comm.rank == 0 else (data, None)
            comm.Reduce(send, recv, op=op, root=0)
        elif phase.collective == "bcast":
            comm.Bcast(data, root=0)

    def _ring_phase(self, comm, phase, target, chunk):
        """Rings of Sendrecv (Patarasuk & Yuan): the ``ring`` algorithm's two phases, and
        torus2d's column all-reduce where a column spans nodes (comm.column_phase)."""
        parts = np.split(target, comm.size)
        if phase.collective in ("reduce_scatter", "all_reduce"):
            recv = (chunk[:parts[0].size] if phase.ring
                    else self._ring_recv(target.dtype, parts[0].size))
            _ring_reduce_scatter(comm, parts, recv)
        if phase.collective in ("all_gather", "all_reduce"):
            _ring_all_gather(comm, parts)

    def _ring_recv(self, dtype, size):
        """The receive buffer of the column ring (one chunk), grown on demand."""
        have = self._ring_recvs.get(dtype)
        if have is None or have.size < size:
            have = self._ring_recvs[dtype] = np.zeros(size, dtype)
        return have[:size]

    # --- plumbing -------------------------------------------------------------------------------
    def _layout(self, flats, full_precision=False):
        sizes = tuple(f.size for f in flats)
        dtypes = tuple(f.dtype.str for f in flats)
        key = (sizes, dtypes, full_precision)
        layout = self._layouts.get(key)
        if layout is None:
            layout = plan.bucket_layout(sizes, dtypes, self.bucket_bytes, self.multiple,
                                        self.wire_dtype, full_precision=full_precision)
            self._check_same_everywhere(key, layout)
            if len(self._layouts) > 32:
                self._layouts.clear()
            self._layouts[key] = layout
        return layout

    def _check_same_everywhere(self, key, layout):
        """Different array lists on different ranks would mismatch the collectives: say so."""
        h = zlib.crc32(repr(key).encode())
        both = np.array([h, -h], np.int64)
        self._seq += 1
        self._call("check", "world", list(range(self.size)), 0, 1,
                   lambda: self.world.Allreduce(MPI.IN_PLACE, both, op=MPI.MAX))
        if both[0] != h or -both[1] != h:
            raise CommError(f"all_reduce got a different list of arrays on different ranks "
                            f"(rank {self.rank}: {len(key[0])} arrays, {layout.elements} "
                            "elements); every rank must pass the same shapes and dtypes in "
                            "the same order")

    def _bucket_buffers(self, bucket):
        """The persistent bucket buffer and chunk buffer of this wire dtype, grown on demand."""
        have = self._buffers.get(bucket.wire)
        if have is None or have[0].size < bucket.padded:
            n = max(bucket.padded, have[0].size if have else 0)
            parts = {"torus2d": self.grid[0], "ring": self.size}.get(self.algorithm)
            chunk_len = n // parts if parts else 1   # torus2d: the row shard; ring: a chunk
            have = (np.zeros(n, bucket.wire), np.zeros(chunk_len, bucket.wire))
            self._buffers[bucket.wire] = have
        return have[0][:bucket.padded], have[1]

    def __repr__(self):
        return (f"MpiCommunicator({self.algorithm}, grid {self.layout_grid}, rank {self.rank}/"
                f"{self.size}, row {describe(self.row_ranks)}, col {describe(self.col_ranks)})")


# --- rings of point-to-point steps (Patarasuk & Yuan) -----------------------------------------
def _ring_reduce_scatter(comm, parts, recv):
    """N-1 steps: afterwards rank r holds the sum of chunk (r+1) % N over the ring."""
    n, r = comm.size, comm.rank
    right, left = (r + 1) % n, (r - 1) % n
    for s in range(n - 1):
        dst = parts[(r - s - 1) % n]
        comm.Sendrecv(_mpi(parts[(r - s) % n])[0], right, recvbuf=_mpi(recv)[0], source=left)
        np.add(dst, recv, out=dst)


def _ring_all_gather(comm, parts):
    """N-1 steps: every rank passes on the summed chunk it received last."""
    n, r = comm.size, comm.rank
    right, left = (r + 1) % n, (r - 1) % n
    for s in range(n - 1):
        comm.Sendrecv(_mpi(parts[(r + 1 - s) % n])[0], right,
                      recvbuf=_mpi(parts[(r - s) % n])[0], source=left)


# --- packing ----------------------------------------------------------------------------------
def _flat_views(arrays, floats_only=True):
    """Writable flat views of the caller's arrays; a clear error for what cannot be one."""
    if isinstance(arrays, np.ndarray):
        raise CommError("all_reduce/bcast take a list of arrays; wrap a single array: [a]")
    flats = []
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise CommError(f"array {i} is a {type(a).__name__}, not a numpy array")
        if floats_only and a.dtype not in plan.FLOAT_DTYPES:
            raise CommError(f"array {i} has dtype {a.dtype}; all_reduce sums float16, float32 "
                            "or float64 arrays")
        if not a.flags.c_contiguous or not a.flags.writeable:
            raise CommError(f"array {i} (shape {a.shape}) is not a writable C-contiguous "
                            "array, so the result could not be written back in place; pass "
                            "np.ascontiguousarray(a) and copy the result back")
        flats.append(a.reshape(-1))
    return flats


def _pack(flats, bucket, buf, scale):
    for s in bucket.segments:
        src = flats[s.index][s.offset:s.offset + s.length]
        dst = buf[s.bucket_offset:s.bucket_offset + s.length]
        if scale is None:
            np.copyto(dst, src, casting="unsafe")
        else:
            np.multiply(src, scale, out=dst, casting="unsafe")
    if bucket.padded > bucket.length:
        buf[bucket.length:bucket.padded] = 0


def _unpack(flats, bucket, buf):
    for s in bucket.segments:
        np.copyto(flats[s.index][s.offset:s.offset + s.length],
                  buf[s.bucket_offset:s.bucket_offset + s.length], casting="unsafe")
