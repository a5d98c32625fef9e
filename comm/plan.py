"""What every rank must do, computed without any communication library.

The MPI and NCCL backends are thin executors of the objects here, so everything that can be
wrong without a network (grid parsing, who is in which row and column, the order groups are
created in, how arrays are fused into buckets, the closed-form step and byte counts) is
decided and unit-tested in one place.

Grid convention (Mikami et al. 2018): N = X * Y ranks in Y rows of X ranks. A row is normally
one node (its ranks share fast intra-node links); a column holds one rank of every row.
torus2d: reduce-scatter along each row, all-reduce along each column on the row's shard,
all-gather along each row.
"""
import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

ALGORITHMS = ("torus2d", "ring", "hierarchical", "native")
WIRE_DTYPES = (None, "float32", "float16")
COLUMN_PHASES = ("auto", "ring", "allreduce")   # torus2d's column phase on MPI (comm/mpi.py)
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
# Every phase any backend runs, with a fixed code so ranks can read each other's position.
PHASE_NAMES = ("pack", "unpack", "rs_row", "ar_col", "ag_row", "reduce_row", "ar_leaders",
               "bcast_row", "rs_ring", "ag_ring", "ar_world", "check", "bcast", "barrier",
               "sync", "read")


class CommError(ValueError):
    """A communicator problem; the message names it and how to fix it (one line)."""


# --- grid ----------------------------------------------------------------------------------
def parse_grid(spec):
    """None/"auto" -> None (one row per node); "XxY" or (X, Y) -> (X, Y)."""
    if spec is None or spec == "auto":
        return None
    if isinstance(spec, (tuple, list)) and len(spec) == 2:
        x, y = spec
    else:
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(spec))
        if not m:
            raise CommError(f"comm.grid={spec!r} is not 'auto' or 'XxY' (e.g. '4x2': rows of 4 "
                            "ranks, 2 rows)")
        x, y = m.groups()
    x, y = int(x), int(y)
    if x < 1 or y < 1:
        raise CommError(f"comm.grid={spec!r}: X and Y must be at least 1")
    return x, y


@dataclass(frozen=True)
class Grid:
    """Y rows of X world ranks each. ``rows[i][j]`` is the rank at row i, column j."""
    rows: Tuple[Tuple[int, ...], ...]

    @classmethod
    def from_shape(cls, x, y, world_size, spec=None):
        """Rows of consecutive ranks: with by-slot mapping (mpirun's default) a row is a node."""
        if x * y != world_size:
            shapes = ", ".join(f"{a}x{world_size // a}" for a in range(1, world_size + 1)
                               if world_size % a == 0)
            raise CommError(f"comm.grid={spec or f'{x}x{y}'} has {x * y} ranks but the job has "
                            f"{world_size}; use a grid whose X*Y is {world_size} ({shapes}) or "
                            "'auto'")
        return cls(tuple(tuple(range(r * x, (r + 1) * x)) for r in range(y)))

    @classmethod
    def from_nodes(cls, node_of_rank):
        """'auto': one row per node (node ids as gathered from every rank, in rank order)."""
        nodes = {}
        for rank, node in enumerate(node_of_rank):
            nodes.setdefault(node, []).append(rank)
        sizes = sorted({len(r) for r in nodes.values()})
        if len(sizes) > 1:
            counts = [len(r) for r in nodes.values()]
            raise CommError(f"comm.grid=auto needs the same number of ranks on every node, got "
                            f"{counts}; launch the same number per node or pass comm.grid=XxY")
        return cls(tuple(tuple(sorted(r)) for r in sorted(nodes.values())))

    @property
    def x(self):
        return len(self.rows[0])

    @property
    def y(self):
        return len(self.rows)

    @property
    def size(self):
        return self.x * self.y

    @property
    def shape(self):
        return self.x, self.y

    @property
    def cols(self):
        return tuple(tuple(row[j] for row in self.rows) for j in range(self.x))

    def position(self, rank):
        """(row index, column index) of a world rank."""
        for i, row in enumerate(self.rows):
            if rank in row:
                return i, row.index(rank)
        raise CommError(f"rank {rank} is not in the grid {self.x}x{self.y}")

    def row_of(self, rank):
        return self.rows[self.position(rank)[0]]

    def col_of(self, rank):
        return self.cols[self.position(rank)[1]]

    def groups(self):
        """Sub-groups as (name, ranks), in the order every rank must create them.

        NCCL (nnabla's ``new_group``) and MPI's group creation are collective over the parent:
        every rank calls them for every group, in the same order. Groups of one rank are left
        out; the phases that would use them are skipped.
        """
        out = []
        if self.x > 1:
            out += [(f"row{i}", list(r)) for i, r in enumerate(self.rows)]
        if self.y > 1:
            out += [(f"col{j}", list(c)) for j, c in enumerate(self.cols)]
        return out

    def __str__(self):
        return f"{self.x}x{self.y}"


