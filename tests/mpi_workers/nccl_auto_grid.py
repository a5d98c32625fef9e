"""MPI worker: comm/'s NCCL backend with comm.grid=auto, over rehearsal/'s double, wherever
mpirun put the ranks (e.g. --map-by node: consecutive ranks on different nodes).

    python -m tools.minicluster mpirun -- -np 8 --hostfile H --map-by node python THIS

Rank 0 prints ``RESULT {json}``: every rank's host name and nnabla local_rank, the grid's rows
and the all-reduce's result check.
"""
import json
import socket
import sys

import rehearsal                              # before mpi4py.MPI: comm starts MPI itself
import nnabla as nn  # noqa: E402
import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import comm  # noqa: E402


def main():
    ctx = rehearsal.contexts("float")[0]
    nn.set_default_context(ctx)
    c = comm.create("torus2d", "auto", backend="nccl", ctx=ctx, timeout_s=120,
                    **rehearsal.comm_options())
    world = MPI.COMM_WORLD
    arrays = [nn.NdArray.from_numpy_array(np.full(n, c.rank + 1.0, np.float32))
              for n in (3, 1000, 7)]
    c.all_reduce(arrays)
    want = c.size * (c.size + 1) / 2
    ok = all(world.allgather(all(bool((a.data == want).all()) for a in arrays)))
    hosts = world.allgather(socket.gethostname())
    local = world.allgather(c.local_rank)
    if c.rank == 0:
        print("RESULT " + json.dumps({"hosts": hosts, "local_ranks": local,
                                      "rows": [list(r) for r in c.layout_grid.rows],
                                      "grid": list(c.grid), "sum_ok": ok}), flush=True)
    c.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
