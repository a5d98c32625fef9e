#!/usr/bin/env python
"""Train ResNet-50 v1.5 on ImageNet-layout data with nnabla.

    python train_resnet50.py --config configs/cpu_demo.yaml --data-dir data/toy --output-dir runs/demo
    python train_resnet50.py --config configs/resnet50_imagenet.yaml --dry-run
    python train_resnet50.py --config configs/cpu_demo.yaml --set train.epochs=2 --set model.width=0.5
    python train_resnet50.py --config configs/paper_224s.yaml --dry-run --world-size 2176 --local-size 4

The run writes OUTPUT_DIR/config.yaml (the resolved config), OUTPUT_DIR/log.jsonl (one JSON
object per event) and OUTPUT_DIR/summary.json. The README documents the log format.
"""
import os
import sys

REPO = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("NNABLA_CONFIG_FILE_PATH", os.path.join(REPO, "nnabla.conf"))

import argparse  # noqa: E402
import hashlib  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import nnabla as nn  # noqa: E402
from nnabla.ext_utils import get_extension_context  # noqa: E402

from comm import CommError, create as create_communicator  # noqa: E402
from data.build import build_loaders, list_data  # noqa: E402
from data.imagefolder import DataError  # noqa: E402
from data.sampler import padded_epoch_length  # noqa: E402
from models.resnet import ResNet, count_parameters  # noqa: E402
from schedules.batch import ScheduleError  # noqa: E402
from schedules.schedule import TrainingSchedule  # noqa: E402
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
    p.add_argument("--world-size", type=int, metavar="N",
                   help="dry run: plan for N ranks (default: the actual world size)")
    p.add_argument("--local-size", type=int, metavar="G",
                   help="dry run: ranks (GPUs) per node, for the plan's node count")
    p.add_argument("--plot-schedule", metavar="PNG",
                   help="dry run: also draw the global batch and learning rate over training")
    p.add_argument("--param-digest", action="store_true",
                   help="every rank writes OUTPUT_DIR/param_digest.rank<R> (sha256 of the "
                        "trained parameters) at the end: shows whether ranks stayed in sync")
    return p.parse_args(argv)


def fail(message, comm=None):
    """One line that names the problem and the fix, then a non-zero exit. Given a
    communicator of several ranks it ends the whole job: a rank that exited alone would
    leave the others waiting in their next collective."""
    if comm is not None and comm.size > 1:
        comm.abort(f"error: {message}")
    sys.exit(f"error: {message}")


def mean_over_ranks(comm, value):
    """The mean of a per-rank scalar over all ranks (one small all-reduce)."""
    buf = np.array([value], np.float64)
    comm.all_reduce([buf], average=True)
    return float(buf[0])


def param_digest(params):
    h = hashlib.sha256()
    for name, p in params.items():
        h.update(name.encode())
        h.update(np.ascontiguousarray(p.d).tobytes())
    return h.hexdigest()


# --- building blocks -----------------------------------------------------------------------
def input_shape(cfg):
    size = cfg.data.image_size
    return (size, size, 3) if cfg.model.channel_last else (3, size, size)


def build_train_graph(cfg, model, local_batch, label_smoothing):
    """Training graph (loss) for one per-rank batch size; every such graph shares the weights."""
    train = SimpleNamespace(image=nn.Variable((local_batch,) + input_shape(cfg)),
                            label=nn.Variable((local_batch, 1)))
    train.loss = classification_loss(model(train.image, train=True), train.label,
                                     label_smoothing)
    return train


def build_val_graph(cfg, model):
    val = SimpleNamespace(image=nn.Variable((cfg.eval.batch_size,) + input_shape(cfg)))
    val.logits = model(val.image, train=False)
    return val


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


