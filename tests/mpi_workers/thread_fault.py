"""A thread of rank 1 raises while rank 0 waits in a collective: comm.job's hook must end the
whole job (without it rank 0 waits in the barrier, rank 1 sleeps, until they are killed).

    mpirun -np 2 python tests/mpi_workers/thread_fault.py
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from comm import job  # noqa: E402

job.abort_on_uncaught()
from mpi4py import MPI  # noqa: E402

rank = MPI.COMM_WORLD.rank


def work():
    time.sleep(0.5)
    raise ValueError(f"injected fault in a thread of rank {rank}")


if rank == 1:       # its main thread does no MPI: only the hook can end this rank
    threading.Thread(target=work, name="feeder").start()
    time.sleep(600)
else:              # waits for rank 1 in a collective it never joins
    MPI.COMM_WORLD.Barrier()
print("not reached: the job should have ended", flush=True)
