"""The trainer with one fault injected on one rank, as a bug or a library error would raise.

    mpirun -np 4 python tests/mpi_workers/trainer_fault.py WHERE RANK STEP MARKER -- TRAINER_ARGS

WHERE is ``main`` (an exception in the main thread at the end of update STEP) or ``feeder``
(an exception in the DALI loader's reader thread, while it reads the batch of update STEP).
Rank RANK writes the time of the fault to MARKER just before raising, so a test can measure
how long the job takes to end after it.
"""
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)

import train_resnet50  # noqa: E402
from data import dali_loader  # noqa: E402
from training import progress  # noqa: E402

where, fault_rank, fault_step, marker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    sys.argv[4]
argv = sys.argv[sys.argv.index("--") + 1:]
rank = int(os.environ.get("OMPI_COMM_WORLD_RANK", "0"))


def fault(what):
    with open(marker, "w") as f:
        f.write(f"{time.time()}\n")
    raise RuntimeError(f"injected fault in the {what} of rank {rank}")


if rank == fault_rank and where == "main":
    update = progress.Progress.update

    def failing_update(self, step, *args, **kwargs):
        if step >= fault_step:
            fault("main thread")
        return update(self, step, *args, **kwargs)
    progress.Progress.update = failing_update
elif rank == fault_rank and where == "feeder":
    prepare, calls = dali_loader.DaliTrainLoader._prepare, []

    def failing_prepare(self, indices, epochs):
        calls.append(1)
        if len(calls) > fault_step:
            fault("feeder thread")
        return prepare(self, indices, epochs)
    dali_loader.DaliTrainLoader._prepare = failing_prepare

sys.exit(train_resnet50.main(argv))
