"""``--rehearse-gpu``: the trainer's GPU path on CPU ranks, for machines without a GPU.

The same wiring as a GPU run (train_resnet50.py with device=gpu, tools/bench_comm.py
--backend nccl): comm/'s NCCL backend with its groups and buckets, the Exchange, half
precision with the loss in float and dynamic loss scaling, evaluation, checkpoints and
resume. Two things stand in for what needs a GPU:

  - nnabla's CPU contexts for cudnn's (``cpu:half`` for ``type_config=half``: FP16
    arithmetic, ~100x slower than float on a CPU);
  - ``rehearsal.communicator``'s double of nnabla's MultiProcessDataParallelCommunicator,
    over mpi4py, as strict as the real one (docs/gpu.md).

What cannot be rehearsed is said once, in the run's first lines (``NOT_REHEARSED``).
"""
from nnabla.ext_utils import get_extension_context

from .communicator import (MultiProcessDataParallelCommunicator,
                           NoOpMultiProcessDataParallelCommunicator, synchronize)

NOT_REHEARSED = (
    "rehearse-gpu: the GPU path on CPU ranks: nnabla's CPU contexts stand in for cudnn's "
    "and rehearsal/'s double of nnabla's NCCL communicator (over MPI) for NCCL",
    "rehearse-gpu: NOT rehearsed: CUDA kernels, cuDNN's algorithms, NCCL's transport, DALI's "
    "GPU decoding, and any speed (every time printed is a CPU time)")
DATA_ON_CPU = ("rehearse-gpu: data.device=gpu decodes on the CPU here (DALI's GPU decoder "
               "needs a GPU)")
NCHW_ON_CPU = ("rehearse-gpu: model.channel_last=true runs as NCHW here (nnabla's CPU "
               "convolution has no NHWC)")


def comm_options(no_op=False):
    """What comm.create(backend="nccl") takes to run on the double instead of nnabla's
    communicator: its factory and its stand-in for nnabla_ext.cuda.synchronize. ``no_op``:
    collectives that move no data (for measuring the host's own work)."""
    factory = (NoOpMultiProcessDataParallelCommunicator if no_op
               else MultiProcessDataParallelCommunicator)
    return {"nnabla_communicator": factory, "synchronize": synchronize}


def contexts(type_config):
    """(compute context, float context for the loss): the CPU contexts that stand in for
    ``get_extension_context('cudnn', device_id, type_config)``."""
    return (get_extension_context("cpu", type_config=type_config),
            get_extension_context("cpu", type_config="float"))


__all__ = ["MultiProcessDataParallelCommunicator", "comm_options", "synchronize",
           "NOT_REHEARSED", "DATA_ON_CPU", "NCHW_ON_CPU",
           "contexts"]
