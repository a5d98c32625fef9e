"""Stop requests from the scheduler: checkpoint and exit at the next update, losing nothing.

Schedulers warn a job before its time limit with a signal (Slurm ``--signal=USR1@...``; our
job scripts send SIGUSR1 themselves, since Open MPI's mpirun forwards SIGUSR1 to every rank
but answers SIGTERM by killing them). The handler only records the request; the training
loop reads it at an update boundary and every rank agrees on it through the next all-reduce,
so all ranks stop after the same step.
"""
import signal

STOP_SIGNALS = (signal.SIGUSR1, signal.SIGTERM)


class StopRequest:
    def __init__(self, signals=STOP_SIGNALS):
        self.signal_name = None
        for sig in signals:
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self):
        return self.signal_name is not None
