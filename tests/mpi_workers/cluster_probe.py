"""MPI worker for the emulated cluster: where every rank is, and the all-reduce across nodes.

    python -m tools.minicluster run --rail-per-rank -- python tests/mpi_workers/cluster_probe.py

Rank 0 prints one line ``RESULT {json}``:
- ``ranks``: per rank its hostname, MPI_Get_processor_name, the size of its
  MPI_COMM_TYPE_SHARED communicator, and the rail the wrapper gave it (MINICLUSTER_RAIL);
- ``auto_grid``: comm.create(grid="auto").grid, found from the nodes;
- ``checked``/``failures``: every algorithm with comm.grid=auto against the float64 reference
  (allreduce_cases.py's cases);
- ``rail_bytes``: bytes sent on each rail of each node while only local rank 0 of the first
  two nodes exchange RAIL_MB MiB (read from the node's own /sys/class/net counters).
"""
import json
import os
import socket
import sys

import numpy as np
from mpi4py import MPI

import comm
from allreduce_cases import check_algorithms

WORLD = MPI.COMM_WORLD
RAIL_MB = 8


def tx_bytes():
    """{rail device: bytes sent} of this rank's node (its network namespace's interfaces)."""
    out = {}
    for dev in sorted(os.listdir("/sys/class/net")):
        if dev.startswith("rail"):
            with open(f"/sys/class/net/{dev}/statistics/tx_bytes") as f:
                out[dev] = int(f.read())
    return out


def rail_traffic(node):
    """Only local rank 0 of nodes 1 and 2 talk; every rank reports its node's tx deltas."""
    peer = {0: node.size, node.size: 0}.get(WORLD.rank)
    buf = np.ones(RAIL_MB * 2 ** 18, np.float32)
    if peer is not None:                    # connect first, so setup is not counted
        WORLD.Sendrecv(buf[:1].copy(), peer, recvbuf=np.empty(1, np.float32), source=peer)
    WORLD.Barrier()
    before = tx_bytes()
    if peer is not None:
        WORLD.Sendrecv(buf, peer, recvbuf=np.empty_like(buf), source=peer)
    node.Barrier()
    after = tx_bytes()
    WORLD.Barrier()
    return {dev: after[dev] - before[dev] for dev in before}


def main():
    node = WORLD.Split_type(MPI.COMM_TYPE_SHARED, key=WORLD.rank)
    me = {"hostname": socket.gethostname(), "processor": MPI.Get_processor_name(),
          "local_size": node.size, "rail": os.environ.get("MINICLUSTER_RAIL"),
          "btl_tcp_if_include": os.environ.get("OMPI_MCA_btl_tcp_if_include")}
    c = comm.create("torus2d", "auto")
    auto_grid = list(c.grid)
    c.close()
    checked, failures = check_algorithms(["auto"])
    deltas = rail_traffic(node)
    ranks = WORLD.gather(me, root=0)
    by_node = WORLD.gather((me["hostname"], deltas) if node.rank == 0 else None, root=0)
    if WORLD.rank == 0:
        print("RESULT " + json.dumps({
            "ranks": ranks, "auto_grid": auto_grid, "checked": checked, "failures": failures,
            "rail_bytes": dict(x for x in by_node if x), "rail_mb": RAIL_MB}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