def print_plan(cfg, schedule, n_params, listing, world_size, local_size):
    m, o = cfg.model, cfg.optim
    print(f"model      ResNet-{m.depth} v1.5, width {m.width:g}, "
          f"{'small' if m.small_stem else 'ImageNet'} stem, {m.num_classes} classes, "
          f"{n_params:,} parameters")
    print(f"input      {cfg.data.image_size}px, backend {cfg.data.backend}, "
          f"{'NHWC' if m.channel_last else 'NCHW'}, {cfg.type_config}, device {cfg.device}")
    if listing is None:
        print("data       no --data-dir: listing skipped; step counts assume ImageNet-1k "
              f"({IMAGENET_TRAIN_IMAGES:,} training images)")
    else:
        train, val = listing
        print(f"data       {len(train):,} training / {len(val):,} validation images, "
              f"{len(train.classes)} classes, in {cfg.data.dir or train.root}"
              + (f" ({train.excluded + val.excluded} excluded)" if train.excluded + val.excluded
                 else ""))
    nodes = f" = {world_size // local_size:,} nodes x {local_size}" if local_size else ""
    print(f"ranks      {world_size:,}{nodes}; batch mode {cfg.batch.mode}"
          + (f", max {cfg.batch.max_local_batch} per rank" if cfg.batch.max_local_batch else ""))
    print(f"lr         {o.base_lr:g} per 256 samples, {o.lr_scaling} in the "
          f"{'current stage' if cfg.batch.lr_batch == 'stage' else 'first stage'}'s global "
          f"batch; warm-up {o.warmup_epochs:g} epochs from {o.warmup_start_factor:g} x peak; "
          f"{o.decay} decay to {cfg.train.epochs:g} epochs")
    print(f"optimizer  {o.optimizer}, weight decay not on BN/bias"
          + (f", LARS coefficient {o.lars_coefficient:g}" if o.optimizer == "lars" else ""))
    print(schedule.table())


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
    try:    # one process: a local communicator; under mpirun: cfg.comm's algorithm and grid
        comm = create_communicator(cfg.comm.algorithm, cfg.comm.grid,
                                   bucket_mb=cfg.comm.bucket_mb, wire_dtype=cfg.comm.wire_dtype,
                                   timeout_s=cfg.comm.timeout_s)
    except CommError as e:
        fail(str(e))
    rank0 = comm.rank == 0

    # Check everything that can be checked before any work is spent on it.
    if not args.dry_run and (args.world_size or args.local_size or args.plot_schedule):
        fail("--world-size, --local-size and --plot-schedule plan a run: add --dry-run "
             "(a real run takes its ranks from mpirun)")
    if not args.dry_run and cfg.device == "gpu":
        fail("device=gpu: the trainer does not run on GPUs yet (issue 10); check a GPU recipe "
             "with --dry-run, or train on the CPU with --set device=cpu")
    listing = None
    if cfg.data.dir or cfg.data.backend == "synthetic" or not args.dry_run:
        try:
            listing = list_data(cfg.data)
        except DataError as e:
            fail(str(e), comm)
    if cfg.model.num_classes is None:
        if listing is None:
            fail("model.num_classes is not set and no --data-dir was given to count classes; "
                 "pass --data-dir or --set model.num_classes=1000", comm)
        cfg.model.num_classes = len(listing[0].classes)
    elif listing is not None and len(listing[0].classes) > cfg.model.num_classes:
        fail(f"the data set has {len(listing[0].classes)} classes but model.num_classes="
             f"{cfg.model.num_classes}; set it to null or to at least that", comm)
    if not args.dry_run and not args.overwrite and os.path.exists(
            os.path.join(output_dir, "log.jsonl")):
        fail(f"{output_dir} already holds a run; pass --overwrite to replace it or choose "
             "another --output-dir", comm)
    comm.barrier()   # every rank has checked the output dir before rank 0 writes into it
    world_size = args.world_size or comm.size
    if world_size < 1 or (args.local_size is not None and (
            args.local_size < 1 or world_size % args.local_size)):
        fail(f"--world-size {world_size} must be a positive multiple of --local-size "
             f"{args.local_size}")
    epoch_length = padded_epoch_length(len(listing[0]) if listing else IMAGENET_TRAIN_IMAGES,
                                       world_size)
    try:
        schedule = TrainingSchedule.from_config(cfg, epoch_length, world_size)
    except ScheduleError as e:
        fail(f"{e} (for {world_size:,} ranks)")

    # On the CPU even for a GPU recipe's dry run: it builds the graph but computes nothing.
    nn.set_default_context(get_extension_context("cpu", type_config=cfg.type_config))
    rng = np.random.RandomState(cfg.train.seed)
    model = ResNet(cfg.model.depth, cfg.model.num_classes, cfg.model.width, cfg.model.small_stem,
                   cfg.model.zero_init_last_bn, cfg.model.channel_last, rng=rng)
    graphs = {}   # (per-rank batch, label smoothing) -> training graph; all share the weights

    def train_graph(stage):
        key = (stage.local_batch, schedule.hyper(stage)["label_smoothing"])
        if key not in graphs:
            graphs[key] = build_train_graph(cfg, model, *key)
        return graphs[key]

    train_graph(schedule.stage(0))
    val_net = build_val_graph(cfg, model)
    params = model.parameters()
    n_params = count_parameters(params)

    if args.dry_run:
        print_plan(cfg, schedule, n_params, listing, world_size, args.local_size)
        if args.plot_schedule:
            from tools.plot_schedule import plot_schedule
            plot_schedule(schedule, args.plot_schedule,
                          title=f"{recipe}: {world_size:,} ranks")
            print(f"plot       {args.plot_schedule}")
        return 0

    train_set, val_set = listing
    loader, val_loader = build_loaders(
        cfg.data, train_set, val_set, seed=cfg.train.seed, val_batch_size=cfg.eval.batch_size,
        shard_id=comm.rank, num_shards=comm.size, channel_last=cfg.model.channel_last,
        half=cfg.type_config == "half", device_id=comm.local_rank)
    optimizer = Optimizer(params, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.optimizer,
                          cfg.optim.lars_coefficient, cfg.optim.lars_eps)
    comm.bcast([p.d for p in params.values()], root=0)  # every rank starts from rank 0's weights

    if rank0:
        os.makedirs(output_dir, exist_ok=True)
        with open(os.path.join(output_dir, "config.yaml"), "w") as f:
            f.write(dump_yaml(cfg))
    log = RunLog(output_dir, enabled=rank0, thresholds=cfg.eval.top1_thresholds)
    log.write("start", epoch=0.0, step=0, elapsed_s=0.0,
              global_batch=schedule.stage(0).global_batch, schedule=schedule.rows(),
              world_size=comm.size, parameters=n_params, total_steps=schedule.total_steps,
              train_images=len(train_set), val_images=len(val_set),
              excluded_images=train_set.excluded + val_set.excluded, argv=sys.argv[1:],
              config=to_dict(cfg), nnabla=nn.__version__, python=platform.python_version(),
              host=platform.node(), commit=git_commit())
    progress = Progress(schedule.total_steps, enabled=rank0)
    clock = Stopwatch()
    step, data_wait, eval_time, allreduce_time = 0, 0.0, 0.0, 0.0
    window = SimpleNamespace(loss=0.0, steps=0, images=0, start=0.0)  # since the last "step" line
    epoch_acc = SimpleNamespace(loss=0.0, steps=0, images=0, seconds=0.0, wait=0.0,
                                allreduce=0.0)
    last_eval = None

    # --- the loop: one update per iteration ----------------------------------------------
    stage = None
    while step < schedule.total_steps:
        if stage is None or step == stage.end_step:    # a stage begins: switch batch and hypers
            stage = schedule.stage(step)
            hyper = schedule.hyper(stage)
            train_net = train_graph(stage)
            optimizer.configure(hyper["momentum"], hyper["weight_decay"])
            log.write("stage", epoch=loader.epochs_done, step=step, elapsed_s=clock.elapsed(),
                      global_batch=stage.global_batch, lr=schedule.lr_at_step(step),
                      stage=stage.index, local_batch=stage.local_batch,
                      accumulation=stage.accumulation, steps=stage.steps, **hyper)
            progress.message(f"stage {stage.index} from step {step} (epoch "
                             f"{loader.epochs_done:.3f}): global batch {stage.global_batch}, "
                             f"{stage.local_batch} per rank x {stage.accumulation}")
        epoch_before = loader.epochs_done
        lr = schedule.lr_at_step(step)

        # One update = `accumulation` forward/backward passes; gradients add up in place.
        optimizer.zero_grad()
        loss = 0.0
        for _ in range(stage.accumulation):
            t0 = clock.elapsed()
            try:
                images, labels = loader.next_batch(stage.local_batch)
            except DataError as e:   # a broken image: one line naming it and the checker command
                fail(str(e), comm)
            data_wait += clock.elapsed() - t0
            train_net.image.d, train_net.label.d = images, labels
            train_net.loss.forward(clear_no_need_grad=True)
            train_net.loss.backward(clear_buffer=True)
            loss += float(train_net.loss.d) / stage.accumulation
        # numpy views of this step's gradient buffers (CPU); fetched after every backward
        # because nnabla may give the gradients new buffers after zero_grad
        grads = [p.g for p in params.values()]
        t0 = clock.elapsed()
        comm.all_reduce(grads, average=True)    # the mean gradient over all ranks
        allreduce_time += clock.elapsed() - t0
        if stage.accumulation > 1:
            optimizer.scale_grad(1.0 / stage.accumulation)   # ... and over the micro-steps
        optimizer.step(lr)
        step += 1

        if not math.isfinite(loss):
            fail(f"training loss became {loss} at step {step} on rank {comm.rank} "
                 f"(lr {lr:.4g}); lower optim.base_lr or lengthen optim.warmup_epochs", comm)
        for acc in (window, epoch_acc):
            acc.loss, acc.steps, acc.images = acc.loss + loss, acc.steps + 1, \
                acc.images + stage.global_batch
        epoch_now = loader.epochs_done
        progress.update(step, epoch_now, window.loss / window.steps,
                        window.images / max(clock.elapsed() - window.start, 1e-9),
                        lr, stage.global_batch)

        if step % cfg.train.log_every_steps == 0 or step == schedule.total_steps:
            seconds = clock.elapsed() - window.start
            log.write("step", epoch=epoch_now, step=step, elapsed_s=clock.elapsed(),
                      train_loss=mean_over_ranks(comm, window.loss / window.steps),
                      global_batch=stage.global_batch,
                      lr=lr, images_per_s=window.images / max(seconds, 1e-9))
            window = SimpleNamespace(loss=0.0, steps=0, images=0, start=clock.elapsed())

        if math.floor(epoch_now) > math.floor(epoch_before):   # crossed an epoch boundary
            # epoch_acc.seconds is the training time (eval excluded) at the epoch's start
            seconds = clock.elapsed() - eval_time - epoch_acc.seconds
            log.write("epoch", epoch=epoch_now, step=step, elapsed_s=clock.elapsed(),
                      train_loss=mean_over_ranks(comm, epoch_acc.loss / epoch_acc.steps),
                      global_batch=stage.global_batch,
                      lr=lr, images_per_s=epoch_acc.images / max(seconds, 1e-9),
                      epoch_index=math.floor(epoch_now), data_wait_s=data_wait,
                      data_wait_frac=(data_wait - epoch_acc.wait) / max(seconds, 1e-9),
                      allreduce_s=allreduce_time - epoch_acc.allreduce)
            epoch_acc = SimpleNamespace(loss=0.0, steps=0, images=0,
                                        seconds=clock.elapsed() - eval_time, wait=data_wait,
                                        allreduce=allreduce_time)
        every = cfg.eval.every_epochs
        if (math.floor(epoch_now / every) > math.floor(epoch_before / every)
                or step == schedule.total_steps):
            t_eval = clock.elapsed()
            try:
                top1, top5, val_loss = evaluate(val_net, val_loader, comm)
            except DataError as e:
                fail(str(e), comm)
            eval_time += clock.elapsed() - t_eval
            window.start += clock.elapsed() - t_eval
            last_eval = log.write("eval", epoch=epoch_now, step=step, elapsed_s=clock.elapsed(),
                                  val_top1=top1, val_top5=top5, val_loss=val_loss,
                                  global_batch=stage.global_batch, lr=lr)
            progress.message(f"epoch {epoch_now:.2f}: val top-1 {top1:.4f} top-5 {top5:.4f} "
                             f"loss {val_loss:.4f} ({format_seconds(clock.elapsed())})")

    # --- wrap up ---------------------------------------------------------------------------
    progress.close()
    loader.close()
    wall = clock.elapsed()
    train_seconds = max(wall - eval_time, 1e-9)
    samples = schedule.plan.samples_before(step)
    log.write("end", epoch=loader.epochs_done, step=step, elapsed_s=wall,
              val_top1=last_eval["val_top1"], val_top5=last_eval["val_top5"],
              global_batch=stage.global_batch, lr=lr,
              images_per_s=samples / train_seconds)
    summary = log.summary(wall_time_s=wall, epochs=loader.epochs_done, steps=step,
                          images_per_s=samples / train_seconds,
                          eval_time_s=eval_time, data_wait_s=data_wait,
                          allreduce_s=allreduce_time, comm_algorithm=comm.algorithm,
                          comm_grid=f"{comm.grid[0]}x{comm.grid[1]}",
                          world_size=comm.size, global_batch=stage.global_batch,
                          parameters=n_params, status="completed")
    log.write_summary(summary)
    log.close()
    if args.param_digest:
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, f"param_digest.rank{comm.rank}")
        with open(path + ".tmp", "w") as f:
            f.write(param_digest(params) + "\n")
        os.replace(path + ".tmp", path)
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
