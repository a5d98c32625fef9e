"""MPI worker: one rank freezes itself (SIGSTOP) in the middle of all-reduces.

    mpirun -np 4 python tests/mpi_workers/freeze.py --timeout-s 2 --frozen-rank 1 --pid-dir D
    mpirun -np 4 python tests/mpi_workers/freeze.py ... --rehearse-gpu   (NCCL backend, double)

Every rank writes its pid to D/rank<R>.pid first (so the test can check nothing survives).
The other ranks block in a collective; their watchdogs must print one line each and abort
the job. If the watchdog failed, this worker would hang until the test's own timeout.
"""
import argparse
import os
import signal
import time

import numpy as np

p = argparse.ArgumentParser()
p.add_argument("--timeout-s", type=float, required=True)
p.add_argument("--frozen-rank", type=int, default=1)
p.add_argument("--pid-dir", required=True)
p.add_argument("--algorithm", default="torus2d")
p.add_argument("--rehearse-gpu", action="store_true",
               help="comm's NCCL backend over rehearsal/'s double; MPI is left to comm to "
                    "start (nnabla would start it at MPI_THREAD_SERIALIZED)")
args = p.parse_args()

rank = int(os.environ["OMPI_COMM_WORLD_RANK"])
with open(os.path.join(args.pid_dir, f"rank{rank}.pid"), "w") as f:
    f.write(str(os.getpid()))
if args.rehearse_gpu:
    import rehearsal
    import nnabla as nn
    import comm
    ctx = rehearsal.contexts("float")[0]
    nn.set_default_context(ctx)
    c = comm.create(args.algorithm, "2x2", backend="nccl", ctx=ctx, bucket_mb=0.25,
                    timeout_s=args.timeout_s,
                    nnabla_communicator=rehearsal.MultiProcessDataParallelCommunicator)
    grads = [nn.NdArray.from_numpy_array(np.ones(n, np.float32)) for n in (300_000, 7)]
else:
    import comm
    c = comm.create(args.algorithm, "2x2", bucket_mb=0.25, timeout_s=args.timeout_s)
    grads = [np.ones(300_000, np.float32), np.ones(7, np.float32)]
for step in range(1000):
    if step == 5 and rank == args.frozen_rank:
        print(f"rank {rank}: freezing at step {step}", flush=True)
        with open(os.path.join(args.pid_dir, "frozen_at"), "w") as f:
            f.write(repr(time.time()))
        os.kill(os.getpid(), signal.SIGSTOP)
    c.all_reduce(grads, average=True)
print(f"rank {rank}: finished without a hang (unexpected)", flush=True)
