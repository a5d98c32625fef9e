"""What a run executes on: the config as it will run, the compute contexts, the communicator.

``--rehearse-gpu`` is decided here, once. It runs the GPU path on CPU ranks (rehearsal/'s
CPU contexts for cudnn's, its double of nnabla's NCCL communicator), so its config
overrides (``device=gpu``, and DALI decoding and NHWC back on the CPU) are applied before
the config is validated and written: config.yaml records what ran.
"""
import sys
from dataclasses import dataclass, field
from typing import Any, List

from comm import CommError, create as create_communicator, job, launched_by_mpi
from .config import load_config
from .device import check_devices, check_gpu_stack, contexts


class StartError(ValueError):
    """A problem found before training starts; the message says what and how to fix it.
    ``same_on_every_rank``: every rank finds it, so each may simply exit."""

    def __init__(self, message, same_on_every_rank=False):
        super().__init__(message)
        self.same_on_every_rank = same_on_every_rank


def load_run_config(args):
    """(config, lines to say once): --set, then --rehearse-gpu's overrides, validated;
    --data-dir over data.dir."""
    overrides, notes = list(args.set), []
    if args.rehearse_gpu:
        if args.dry_run:
            raise StartError("--rehearse-gpu runs the GPU path on CPU ranks and --dry-run "
                             "runs nothing: drop one of them", same_on_every_rank=True)
        import rehearsal
        overrides.append("device=gpu")
        asked = load_config(args.config, overrides)     # as written, before the overrides
        notes = list(rehearsal.NOT_REHEARSED)
        if asked.data.device == "gpu":
            notes.append(rehearsal.DATA_ON_CPU)
            overrides.append("data.device=cpu")
        if asked.model.channel_last:
            notes.append(rehearsal.NCHW_ON_CPU)
            overrides.append("model.channel_last=false")
    cfg = load_config(args.config, overrides)
    if args.data_dir:
        cfg.data.dir = args.data_dir
    return cfg, notes


@dataclass
class Runtime:
    ctx: Any                     # nnabla context the model computes in
    float_ctx: Any               # the loss, the optimizer's sums: always float
    comm: Any                    # comm.create's communicator (LocalCommunicator alone)
    rehearse: bool = False
    notes: List[str] = field(default_factory=list)


def build_runtime(cfg, rehearse=False, dry_run=False):
    """Contexts and communicator for ``cfg``. Under mpirun: cfg.comm's algorithm and grid,
    on MPI (CPU, numpy) or nnabla's NCCL communicator (GPU, NdArrays); alone, a local one.
    A problem that may differ between ranks (devices, job size) ends every rank here."""
    gpu = cfg.device == "gpu" and not dry_run     # a dry run plans on any machine
    if gpu and not rehearse:     # each missing piece of the GPU stack: one line, before work
        problems = check_gpu_stack(multi_rank=launched_by_mpi())
        if problems:
            raise StartError("\n".join(problems), same_on_every_rank=True)
    if rehearse:
        import rehearsal
    gpu_contexts = ((lambda device_id=0: rehearsal.contexts(cfg.type_config)) if rehearse else
                    (lambda device_id=0: contexts("gpu", cfg.type_config, device_id)))
    ctx, float_ctx = gpu_contexts() if gpu else contexts("cpu", cfg.type_config)
    nccl = gpu and launched_by_mpi()
    problem = check_devices() if nccl and not rehearse else None
    if problem:     # nnabla's init would fail on some ranks and hang the others
        _end_every_rank(problem)
    try:
        comm = create_communicator(
            cfg.comm.algorithm, cfg.comm.grid, backend="nccl" if nccl else "mpi",
            bucket_mb=cfg.comm.bucket_mb, wire_dtype=cfg.comm.wire_dtype,
            timeout_s=cfg.comm.timeout_s, column_phase=cfg.comm.column_phase,
            **({"ctx": ctx} if nccl else {}),
            **({"nnabla_communicator": rehearsal.MultiProcessDataParallelCommunicator}
               if nccl and rehearse else {}))
    except CommError as e:     # may differ between ranks (size, devices)
        _end_every_rank(str(e))
    if gpu:     # the rank's GPU: its local rank on the node, as nnabla-examples do
        ctx, float_ctx = gpu_contexts(comm.local_rank)
    return Runtime(ctx, float_ctx, comm, rehearse)


def _end_every_rank(message):
    print(f"error: {message}", file=sys.stderr, flush=True)
    job.abort_job(1)
