"""Stand-in calibration data for the scale model's fitter, until tools/bench_comm.py lands.

    .venv/bin/mpirun --oversubscribe --allow-run-as-root -np 4 .venv/bin/python \
        tools/sim_mpi_probe.py --out runs/sim_probe_4.jsonl

Times three all-reduces of float32 buffers and writes one JSON line per (algorithm, size) in
the bench_comm --json shape ({"ranks", "grid", "algorithm", "bytes", "time_us", ...}):
  ring     reduce-scatter + all-gather with Sendrecv to the ring neighbours, 2(n-1) steps
  torus2d  the same ring code in rows (X = 2), then in columns, then in rows: 2(X-1)+2(Y-1) steps
  native   MPI's own Allreduce
It is ONLY a probe for testing the fitter (python -m tools.simulate fit FILE); comm/'s
benchmark is the real measurement. time_us is the median and min_us the fastest of --repeats
timed calls, each bracketed by barriers; on an oversubscribed host that includes CPU
time-slicing, and on a shared machine other jobs' load (min_us is the less disturbed).
"""
import argparse
import json
import os
import sys
import time

import numpy as np
from mpi4py import MPI


def ring_allreduce(comm, buf):
    """In-place sum over ``comm`` with a ring: reduce-scatter then all-gather (len % n == 0)."""
    n, r = comm.Get_size(), comm.Get_rank()
    if n == 1:
        return
    chunks = np.split(buf, n)
    right, left = (r + 1) % n, (r - 1) % n
    tmp = np.empty_like(chunks[0])
    for step in range(n - 1):               # after this, chunk (r+1) % n is fully reduced here
        send, recv = (r - step) % n, (r - step - 1) % n
        comm.Sendrecv(chunks[send], dest=right, recvbuf=tmp, source=left)
        chunks[recv] += tmp
    for step in range(n - 1):
        send, recv = (r + 1 - step) % n, (r - step) % n
        comm.Sendrecv(chunks[send], dest=right, recvbuf=chunks[recv], source=left)


def torus_allreduce(rows, cols, buf):
    """Row reduce-scatter, column all-reduce on the shard, row all-gather (ring each)."""
    x, r = rows.Get_size(), rows.Get_rank()
    if x == 1:
        ring_allreduce(cols, buf)
        return
    chunks = np.split(buf, x)
    right, left = (r + 1) % x, (r - 1) % x
    tmp = np.empty_like(chunks[0])
    for step in range(x - 1):
        send, recv = (r - step) % x, (r - step - 1) % x
        rows.Sendrecv(chunks[send], dest=right, recvbuf=tmp, source=left)
        chunks[recv] += tmp
    ring_allreduce(cols, chunks[(r + 1) % x])
    for step in range(x - 1):
        send, recv = (r + 1 - step) % x, (r - step) % x
        rows.Sendrecv(chunks[send], dest=right, recvbuf=chunks[recv], source=left)


def timed(comm, fn, repeats):
    """(median, min) seconds of ``repeats`` calls, each bracketed by barriers."""
    times = []
    for _ in range(repeats):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        comm.Barrier()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(np.min(times))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="4096,65536,1048576,4194304,16777216",
                   help="message sizes in bytes, comma-separated (float32 elements = bytes/4)")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", help="append JSON lines here (rank 0); default stdout")
    args = p.parse_args(argv)
    world = MPI.COMM_WORLD
    n, rank = world.Get_size(), world.Get_rank()
    x = 2 if n % 2 == 0 and n > 2 else n         # rows of 2 when possible (2x2 on 4 ranks)
    rows, cols = world.Split(rank // x, rank), world.Split(rank % x, rank)
    lines = []
    for size in (int(s) for s in args.sizes.split(",")):
        count = max(n, size // 4 // n * n)      # divisible by n (and so by x)
        data = np.random.RandomState(rank).rand(count).astype(np.float32)
        expected = np.empty_like(data)
        world.Allreduce(data, expected)
        for name, fn in (("ring", lambda b: ring_allreduce(world, b)),
                         ("torus2d", lambda b: torus_allreduce(rows, cols, b)),
                         ("native", lambda b: world.Allreduce(MPI.IN_PLACE, b))):
            buf = data.copy()
            fn(buf)                              # warm-up and correctness check
            if not np.allclose(buf, expected, rtol=1e-5, atol=1e-5):
                world.Abort(f"{name} gave a wrong sum at {count} elements")
            median, fastest = timed(world, lambda: fn(buf), args.repeats)
            lines.append({"ranks": n, "grid": f"{x}x{n // x}" if name == "torus2d" else None,
                          "algorithm": name, "bytes": count * 4, "count": count,
                          "dtype": "float32", "time_us": median * 1e6,
                          "min_us": fastest * 1e6, "repeats": args.repeats,
                          "source": "tools/sim_mpi_probe.py",
                          "cpus": os.cpu_count()})
    if rank == 0:
        text = "".join(json.dumps(line) + "\n" for line in lines)
        if args.out:
            with open(args.out, "a") as f:
                f.write(text)
        else:
            sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
