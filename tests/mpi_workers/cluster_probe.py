"""MPI worker for the emulated cluster: where every rank is, and the all-reduce across nodes.

    python -m tools.minicluster run --rail-per-rank -- python tests/mpi_workers/cluster_probe.py

Rank 0 prints one line ``RESULT {json}``:
- ``ranks``: per rank its hostname, MPI_Get_processor_name, the size of its
  MPI_COMM_TYPE_SHARED communicator, and the rail the wrapper gave it (MINICLUSTER_RAIL);
- ``auto_grid``: comm.create(grid="auto").grid, found from the nodes; ``column_ring``: whether
  torus2d's column phase became the ring (comm.column_phase=auto: columns span nodes);
- ``checked``/``failures``: every algorithm with comm.grid=auto against the float64 reference
  (allreduce_cases.py's cases), and torus2d with MPI_Allreduce in its column;
- ``node1_sent``: bytes node 1 sent on each rail while its local rank 0 sent RAIL_MB MiB to
  local rank 0 of node 2 (read from the node's own /sys/class/net counters).
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
    """Local rank 0 of node 1 sends RAIL_MB MiB to local rank 0 of node 2, which answers
    once it has all of it; returns what node 1 sent on each rail meanwhile (rank 0 only)."""
    peer = {0: node.size, node.size: 0}.get(WORLD.rank)
    buf = np.ones(RAIL_MB * 2 ** 18, np.float32)
    one = np.zeros(1, np.float32)
    if peer is not None:                    # connect first, so setup is not counted
        WORLD.Sendrecv(one.copy(), peer, recvbuf=np.empty(1, np.float32), source=peer)
    WORLD.Barrier()
    before = tx_bytes()
    if WORLD.rank == 0:                     # the answer proves every byte crossed the wire
        WORLD.Send(buf, peer)
        WORLD.Recv(one, peer)
    elif peer is not None:
        WORLD.Recv(buf, peer)
        WORLD.Send(one, peer)
    after = tx_bytes()
    WORLD.Barrier()
    return {dev: after[dev] - before[dev] for dev in before}


def main():
    node = WORLD.Split_type(MPI.COMM_TYPE_SHARED, key=WORLD.rank)
    me = {"hostname": socket.gethostname(), "processor": MPI.Get_processor_name(),
          "local_size": node.size, "rail": os.environ.get("MINICLUSTER_RAIL"),
          "btl_tcp_if_include": os.environ.get("OMPI_MCA_btl_tcp_if_include")}
    c = comm.create("torus2d", "auto")
    auto_grid, column_ring = list(c.grid), c.column_ring
    c.close()
    checked, failures = check_algorithms(["auto"], torus_column="allreduce")
    sent = rail_traffic(node)
    ranks = WORLD.gather(me, root=0)
    if WORLD.rank == 0:
        print("RESULT " + json.dumps({
            "ranks": ranks, "auto_grid": auto_grid, "column_ring": column_ring, "checked": checked, "failures": failures,
            "node1_sent": sent, "rail_mb": RAIL_MB}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
