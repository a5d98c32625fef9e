"""What a communicator did: collective calls, bytes sent, ring steps and seconds, per phase.

Bytes and steps of a library collective (MPI_Reduce_scatter_block, ...) are what a
bandwidth-optimal ring implementation of that call sends for the buffer actually passed
(``plan.collective_bytes``); the ``ring`` algorithm's are counted from its own Sendrecv calls.
``seconds`` is wall time inside the communicator's methods (all_reduce, bcast, barrier),
packing and unpacking included; per-phase seconds split it up.
"""
from collections import defaultdict


class Counters:
    def __init__(self):
        self.reset()

    def reset(self):
        self.ops = 0                      # all_reduce / bcast / barrier calls by the user
        self.buckets = 0
        self.seconds = 0.0
        self.host_reads = 0               # device arrays copied to the host (NCCL backend)
        self.phases = defaultdict(lambda: {"calls": 0, "bytes": 0, "steps": 0, "seconds": 0.0})

    def add(self, phase, seconds, calls=1, nbytes=0, steps=0):
        p = self.phases[phase]
        p["calls"] += calls
        p["bytes"] += nbytes
        p["steps"] += steps
        p["seconds"] += seconds

    def snapshot(self):
        """A plain dict (JSON-ready); ``calls``/``bytes``/``steps`` sum the communication phases."""
        comm = {k: v for k, v in self.phases.items() if k not in ("pack", "unpack")}
        return {
            "ops": self.ops,
            "buckets": self.buckets,
            "calls": sum(p["calls"] for p in comm.values()),
            "bytes": sum(p["bytes"] for p in comm.values()),
            "steps": sum(p["steps"] for p in comm.values()),
            "seconds": self.seconds,
            "host_reads": self.host_reads,
            "phases": {k: dict(v) for k, v in self.phases.items()},
        }
