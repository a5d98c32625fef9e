"""A thread of rank 1 raises while every rank waits in a collective: comm.job's hook must
end the whole job (without it the others wait in the barrier until killed).

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


if rank == 1:
    threading.Thread(target=work, name="feeder").start()
else:
    time.sleep(0.5)
MPI.COMM_WORLD.Barrier()       # rank 1 never arrives: its main thread waits below
if rank == 1:
    time.sleep(600)
print("not reached: the job should have ended", flush=True)