@dataclass(frozen=True)
class Phase:
    """One collective an algorithm runs on every bucket. Both backends execute these (comm/
    bucketed.py's loop; each backend maps ``collective`` on ``group`` to its own call), and
    the closed forms below count them, so an algorithm is described here once."""
    name: str                  # in counters and watchdog lines (PHASE_NAMES)
    group: str                 # "row", "col" or "world"
    collective: str            # reduce_scatter | all_reduce | all_gather | reduce | bcast
    operand: str = "bucket"    # "bucket", or "shard": the row's 1/X of it (torus2d's column)
    leaders_only: bool = False  # only each row's first rank takes part
    ring: bool = False         # point-to-point ring steps (MPI only: nnabla has no send/recv)


def phases(algorithm, grid):
    """The phases of one bucket, in order, degenerate ones (groups of one rank) left out."""
    x, y, n = grid.x, grid.y, grid.size
    table = {
        "torus2d": [(Phase("rs_row", "row", "reduce_scatter"), x > 1),
                    (Phase("ar_col", "col", "all_reduce", "shard" if x > 1 else "bucket"),
                     y > 1),
                    (Phase("ag_row", "row", "all_gather"), x > 1)],
        "hierarchical": [(Phase("reduce_row", "row", "reduce"), x > 1),
                         (Phase("ar_leaders", "col", "all_reduce", leaders_only=True), y > 1),
                         (Phase("bcast_row", "row", "bcast"), x > 1)],
        "ring": [(Phase("rs_ring", "world", "reduce_scatter", ring=True), n > 1),
                 (Phase("ag_ring", "world", "all_gather", ring=True), n > 1)],
        "native": [(Phase("ar_world", "world", "all_reduce"), n > 1)],
    }
    if algorithm not in table:
        raise CommError(f"comm.algorithm={algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    return [p for p, keep in table[algorithm] if keep]


def phase_bytes(phase, bucket_bytes, grid):
    """(bytes of the buffer ``phase`` works on, its group's size) for a bucket of
    ``bucket_bytes``: what collective_bytes and collective_steps take."""
    size = {"row": grid.x, "col": grid.y, "world": grid.size}[phase.group]
    return (bucket_bytes // grid.x if phase.operand == "shard" else bucket_bytes), size


def chunk_multiple(algorithm, grid):
    """A bucket's length must divide into this many equal chunks."""
    return {"torus2d": grid.x, "ring": grid.size}.get(algorithm, 1)


# --- closed forms --------------------------------------------------------------------------
def steps(algorithm, grid):
    """Sequential communication steps of one bucket on rings: the latency term (each rank's
    count; hierarchical's leaders, who take part in every phase)."""
    return sum(collective_steps(p.collective, phase_bytes(p, 0, grid)[1])
               for p in phases(algorithm, grid))


def bytes_per_rank(nbytes, world_size):
    """Bandwidth-optimal all-reduce volume each rank sends: 2(N-1)/N * S (torus2d and ring)."""
    return 2 * (world_size - 1) * nbytes / world_size


def collective_bytes(kind, nbytes, group_size):
    """Bytes one rank sends in a bandwidth-optimal (ring) implementation of a collective on a
    buffer of ``nbytes`` (the full buffer; for all-gather, the gathered result)."""
    g = group_size
    share = (g - 1) * nbytes / g
    return {"reduce_scatter": share, "all_gather": share, "all_reduce": 2 * share,
            "reduce": share, "bcast": share}[kind]


def collective_steps(kind, group_size):
    g = group_size
    return {"reduce_scatter": g - 1, "all_gather": g - 1, "all_reduce": 2 * (g - 1),
            "reduce": g - 1, "bcast": g - 1}[kind]


# --- buckets -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """Elements [offset, offset + length) of flattened array ``index`` sit at
    [bucket_offset, bucket_offset + length) of the bucket."""
    index: int
    offset: int
    bucket_offset: int
    length: int


@dataclass(frozen=True)
class Bucket:
    wire: np.dtype               # element type on the wire
    length: int                  # data elements
    padded: int                  # length rounded up to the chunk multiple (zeros at the end)
    segments: Tuple[Segment, ...]


@dataclass(frozen=True)
class Layout:
    buckets: Tuple[Bucket, ...]
    sizes: Tuple[int, ...]       # elements of each input array

    @property
    def elements(self):
        return sum(b.length for b in self.buckets)

    @property
    def padded_bytes(self):
        return sum(b.padded * b.wire.itemsize for b in self.buckets)

    def max_padded(self, wire):
        return max((b.padded for b in self.buckets if b.wire == wire), default=0)


def wire_dtype_of(dtype, wire_dtype=None, floats_only=True, full_precision=False):
    """The wire type of an array: its own, or narrower if ``wire_dtype`` asks for it. With
    ``full_precision`` never narrower, and float16 travels (and sums) as float32: for values
    that must stay exact (metric totals, step numbers, BN statistics)."""
    dtype = np.dtype(dtype)
    if floats_only and dtype not in FLOAT_DTYPES:
        raise CommError(f"cannot all-reduce arrays of {dtype}; use float16, float32 or float64")
    if full_precision:
        return np.promote_types(dtype, np.float32) if dtype.kind == "f" else dtype
    if wire_dtype is None:
        return dtype
    wire = np.dtype(wire_dtype)
    return wire if wire.itemsize < dtype.itemsize else dtype


def bucket_layout(sizes, dtypes, bucket_bytes, multiple=1, wire_dtype=None, floats_only=True,
                  full_precision=False, whole_arrays=False):
    """Fuse arrays into flat buckets of at most ``bucket_bytes`` per wire dtype.

    Arrays are laid end to end in input order (one stream per wire dtype, in order of first
    appearance) and the stream is cut every ``bucket_bytes``, so a large array may span
    buckets and many small ones share one. Each bucket is padded with zeros to a multiple of
    ``multiple`` elements so it splits into equal chunks. Empty arrays take no space.
    ``full_precision``: see ``wire_dtype_of``. ``whole_arrays``: cut only between arrays (a
    bucket is then a list of whole arrays, which nnabla's communicator packs itself; an array
    larger than ``bucket_bytes`` gets a bucket of its own).
    """
    if len(sizes) != len(dtypes):
        raise CommError("bucket_layout: sizes and dtypes differ in length")
    streams = {}
    for i, (n, dt) in enumerate(zip(sizes, dtypes)):
        wire = wire_dtype_of(dt, wire_dtype, floats_only, full_precision)
        streams.setdefault(wire, []).append((i, int(n)))
    buckets = []
    for wire, members in streams.items():
        cap = max(multiple, int(bucket_bytes) // wire.itemsize // multiple * multiple)
        segs, used = [], 0
        for i, n in members:
            if whole_arrays and used and used + n > cap:
                buckets.append(_bucket(wire, used, multiple, segs))
                segs, used = [], 0
            if whole_arrays and n:
                segs.append(Segment(i, 0, used, n))
                used += n
                if used >= cap:
                    buckets.append(_bucket(wire, used, multiple, segs))
                    segs, used = [], 0
                continue
            offset = 0
            while offset < n:
                take = min(n - offset, cap - used)
                segs.append(Segment(i, offset, used, take))
                offset, used = offset + take, used + take
                if used == cap:
                    buckets.append(_bucket(wire, used, multiple, segs))
                    segs, used = [], 0
        if used:
            buckets.append(_bucket(wire, used, multiple, segs))
    return Layout(tuple(buckets), tuple(int(n) for n in sizes))


def _bucket(wire, length, multiple, segs):
    return Bucket(wire, length, -(-length // multiple) * multiple, tuple(segs))


def describe(ranks: List[int], limit: Optional[int] = 8):
    """'[0, 1, 2]' or '[0, 1, ..., 63] (64 ranks)' for messages."""
    if limit is None or len(ranks) <= limit:
        return "[" + ", ".join(map(str, ranks)) + "]"
    return f"[{ranks[0]}, {ranks[1]}, ..., {ranks[-1]}] ({len(ranks)} ranks)"
