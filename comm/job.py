"""The job as the launcher sees it, and ending all of it when one rank fails.

A rank that dies of an uncaught exception would otherwise exit normally: mpi4py then calls
``MPI_Finalize`` at exit, which waits for every rank, while the other ranks wait in their
next collective, so the job hangs until the watchdog's timeout, or until the wall-clock
limit where no watchdog runs yet (NCCL set-up). ``abort_on_uncaught`` makes any uncaught
exception, in any thread, print one line naming the rank, host and exception, and end the
job through ``MPI_Abort`` (``mpirun`` then stops every rank and exits non-zero).

``launcher_size`` reads what the launcher says the job's size is: a rank whose MPI library
is not the one of the ``mpirun`` that started it runs as a singleton, so N copies of
"rank 0" would train alone and write the same files (``comm.create`` compares).
"""
import os
import platform
import sys
import threading
import traceback

# (variable, launcher): the job's size as the launcher exports it to every rank, first wins
SIZE_VARS = (("OMPI_COMM_WORLD_SIZE", "Open MPI's mpirun"), ("PMI_SIZE", "a PMI launcher"),
             ("SLURM_STEP_NUM_TASKS", "srun"), ("SLURM_NTASKS", "Slurm"))
RANK_VARS = ("OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK", "SLURM_PROCID")


def launcher_size(environ=None):
    """(size, variable, launcher) from the first size variable set, or None."""
    environ = os.environ if environ is None else environ
    for var, launcher in SIZE_VARS:
        value = environ.get(var, "")
        if value.strip().isdigit():
            return int(value), var, launcher
    return None


def launcher_rank(environ=None):
    environ = os.environ if environ is None else environ
    for var in RANK_VARS:
        if environ.get(var, "").strip().isdigit():
            return int(environ[var])
    return None


def _mpi_running():
    mpi = sys.modules.get("mpi4py.MPI")
    return mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized()


_AT_ABORT = []


def at_abort(fn):
    """Call ``fn()`` before this rank aborts the job (e.g. to release a lock file): atexit
    handlers do not run when a process ends through MPI_Abort or os._exit."""
    _AT_ABORT.append(fn)


def run_at_abort():
    """The ``at_abort`` calls, once (for abort paths that end the job their own way)."""
    while _AT_ABORT:
        try:
            _AT_ABORT.pop()()
        except Exception:      # cleanup must not keep the job alive
            pass


def abort_job(code=1):
    """End every rank of the job now (``MPI_Abort`` when MPI runs; a process exiting
    non-zero before MPI started makes ``mpirun`` stop the others). Never returns."""
    run_at_abort()
    sys.stdout.flush()
    sys.stderr.flush()
    if _mpi_running():
        sys.modules["mpi4py.MPI"].COMM_WORLD.Abort(code)
    os._exit(code)


def failure_line(exc_type, exc, thread_name=None):
    """``error: rank R on HOST[, thread T]: Type: message`` (one line)."""
    rank = launcher_rank()
    where = f"rank {rank if rank is not None else 0} on {platform.node()}"
    if thread_name and thread_name != "MainThread":
        where += f", thread {thread_name}"
    text = " ".join(str(exc).split())[:300]
    return f"error: {where}: {exc_type.__name__}{': ' + text if text else ''}"


def abort_on_uncaught():
    """Install hooks so an uncaught exception in any thread prints its traceback, then one
    line naming the rank, host and exception (the last line on stderr), and ends the job."""
    def report(exc_type, exc, tb, thread_name=None):
        if issubclass(exc_type, SystemExit):
            return      # threading ignores it too; in the main thread it never gets here
        if issubclass(exc_type, KeyboardInterrupt) and thread_name is None:
            sys.__excepthook__(exc_type, exc, tb)
            return
        try:
            traceback.print_exception(exc_type, exc, tb, file=sys.stderr)
            print(failure_line(exc_type, exc, thread_name), file=sys.stderr, flush=True)
        finally:
            abort_job(1)

    sys.excepthook = report
    threading.excepthook = lambda a: report(a.exc_type, a.exc_value, a.exc_traceback,
                                            a.thread.name if a.thread else "?")
