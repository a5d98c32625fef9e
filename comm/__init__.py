"""Gradient all-reduce across ranks: the 2D-Torus algorithm of Mikami et al. (2018) and the
baselines it is compared with, on MPI (mpi4py, CPU, numpy arrays) or NCCL (nnabla-ext-cuda).

    import comm
    c = comm.create(algorithm="torus2d", grid="auto", bucket_mb=4, timeout_s=300)
    c.bcast(params)                      # rank 0's values everywhere
    c.all_reduce(grads, average=True)    # in place; mean over ranks
    c.all_reduce([totals], full_precision=True)   # never narrowed (float16 sums as float32)

Every communicator has ``rank``, ``size``, ``local_rank``, ``local_size``, ``grid`` (X, Y),
``algorithm``, ``all_reduce``, ``bcast``, ``barrier``, ``abort`` and ``counters()``.
Outside mpirun (one process) ``create`` returns a ``LocalCommunicator`` with the same API.
The pure logic (grid, groups, buckets, step and byte counts) is in ``comm/plan.py``.
"""
import os

from .job import launcher_size
from .local import LocalCommunicator
from .plan import ALGORITHMS, COLUMN_PHASES, WIRE_DTYPES, CommError, parse_grid

BACKENDS = ("mpi", "nccl")
DEFAULTS = {"bucket_mb": 4.0, "wire_dtype": None, "timeout_s": 300.0, "column_phase": "auto"}
# Set by mpirun/srun/PMI launchers in every rank's environment.
LAUNCHER_VARS = ("OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_SIZE", "PMI_RANK", "SLURM_PROCID",
                 "MPI_LOCALNRANKS")


def launched_by_mpi():
    return any(v in os.environ for v in LAUNCHER_VARS)


def create(algorithm="torus2d", grid=None, backend="mpi", **options):
    """A communicator for this job. Options: bucket_mb, wire_dtype, timeout_s (0: no
    watchdog), column_phase (torus2d on MPI: auto | ring | allreduce, comm/mpi.py); with
    backend="nccl" also ctx (the nnabla context) and optionally nnabla_communicator (what
    makes nnabla's communicator from ctx; default
    nnabla.communicators.MultiProcessDataParallelCommunicator, rehearsal/ passes its double)
    and synchronize (waits for the device, e.g. nnabla_ext.cuda.synchronize; default: the
    factory's ``synchronize`` attribute if any -- rehearsal/'s double has one -- else the
    host read that follows is the wait).
    Raises CommError (one line, the same on every rank, before any collective) for a bad
    argument or a grid that does not match the number of ranks."""
    opts = dict(DEFAULTS)
    ctx = options.pop("ctx", None)
    factory = options.pop("nnabla_communicator", None)
    synchronize = options.pop("synchronize", None)
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise CommError(f"comm.create: unknown option(s) {sorted(unknown)}; valid: "
                        f"{', '.join(sorted(DEFAULTS))}")
    opts.update(options)
    if algorithm not in ALGORITHMS:
        raise CommError(f"comm.algorithm={algorithm!r} is not one of {', '.join(ALGORITHMS)}")
    if backend not in BACKENDS:
        raise CommError(f"comm backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if opts["wire_dtype"] not in WIRE_DTYPES:
        raise CommError(f"comm.wire_dtype={opts['wire_dtype']!r} is not one of "
                        f"{', '.join(map(str, WIRE_DTYPES))}")
    if opts["column_phase"] not in COLUMN_PHASES:
        raise CommError(f"comm.column_phase={opts['column_phase']!r} is not one of "
                        f"{', '.join(COLUMN_PHASES)}")
    if not opts["bucket_mb"] > 0:
        raise CommError(f"comm.bucket_mb={opts['bucket_mb']} must be positive")
    if not opts["timeout_s"] >= 0:
        raise CommError(f"comm.timeout_s={opts['timeout_s']} must be >= 0 (0 turns the "
                        "watchdog off)")
    shape = parse_grid(grid)
    if backend == "nccl":
        from .nccl import NcclCommunicator
        return check_size(NcclCommunicator(ctx, algorithm, grid, communicator_factory=factory,
                                           synchronize=synchronize, **opts))
    if not launched_by_mpi():
        if shape is not None and shape != (1, 1):
            raise CommError(f"comm.grid={grid} has {shape[0] * shape[1]} ranks but the job has "
                            "1 (not started by mpirun); launch with mpirun -np "
                            f"{shape[0] * shape[1]} or use grid 'auto'")
        return LocalCommunicator()
    from .mpi import MpiCommunicator
    return check_size(MpiCommunicator(algorithm, grid, **opts))


def check_size(comm, environ=None):
    """``comm`` if its size is the one the launcher gave the job, else CommError. A rank
    whose MPI library does not belong to the ``mpirun`` that started it finds no peers and
    runs as a singleton: N ranks would each train alone as "rank 0" into the same files."""
    said = launcher_size(environ)
    if said is not None and said[0] != comm.size:
        size, var, launcher = said
        raise CommError(f"{launcher} started {size} ranks ({var}={size}) but MPI sees "
                        f"{comm.size}: this Python's MPI library is not the one of the mpirun "
                        "that launched it; use the mpirun of the same MPI (.venv/bin/mpirun, "
                        "or with SITE_MPI=1 the site's), docs/clusters.md")
    return comm


__all__ = ["create", "CommError", "ALGORITHMS", "BACKENDS", "COLUMN_PHASES", "LocalCommunicator"]
