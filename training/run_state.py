"""What a run saves to continue exactly, and the checks before a checkpoint is used again.

``save`` writes (rank 0 only) the parameters with BN statistics, the solver states, and the
metadata a resumed run needs: the step, the sample stream's position, the meters' totals and
elapsed time, the evaluation history (for best top-1 and time-to-accuracy), the loss scale,
the config and the world size. The learning rate and the batch stage are functions of the
step, so they are not stored: a resumed run recomputes the same values.

``check_compatible`` decides before any work whether a checkpoint can continue this config:
the model must be the same; the global batch schedule too (then another world size is fine).
"""
import os
import shutil

import numpy as np

from . import checkpoint
from .config import to_dict

CHECKPOINT_DIR = "checkpoints"
# Config sections that may differ on a resume without changing what is being trained.
FREE_TO_CHANGE = ("comm", "data", "eval", "checkpoint")


class ResumeError(ValueError):
    """A checkpoint that cannot continue this run; the message says why and what to do."""


def same_on_every_rank(comm, value):
    """Whether every rank holds ``value`` (the step of the checkpoint it found): their mean,
    in full precision (float64, exact far past the 2,048 and 65,504 a float16 communicator
    would round to), equals it. A rank whose value differs sees a different mean."""
    mean = np.array([value], np.float64)
    comm.all_reduce([mean], average=True, full_precision=True)
    return float(mean[0]) == float(value)


def checkpoint_dir(output_dir):
    return os.path.join(output_dir, CHECKPOINT_DIR)


def prepare_output_dir(output_dir, clear):
    """Create the output dir and prove it writable; ``clear`` removes an earlier run's log,
    summary, TensorBoard files and checkpoints (--overwrite), so a later --resume cannot pick
    up stale state."""
    try:
        if clear:
            stale = [n for n in (os.listdir(output_dir) if os.path.isdir(output_dir) else ())
                     if n.startswith("param_digest.rank")]   # a run on more ranks left them
            for name in ("log.jsonl", "summary.json", "mlperf.log", "tb", CHECKPOINT_DIR,
                         *stale):
                path = os.path.join(output_dir, name)
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ResumeError(f"cannot write to the output dir {output_dir} ({e.strerror}); "
                          "choose another --output-dir") from None


def restore(resume, all_params, optimizer, schedule):
    """Load a checkpoint found by ``find`` into the parameters and the optimizer.

    The optimizer is first configured for the stage the step falls in, so its solvers (and
    their state slots) are those the interrupted run had. Returns (step, meta).
    """
    path, arrays, meta = resume
    step = meta["step"]
    hyper = schedule.hyper(schedule.stage(step))
    optimizer.configure(hyper["momentum"], hyper["weight_decay"])
    optimizer.set_states(checkpoint.unpack(arrays, meta["solver_counters"], all_params,
                                           optimizer.get_states()))
    return step, meta


def save(output_dir, step, all_params, optimizer, meta, keep):
    arrays, counters = checkpoint.pack(all_params, optimizer.get_states())
    meta = dict(meta, step=step, solver_counters=counters)
    return checkpoint.save(checkpoint_dir(output_dir), step, arrays, meta, keep=keep)


def make_meta(cfg, world_size, loader_state, meters, evals, loss_scale=None):
    return {"config": to_dict(cfg), "world_size": world_size, "stream": loader_state,
            "meters": meters.state(), "evals": evals,
            "loss_scale": None if loss_scale is None else [loss_scale.scale,
                                                           loss_scale.good_steps]}


def find(resume, output_dir, warn):
    """(path, arrays, meta) to resume from, or None to start fresh.

    ``resume`` is "latest" (the newest loadable checkpoint in the output dir, or a fresh start
    if there is none, so every job of a chain runs the same command) or a file path.
    """
    if resume == "latest":
        return checkpoint.load_latest(checkpoint_dir(output_dir), warn=warn)
    if not os.path.isfile(resume):
        raise ResumeError(f"--resume {resume}: no such checkpoint file; pass --resume alone for "
                          f"the latest in {checkpoint_dir(output_dir)}")
    try:
        arrays, meta = checkpoint.load(resume)
    except checkpoint.CheckpointError as e:
        raise ResumeError(f"{e}; pass an older file from {os.path.dirname(resume)}") from None
    return resume, arrays, meta


def _global_schedule(config):
    """(global batch stages, epochs): what must not change for a resume to continue a run."""
    stages = config["batch"]["stages"] or [{"until_epoch": config["train"]["epochs"],
                                            "global_batch": config["train"]["global_batch"]}]
    return [(s["until_epoch"], s["global_batch"]) for s in stages], config["train"]["epochs"]


def check_compatible(meta, cfg, world_size):
    """Raise ResumeError unless this config can continue the checkpointed run."""
    saved, now = meta["config"], to_dict(cfg)
    if saved["model"] != now["model"]:
        diff = [k for k in now["model"] if saved["model"].get(k) != now["model"][k]]
        raise ResumeError(f"the checkpoint holds another model ("
                          f"{', '.join('model.' + k for k in diff)} differ): resume with the "
                          "model settings it was trained with, or start a new run in another "
                          "--output-dir")
    (was, was_epochs), (will, will_epochs) = _global_schedule(saved), _global_schedule(now)
    if was != will or was_epochs != will_epochs:
        raise ResumeError(
            f"the checkpoint's global batch schedule (until_epoch, batch) {was} over "
            f"{was_epochs:g} epochs differs from this run's {will} over {will_epochs:g}: resume "
            "with the same stages (another world size is fine when the batches divide it)")
    if meta["stream"]["offset"] % world_size:
        raise ResumeError(
            f"the checkpoint stopped {meta['stream']['offset']} samples into an epoch, which "
            f"{world_size} ranks cannot split evenly: resume on {meta['world_size']} ranks")


def changed_settings(meta, cfg):
    """Dotted keys (outside FREE_TO_CHANGE) whose values differ from the checkpoint's config."""
    saved, now = meta["config"], to_dict(cfg)
    changed = []
    for section, values in now.items():
        if section in FREE_TO_CHANGE:
            continue
        if not isinstance(values, dict):
            if saved.get(section) != values:
                changed.append(section)
            continue
        changed += [f"{section}.{k}" for k, v in values.items()
                    if saved.get(section, {}).get(k) != v]
    return changed
