"""What a run saves to continue exactly, and the checks before a checkpoint is used again.

``save`` writes (rank 0 only) the parameters with BN statistics, the solver states, and the
metadata a resumed run needs: the step, the sample stream's position, the meters' totals and
elapsed time, the evaluation history (for best top-1 and time-to-accuracy), the loss scale,
the config and the world size. The learning rate and the batch stage are functions of the
step, so they are not stored: a resumed run recomputes the same values.

``check_compatible`` decides before any work whether a checkpoint can continue this config:
the model must be the same; the global batch schedule too (then another world size is fine).
"""
import hashlib
import os

import numpy as np

from . import checkpoint
from . import output_dir as outdir
from .config import to_dict

CHECKPOINT_DIR = "checkpoints"
# What a resume reads from a checkpoint's metadata (``make_meta`` and ``save`` write them).
META_KEYS = ("step", "config", "world_size", "stream", "meters", "evals", "solver_counters")
# The learning-rate schedule: a resume that changes it trains another experiment.
SCHEDULE_KEYS = ("base_lr", "peak_lr", "lr_scaling", "warmup_epochs", "warmup_start_factor",
                 "decay", "poly_power", "step_milestones", "step_gamma", "final_lr_factor",
                 "end_lr")
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


def prepare_output_dir(output_dir, replace):
    """Create the output dir and prove it writable; ``replace`` (--overwrite, or a --resume
    with nothing to resume) first moves an earlier run's files aside, so a later --resume
    cannot pick up stale state and nothing is lost. Returns where they went, or None."""
    try:
        moved = outdir.move_aside(output_dir) if replace else None
        os.makedirs(output_dir, exist_ok=True)
        probe = os.path.join(output_dir, f".write-test-{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise ResumeError(f"cannot write to the output dir {output_dir} ({e.strerror}); "
                          "choose another --output-dir") from None
    return moved


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


def data_identity(train_set):
    """What says two runs train on the same data: the class list and the sample count."""
    digest = hashlib.sha256("\n".join(train_set.classes).encode()).hexdigest()
    return {"classes": len(train_set.classes), "classes_sha256": digest,
            "train_images": len(train_set)}


def make_meta(cfg, world_size, loader_state, meters, evals, loss_scale=None, data=None):
    return {"config": to_dict(cfg), "world_size": world_size, "stream": loader_state,
            "meters": meters.state(), "evals": evals, "data": data,
            "loss_scale": None if loss_scale is None else [loss_scale.scale,
                                                           loss_scale.good_steps]}


def find(resume, output_dir, warn):
    """(path, arrays, meta) to resume from, or None to start fresh.

    ``resume`` is "latest" (the newest loadable checkpoint in the output dir, or a fresh start
    if there is none, so every job of a chain runs the same command) or a file path.
    """
    if resume == "latest":
        try:
            return checkpoint.load_latest(checkpoint_dir(output_dir), warn=warn,
                                          required=META_KEYS)
        except checkpoint.CheckpointError as e:
            raise ResumeError(str(e)) from None
    if not os.path.isfile(resume):
        raise ResumeError(f"--resume {resume}: no such checkpoint file; pass --resume alone for "
                          f"the latest in {checkpoint_dir(output_dir)}")
    try:
        arrays, meta = checkpoint.load(resume, META_KEYS)
    except checkpoint.CheckpointError as e:
        raise ResumeError(f"{e}; pass an older file from {os.path.dirname(resume)}") from None
    return resume, arrays, meta


def _global_schedule(config):
    """(global batch stages, epochs): what must not change for a resume to continue a run."""
    stages = config["batch"]["stages"] or [{"until_epoch": config["train"]["epochs"],
                                            "global_batch": config["train"]["global_batch"]}]
    return [(s["until_epoch"], s["global_batch"]) for s in stages], config["train"]["epochs"]


def check_compatible(meta, cfg, world_size, data=None, accept_changes=False):
    """Raise ResumeError unless this config can continue the checkpointed run. Another data
    set (class list, sample count), precision, world size or schedule is refused unless
    ``accept_changes`` (--accept-changes); then returns what changed, one phrase each."""
    saved, now = meta["config"], to_dict(cfg)
    if saved["model"] != now["model"]:
        diff = [k for k in now["model"] if saved["model"].get(k) != now["model"][k]]
        raise ResumeError(f"the checkpoint holds another model ("
                          f"{', '.join('model.' + k for k in diff)} differ): resume with the "
                          "model settings it was trained with, or start a new run in another "
                          "--output-dir")
    changes = _identity_changes(meta, saved, now, world_size, data)
    if changes and not accept_changes:
        raise ResumeError(f"the checkpoint was trained with {'; '.join(changes)}: resume with "
                          "what it was trained with, or add --accept-changes to continue "
                          "anyway")
    if meta["stream"]["offset"] % world_size:
        raise ResumeError(
            f"the checkpoint stopped {meta['stream']['offset']} samples into an epoch, which "
            f"{world_size} ranks cannot split evenly: resume on {meta['world_size']} ranks")
    return changes


def _identity_changes(meta, saved, now, world_size, data):
    """What makes a resumed run another experiment than the checkpointed one."""
    changes = []
    was, will = meta.get("data"), data
    if was and will:
        if was["classes_sha256"] != will["classes_sha256"]:
            changes.append(f"another class list ({was['classes']} classes, now "
                           f"{will['classes']})")
        if was["train_images"] != will["train_images"]:
            changes.append(f"another training set size ({was['train_images']:,} images, now "
                           f"{will['train_images']:,})")
    if saved.get("type_config") != now["type_config"]:
        changes.append(f"type_config={saved.get('type_config')} (now {now['type_config']})")
    if meta["world_size"] != world_size:
        changes.append(f"{meta['world_size']} ranks (now {world_size})")
    (stages, epochs), (new_stages, new_epochs) = _global_schedule(saved), _global_schedule(now)
    if stages != new_stages or epochs != new_epochs:
        changes.append(f"the global batch schedule (until_epoch, batch) {stages} over "
                       f"{epochs:g} epochs (this run: {new_stages} over {new_epochs:g})")
    rate = [f"optim.{k}" for k in SCHEDULE_KEYS
            if saved.get("optim", {}).get(k) != now["optim"][k]]
    if rate:
        changes.append(f"another learning-rate schedule ({', '.join(rate)} differ)")
    return changes


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
