"""Validation over the whole validation set, each image counted once across ranks."""
import numpy as np

from .objective import topk_correct


def average_bn_statistics(comm, arrays):
    """Make every rank's BN running statistics (``arrays``: their values, as the
    communicator takes them) the mean over ranks.

    Each rank's running mean/var follow its own batches, so ranks drift apart; averaging them
    before evaluating and checkpointing (as timm's ``--dist-bn reduce``) evaluates one model
    on every rank and stores statistics that represent all the data. In full precision: the
    mean is taken in at least float32 and rounded once into each array, never summed in
    float16 (nor on a half-precision NCCL communicator).
    """
    if comm.size > 1:
        comm.all_reduce(arrays, average=True, full_precision=True)


def batches(val_graph, loader, ctx=None):
    """Put each validation batch into the graph's input; yields (labels, valid). With ``ctx``
    (data.device=gpu) and a loader that can (DALI's), batches are written where DALI made
    them, never copied to the host and back."""
    if ctx is not None and hasattr(loader, "batches_into"):
        yield from loader.batches_into(val_graph.image.data, ctx)
        return
    for images, labels, valid in loader:
        val_graph.image.d = images
        yield labels, valid


def evaluate(val_graph, loader, comm, ctx=None):
    """(top-1, top-5, loss) over the validation set; padding rows never count."""
    totals = np.zeros(4, np.float64)  # top-1 hits, top-5 hits, loss sum, images
    for labels, valid in batches(val_graph, loader, ctx):
        val_graph.logits.forward(clear_buffer=True)
        logits = val_graph.logits.d[:valid].astype(np.float64)
        labels = labels[:valid]
        top1, top5 = topk_correct(logits, labels)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=1))
        loss = (log_z - np.take_along_axis(shifted, labels.astype(np.int64), 1)[:, 0]).sum()
        totals += (top1, top5, loss, valid)
    comm.all_reduce([totals], full_precision=True)   # counts above 2,048: exact, not fp16
    count = max(totals[3], 1.0)
    return totals[0] / count, totals[1] / count, totals[2] / count
