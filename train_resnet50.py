#!/usr/bin/env python
"""Train ResNet-50 v1.5 on ImageNet-layout data with nnabla.

    python train_resnet50.py --config configs/cpu_demo.yaml --data-dir data/toy --output-dir runs/demo
    python train_resnet50.py --config configs/resnet50_imagenet.yaml --dry-run
    python train_resnet50.py --config configs/cpu_demo.yaml --set train.epochs=2 --set model.width=0.5

The run writes OUTPUT_DIR/config.yaml (the resolved config), OUTPUT_DIR/log.jsonl (one JSON
object per event) and OUTPUT_DIR/summary.json. The README documents the log format.
"""
import os
import sys

REPO = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("NNABLA_CONFIG_FILE_PATH", os.path.join(REPO, "nnabla.conf"))

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import nnabla as nn  # noqa: E402
from nnabla.ext_utils import get_extension_context  # noqa: E402

from comm.local import LocalCommunicator  # noqa: E402
from data.build import build_loaders, list_data  # noqa: E402
from data.imagefolder import DataError  # noqa: E402
from data.sampler import padded_epoch_length  # noqa: E402
from models.resnet import ResNet, count_parameters  # noqa: E402
from schedules.lr import learning_rate, peak_lr  # noqa: E402
from training.config import ConfigError, dump_yaml, load_config, to_dict  # noqa: E402
from training.objective import classification_loss, topk_correct  # noqa: E402
from training.optim import Optimizer  # noqa: E402
from training.progress import Progress, format_seconds  # noqa: E402
from training.runlog import RunLog, Stopwatch  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--config", help="recipe YAML under configs/ (defaults: training/config.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.base_lr=0.2 (repeatable)")
    p.add_argument("--data-dir", help="ImageNet layout: DIR/train/<class>/*, DIR/val/<class>/*")
    p.add_argument("--output-dir", help="where the run is written (default runs/<config name>)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a previous run in the output dir instead of refusing")
    p.add_argument("--dry-run", action="store_true",
                   help="build the model, schedule and data listing, print the plan, exit")
    return p.parse_args(argv)


def fail(message):
    """One line that names the problem and the fix, then a non-zero exit."""
    sys.exit(f"error: {message}")


# --- building blocks -----------------------------------------------------------------------
def make_plan(cfg, epoch_length, world_size):
    """Batch and step counts of the run. Progress is counted in samples (see data/sampler.py)."""
    if cfg.train.global_batch % world_size:
        fail(f"train.global_batch={cfg.train.global_batch} is not divisible by {world_size} "
             f"ranks; use a multiple of {world_size}")
    total_samples = cfg.train.epochs * epoch_length
    return SimpleNamespace(
        epoch_length=epoch_length,
        global_batch=cfg.train.global_batch,
        local_batch=cfg.train.global_batch // world_size,
        total_steps=math.ceil(total_samples / cfg.train.global_batch),
        steps_per_epoch=epoch_length / cfg.train.global_batch,
        peak_lr=peak_lr(cfg.optim.base_lr, cfg.train.global_batch, cfg.optim.lr_scaling))


def lr_at(cfg, plan, epoch):
    o = cfg.optim
    return learning_rate(epoch, plan.peak_lr, cfg.train.epochs, o.warmup_epochs,
                         o.warmup_start_factor, o.decay, poly_power=o.poly_power,
                         milestones=o.step_milestones, gamma=o.step_gamma,
                         final_factor=o.final_lr_factor)


def build_graphs(cfg, model, local_batch):
    """Training graph (loss) and validation graph (logits); both share the model's weights."""
    size = cfg.data.image_size
    shape = (size, size, 3) if cfg.model.channel_last else (3, size, size)
    train = SimpleNamespace(image=nn.Variable((local_batch,) + shape),
                            label=nn.Variable((local_batch, 1)))
    train.loss = classification_loss(model(train.image, train=True), train.label,
                                     cfg.optim.label_smoothing)
    val = SimpleNamespace(image=nn.Variable((cfg.eval.batch_size,) + shape))
    val.logits = model(val.image, train=False)
    return train, val


def evaluate(val_graph, loader, comm):
    """Top-1, top-5 and loss over the whole validation set (each image once across ranks)."""
    totals = np.zeros(4, np.float64)  # top-1 hits, top-5 hits, loss sum, images
    for images, labels, valid in loader:
        val_graph.image.d = images
        val_graph.logits.forward(clear_buffer=True)
        logits = val_graph.logits.d[:valid].astype(np.float64)
        labels = labels[:valid]
        top1, top5 = topk_correct(logits, labels)
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_z = np.log(np.exp(shifted).sum(axis=1))
        loss = (log_z - np.take_along_axis(shifted, labels.astype(np.int64), 1)[:, 0]).sum()
        totals += (top1, top5, loss, valid)
    comm.all_reduce([totals])
    count = max(totals[3], 1.0)
    return totals[0] / count, totals[1] / count, totals[2] / count


def git_commit():
    try:
        return subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def print_plan(cfg, plan, n_params, listing, world_size):
    m, o = cfg.model, cfg.optim
    print(f"model      ResNet-{m.depth} v1.5, width {m.width:g}, "
          f"{'small' if m.small_stem else 'ImageNet'} stem, {m.num_classes} classes, "
          f"{n_params:,} parameters")
    print(f"input      {cfg.data.image_size}px, backend {cfg.data.backend}, "
          f"{'NHWC' if m.channel_last else 'NCHW'}, {cfg.type_config}")
    if listing is None:
        print("data       no --data-dir: listing skipped; step counts assume ImageNet-1k "
              f"({plan.epoch_length:,} training images)")
    else:
        train, val = listing
        print(f"data       {len(train):,} training / {len(val):,} validation images, "
              f"{len(train.classes)} classes, in {cfg.data.dir or train.root}"
              + (f" ({train.excluded + val.excluded} excluded)" if train.excluded + val.excluded
                 else ""))
    print(f"ranks      {world_size} (global batch {plan.global_batch}, {plan.local_batch} per rank)")
    print(f"schedule   {cfg.train.epochs:g} epochs = {plan.total_steps:,} steps "
          f"({plan.steps_per_epoch:.2f} per epoch); peak lr {plan.peak_lr:.4g} "
          f"({o.base_lr:g} per 256, {o.lr_scaling}); warm-up {o.warmup_epochs:g} epochs; "
          f"{o.decay} decay")
    marks = sorted({0.0, o.warmup_epochs, cfg.train.epochs / 2, cfg.train.epochs * 0.9})
    print("lr         " + ", ".join(f"epoch {e:g}: {lr_at(cfg, plan, e):.4g}" for e in marks))
    print(f"optimizer  momentum {o.momentum:g}, weight decay {o.weight_decay:g} (not on BN/bias), "
          f"label smoothing {o.label_smoothing:g}")


IMAGENET_TRAIN_IMAGES = 1281167


# --- main ----------------------------------------------------------------------------------
def main(argv=None):
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.set)
    except ConfigError as e:
        fail(str(e))
    if args.data_dir:
        cfg.data.dir = args.data_dir
    recipe = os.path.splitext(os.path.basename(args.config or "default"))[0]
    output_dir = args.output_dir or os.path.join("runs", recipe)
    comm = LocalCommunicator()
    rank0 = comm.rank == 0

    # Check everything that can be checked before any work is spent on it.
    listing = None
    if cfg.data.dir or cfg.data.backend == "synthetic" or not args.dry_run:
        try:
            listing = list_data(cfg.data)
        except DataError as e:
            fail(str(e))
    if cfg.model.num_classes is None:
        if listing is None:
            fail("model.num_classes is not set and no --data-dir was given to count classes; "
                 "pass --data-dir or --set model.num_classes=1000")
        cfg.model.num_classes = len(listing[0].classes)
    elif listing is not None and len(listing[0].classes) > cfg.model.num_classes:
        fail(f"the data set has {len(listing[0].classes)} classes but model.num_classes="
             f"{cfg.model.num_classes}; set it to null or to at least that")
    if not args.dry_run and not args.overwrite and os.path.exists(
            os.path.join(output_dir, "log.jsonl")):
        fail(f"{output_dir} already holds a run; pass --overwrite to replace it or choose "
             "another --output-dir")

    nn.set_default_context(get_extension_context("cpu", type_config=cfg.type_config))
    rng = np.random.RandomState(cfg.train.seed)
    model = ResNet(cfg.model.depth, cfg.model.num_classes, cfg.model.width, cfg.model.small_stem,
                   cfg.model.zero_init_last_bn, cfg.model.channel_last, rng=rng)
    epoch_length = padded_epoch_length(len(listing[0]) if listing else IMAGENET_TRAIN_IMAGES,
                                       comm.size)
    plan = make_plan(cfg, epoch_length, comm.size)
    train_net, val_net = build_graphs(cfg, model, plan.local_batch)
    params = model.parameters()
    n_params = count_parameters(params)

    if args.dry_run:
        print_plan(cfg, plan, n_params, listing, comm.size)
        return 0

    train_set, val_set = listing
    loader, val_loader = build_loaders(
        cfg.data, train_set, val_set, seed=cfg.train.seed, val_batch_size=cfg.eval.batch_size,
        shard_id=comm.rank, num_shards=comm.size, channel_last=cfg.model.channel_last,
        half=cfg.type_config == "half", device_id=comm.local_rank)
    optimizer = Optimizer(params, cfg.optim.momentum, cfg.optim.weight_decay)
    grads = [p.g for p in params.values()]  # numpy views of nnabla's gradient buffers (CPU)

    if rank0:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "config.yaml"), "w") as f:
            f.write(dump_yaml(cfg))
    log = RunLog(output_dir, enabled=rank0, thresholds=cfg.eval.top1_thresholds)
    log.write("start", epoch=0.0, step=0, elapsed_s=0.0, global_batch=plan.global_batch,
              world_size=comm.size, parameters=n_params, total_steps=plan.total_steps,
              train_images=len(train_set), val_images=len(val_set),
              excluded_images=train_set.excluded + val_set.excluded, argv=sys.argv[1:],
              config=to_dict(cfg), nnabla=nn.__version__, python=platform.python_version(),
              host=platform.node(), commit=git_commit())
    progress = Progress(plan.total_steps, enabled=rank0)
    clock = Stopwatch()
    step, data_wait, eval_time = 0, 0.0, 0.0
    window = SimpleNamespace(loss=0.0, steps=0, images=0, start=0.0)  # since the last "step" line
    epoch_acc = SimpleNamespace(loss=0.0, steps=0, images=0, seconds=0.0, wait=0.0)
    last_eval = None

    # --- the loop: one update per iteration ----------------------------------------------
    while step < plan.total_steps:
        epoch_before = loader.epochs_done
        lr = lr_at(cfg, plan, epoch_before)

        t0 = clock.elapsed()
        try:
            images, labels = loader.next_batch(plan.local_batch)
        except DataError as e:   # a broken image: one line naming it and the checker command
            fail(str(e))
        data_wait += clock.elapsed() - t0
        train_net.image.d, train_net.label.d = images, labels

        train_net.loss.forward(clear_no_need_grad=True)
        optimizer.zero_grad()
        train_net.loss.backward(clear_buffer=True)
        comm.all_reduce(grads, average=True)    # the mean gradient over all ranks
        optimizer.step(lr)
        step += 1

        loss = float(train_net.loss.d)
        if not math.isfinite(loss):
            fail(f"training loss became {loss} at step {step} (lr {lr:.4g}); lower "
                 "optim.base_lr or lengthen optim.warmup_epochs")
        for acc in (window, epoch_acc):
            acc.loss, acc.steps, acc.images = acc.loss + loss, acc.steps + 1, \
                acc.images + plan.global_batch
        epoch_now = loader.epochs_done
        progress.update(step, epoch_now, window.loss / window.steps,
                        window.images / max(clock.elapsed() - window.start, 1e-9),
                        lr, plan.global_batch)

        if step % cfg.train.log_every_steps == 0 or step == plan.total_steps:
            seconds = clock.elapsed() - window.start
            log.write("step", epoch=epoch_now, step=step, elapsed_s=clock.elapsed(),
                      train_loss=window.loss / window.steps, global_batch=plan.global_batch,
                      lr=lr, images_per_s=window.images / max(seconds, 1e-9))
            window = SimpleNamespace(loss=0.0, steps=0, images=0, start=clock.elapsed())

        if math.floor(epoch_now) > math.floor(epoch_before):   # crossed an epoch boundary
            seconds = clock.elapsed() - epoch_acc.seconds - eval_time
            log.write("epoch", epoch=epoch_now, step=step, elapsed_s=clock.elapsed(),
                      train_loss=epoch_acc.loss / epoch_acc.steps, global_batch=plan.global_batch,
                      lr=lr, images_per_s=epoch_acc.images / max(seconds, 1e-9),
                      epoch_index=math.floor(epoch_now), data_wait_s=data_wait,
                      data_wait_frac=(data_wait - epoch_acc.wait) / max(seconds, 1e-9))
            epoch_acc = SimpleNamespace(loss=0.0, steps=0, images=0,
                                        seconds=clock.elapsed() - eval_time, wait=data_wait)
        every = cfg.eval.every_epochs
        if (math.floor(epoch_now / every) > math.floor(epoch_before / every)
                or step == plan.total_steps):
            t_eval = clock.elapsed()
            try:
                top1, top5, val_loss = evaluate(val_net, val_loader, comm)
            except DataError as e:
                fail(str(e))
            eval_time += clock.elapsed() - t_eval
            epoch_acc.seconds += clock.elapsed() - t_eval
            window.start += clock.elapsed() - t_eval
            last_eval = log.write("eval", epoch=epoch_now, step=step, elapsed_s=clock.elapsed(),
                                  val_top1=top1, val_top5=top5, val_loss=val_loss,
                                  global_batch=plan.global_batch, lr=lr)
            progress.message(f"epoch {epoch_now:.2f}: val top-1 {top1:.4f} top-5 {top5:.4f} "
                             f"loss {val_loss:.4f} ({format_seconds(clock.elapsed())})")

    # --- wrap up ---------------------------------------------------------------------------
    progress.close()
    loader.close()
    wall = clock.elapsed()
    train_seconds = max(wall - eval_time, 1e-9)
    log.write("end", epoch=loader.epochs_done, step=step, elapsed_s=wall,
              val_top1=last_eval["val_top1"], val_top5=last_eval["val_top5"],
              global_batch=plan.global_batch, lr=lr,
              images_per_s=step * plan.global_batch / train_seconds)
    summary = log.summary(wall_time_s=wall, epochs=loader.epochs_done, steps=step,
                          images_per_s=step * plan.global_batch / train_seconds,
                          eval_time_s=eval_time, data_wait_s=data_wait,
                          world_size=comm.size, global_batch=plan.global_batch,
                          parameters=n_params, status="completed")
    log.write_summary(summary)
    log.close()
    if rank0:
        nn.save_parameters(os.path.join(output_dir, "final_params.h5"),
                           nn.get_parameters(grad_only=False))  # BN statistics too
        print(f"\ndone: {step} steps, {summary['epochs']:.2f} epochs in "
              f"{format_seconds(wall)} ({summary['images_per_s']:.0f} img/s)")
        print(f"val top-1 {summary['final_val_top1']:.4f} (best {summary['best_val_top1']:.4f}), "
              f"top-5 {summary['final_val_top5']:.4f}")
        reached = ", ".join(f"{k}: {format_seconds(v) if v is not None else 'not reached'}"
                            for k, v in summary["time_to_top1"].items())
        print(f"time to top-1 {reached}")
        print(f"written: {output_dir}/log.jsonl, summary.json, config.yaml, final_params.h5")
    return 0


if __name__ == "__main__":
    sys.exit(main())
