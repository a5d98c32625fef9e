"""Stage a packed data set onto every node's local disk: ``python -m data.stage SRC DST``.

    mpirun -np NODES --map-by ppr:1:node python -m data.stage /groups/me/imagenet-packed \\
        "$PBS_LOCALDIR/imagenet"
    python -m data.stage SRC DST                       # one node: a verified local copy

One rank per node. The shared source is read once in all: each node reads a share of the
shards and every shard reaches every node that needs it over MPI (rounds of all-gathered
chunks; data/staging.py). Files appear atomically and are checked against the index's sizes
and sha256; a rerun (or the next job of a chain) copies only what is missing or wrong.
``--shuffle node`` copies to each node only its own training shards (data.shuffle=node).
Ends with one JSON line (rank 0): bytes_read_from_source, bytes_written_per_node,
copied_files, seconds. A problem is one line from rank 0 and exit status 1 on every rank.

(This is the one module of data/ that uses MPI: a command-line tool run by mpirun, not
part of the loaders, which know nothing of communicators.)
"""
import argparse
import json
import os
import sys

from .imagefolder import DataError
from .staging import Everywhere, Stager


class MpiExchange:
    """What data/staging.py needs of MPI, over the first rank of each node (``comm``; None on
    the other ranks of a node, which have nothing to do: one copy per node)."""

    def __init__(self):
        from mpi4py import MPI
        self.MPI, self.world = MPI, MPI.COMM_WORLD
        node = self.world.Split_type(MPI.COMM_TYPE_SHARED)
        self.shared_node = self.world.allreduce(node.size, op=MPI.MAX) > 1
        leader = node.rank == 0
        node.Free()
        self.comm = self.world.Split(0 if leader else MPI.UNDEFINED, self.world.rank)
        if self.comm != MPI.COMM_NULL:
            self.rank, self.size = self.comm.rank, self.comm.size

    @property
    def leader(self):
        return self.comm != self.MPI.COMM_NULL

    def bcast(self, obj):
        return self.comm.bcast(obj, root=0)

    def gather_all(self, obj):
        return self.comm.allgather(obj)

    def all_gather_bytes(self, payload, counts):
        """Every node's block, in node order: a ring of Sendrecv (n - 1 steps, each node
        sends and receives one block per step on all its rails). Measured across 4 emulated
        nodes x 2 rails: 41 MB/s received per node against 24 with MPI_Allgather, whose
        algorithm there is not a bandwidth-optimal ring (docs/data.md)."""
        n, r = self.size, self.rank
        starts = [sum(counts[:k]) for k in range(n + 1)]
        out = bytearray(starts[-1])
        view = memoryview(out)
        view[starts[r]:starts[r + 1]] = payload
        block = lambda k: [view[starts[k]:starts[k + 1]], self.MPI.BYTE]   # noqa: E731
        for step in range(n - 1):
            self.comm.Sendrecv(block((r - step) % n), (r + 1) % n, 0,
                               block((r - step - 1) % n), (r - 1) % n, 0)
        return out

    def abort(self):
        self.world.Abort(1)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m data.stage", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("src", help="the packed data set (python -m data.prepare_imagenet --out)")
    p.add_argument("dst", help="its copy on each node's local disk")
    p.add_argument("--shuffle", choices=("global", "node"), default="global",
                   help="global: every node gets every shard (default); node: each node only "
                        "its own training shards, for data.shuffle=node")
    p.add_argument("--chunk-mb", type=float, default=8, help="bytes per node per round")
    p.add_argument("--verify-all", action="store_true",
                   help="hash every local file again, not only those whose stamp changed")
    return p.parse_args(argv)


def check_paths(a):
    src, dst = os.path.abspath(a.src), os.path.abspath(a.dst)
    if src == dst:
        raise DataError(f"SRC and DST are the same directory ({src}): DST is the node-local copy")
    os.makedirs(dst, exist_ok=True)


def stage(x, a):
    """Rank 0's result dict; Everywhere (all node leaders) or DataError (this node)."""
    problem = None
    try:
        check_paths(a)
    except (DataError, OSError) as e:
        problem = f"node {x.rank}: {e}"
    problems = [p for p in x.gather_all(problem) if p]
    if problems:
        raise Everywhere(problems[0])
    return Stager(x, a.src, a.dst, a.shuffle, int(a.chunk_mb * (1 << 20)), a.verify_all).run()


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    x = MpiExchange()
    status = 0
    if x.leader:
        try:
            result = stage(x, a)
            if x.rank == 0:
                if x.shared_node:
                    print("stage: several ranks per node: the first of each node copied "
                          "(run with mpirun --map-by ppr:1:node)", file=sys.stderr)
                print(json.dumps(result), flush=True)
        except Everywhere as e:
            if x.rank == 0:
                print(f"stage: error: {e}", file=sys.stderr, flush=True)
            status = 1
        except (DataError, OSError) as e:     # this node only: the others wait in a collective
            print(f"stage: error: node {x.rank}: {e}", file=sys.stderr, flush=True)
            if x.world.size == 1:
                return 1
            x.abort()
    x.world.Barrier()
    return status


if __name__ == "__main__":
    sys.exit(main())
