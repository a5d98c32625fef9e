#!/usr/bin/env python
"""Train ResNet-50 v1.5 on ImageNet-layout data with nnabla, on one process or under mpirun.

    python train_resnet50.py --config configs/cpu_demo.yaml --data-dir data/toy --output-dir runs/demo
    mpirun -np 4 python train_resnet50.py --config configs/cpu_demo.yaml --set comm.grid=2x2
    python train_resnet50.py --config configs/paper_224s.yaml --dry-run --world-size 2176 --local-size 4
    python train_resnet50.py --config configs/cpu_demo.yaml --output-dir runs/demo --resume
    mpirun -np 4 python train_resnet50.py --config configs/cpu_demo.yaml --rehearse-gpu

The run writes OUTPUT_DIR/config.yaml (the resolved config), log.jsonl (one JSON object per
event), mlperf.log (MLPerf's :::MLLOG format), summary.json, checkpoints/step-*.npz and
final_params.h5. README: "Logs", "Resume".
"""
import os
import sys

REPO = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("NNABLA_CONFIG_FILE_PATH", os.path.join(REPO, "nnabla.conf"))

import argparse  # noqa: E402
import atexit  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402
import nnabla as nn  # noqa: E402

from comm import CommError, create as create_communicator, launched_by_mpi  # noqa: E402
from comm import job  # noqa: E402
from data.build import build_loaders, list_data  # noqa: E402
from data.imagefolder import DataError  # noqa: E402
from data.sampler import padded_epoch_length  # noqa: E402
from models.resnet import ResNet, count_parameters  # noqa: E402
from schedules.batch import ScheduleError  # noqa: E402
from schedules.schedule import TrainingSchedule  # noqa: E402
from training import loss_scaling, run_state  # noqa: E402
from training.checkpoint import CheckpointError  # noqa: E402
from training.config import ConfigError, dump_yaml, load_config, to_dict  # noqa: E402
from training.device import (Exchange, LossSum, backward, check_devices,  # noqa: E402
                             check_gpu_stack, contexts)
from training.dry_run import (IMAGENET_TRAIN_IMAGES, preset_for, print_gpu_plan,  # noqa: E402
                              print_plan, print_predictions)
from training.evaluate import average_bn_statistics, evaluate  # noqa: E402
from training.finish import finish_run  # noqa: E402
from training.graphs import TrainGraphs, build_val_graph  # noqa: E402
from training.meters import Meters  # noqa: E402
from training.mlperf_log import MLPerfLog  # noqa: E402
from training.optim import Optimizer  # noqa: E402
from training.output_dir import OutputDirError, RunLock, check_path, run_files  # noqa: E402
from training.progress import Progress, format_seconds  # noqa: E402
from training.runlog import RunLog, truncate_log  # noqa: E402
from training.signals import StopRequest  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--config", help="recipe YAML under configs/ (defaults: training/config.py)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.base_lr=0.2 (repeatable)")
    p.add_argument("--data-dir", help="ImageNet layout: DIR/train/<class>/*, DIR/val/<class>/*")
    p.add_argument("--output-dir", help="where the run is written (default runs/<config name>)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="CHECKPOINT",
                   help="continue from the latest checkpoint in the output dir (a fresh start "
                        "if there is none), or from the given checkpoint file")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an output dir that holds a run: its files move into "
                        "OUTPUT_DIR/replaced-<time>/ (nothing is deleted)")
    p.add_argument("--accept-changes", action="store_true",
                   help="--resume a checkpoint trained with another data set, precision, world "
                        "size or schedule (refused without it); the changes are listed")
    p.add_argument("--dry-run", action="store_true",
                   help="build the model, schedule and data listing, print the plan, exit")
    p.add_argument("--world-size", type=int, metavar="N",
                   help="dry run: plan for N ranks (default: the actual world size)")
    p.add_argument("--local-size", type=int, metavar="G",
                   help="dry run: ranks (GPUs) per node, for the plan's node count")
    p.add_argument("--plot-schedule", metavar="PNG",
                   help="dry run: also draw the global batch and learning rate over training")
    p.add_argument("--preset", metavar="NAME",
                   help="dry run: predict step and all-reduce times on this cluster preset of "
                        "scale_model/presets.py (default: abci2-v100 with --local-size 4, abci3-h200 "
                        "with 8)")
    p.add_argument("--rehearse-gpu", action="store_true",
                   help="run the GPU path (device=gpu) on CPU ranks: nnabla's CPU contexts for "
                        "cudnn's, rehearsal/'s double of nnabla's NCCL communicator (README "
                        "\"GPU\"); for machines without a GPU")
    p.add_argument("--param-digest", action="store_true",
                   help="every rank writes OUTPUT_DIR/param_digest.rank<R> at the end: sha256 of "
                        "the trained parameters and of the BN statistics, one line each "
                        "(shows whether ranks stayed in sync, or two runs ended alike)")
    return p.parse_args(argv)


# The trainer's own errors: each message is one line naming the problem and the fix.
USER_ERRORS = (ConfigError, DataError, ScheduleError, run_state.ResumeError, CommError,
               CheckpointError, OutputDirError)


def fail(message, comm=None):
    """The problem (one line; a few when it lists files), then a non-zero exit. Given a
    communicator of several ranks it ends the whole job: a rank that exited alone would
    leave the others waiting in their next collective."""
    text = "\n".join(f"error: {line}" for line in str(message).splitlines())
    if comm is not None and comm.size > 1:
        job.run_at_abort()
        comm.abort(text)
    sys.exit(text)


def os_error_line(e):
    """An OSError of the file system (full disk, quota, read-only, I/O) as one line."""
    where = f" {e.filename}" if e.filename else ""
    return f"cannot write or read{where}: {e.strerror or e}; check the disk and its free space"


# --- helpers -------------------------------------------------------------------------------
def git_commit():
    try:
        return subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def crossed(before, after, every, first=None):
    """Did progress cross ``first``, ``first + every``, ``first + 2 every``, ... (epochs;
    ``first`` defaults to ``every``: its multiples) between two points?"""
    first = every if first is None else first
    count = lambda epoch: math.floor((epoch - first) / every + 1e-9)  # noqa: E731
    return every > 0 and count(after) > count(before) and count(after) >= 0


def check_and_plan(args, cfg, comm, output_dir, say):
    """Everything that can be checked before work is spent: arguments, data, classes, the
    batch schedule for this world size, the checkpoint to resume, the output dir. Each
    problem ends the job with one line. Returns (listing, schedule, world_size, resume)."""
    rank0 = comm.rank == 0
    if not args.dry_run:
        check_path(output_dir)
    if args.accept_changes and not args.resume:
        fail("--accept-changes qualifies --resume: add --resume, or drop it")
    if not args.dry_run and (args.world_size or args.local_size or args.plot_schedule
                             or args.preset):
        fail("--world-size, --local-size, --plot-schedule and --preset plan a run: add --dry-run "
             "(a real run takes its ranks from mpirun)")
    if args.preset:
        from scale_model.presets import PRESETS
        if args.preset not in PRESETS:
            fail(f"--preset {args.preset}: unknown; the scale model knows {', '.join(PRESETS)}")
    if args.dry_run and args.resume:
        fail("--resume continues a run; a dry run trains nothing: drop one of them")
    listing = None
    if cfg.data.dir or cfg.data.backend == "synthetic" or not args.dry_run:
        try:
            listing = list_data(cfg.data)
        except DataError as e:
            fail(str(e), comm)
    if listing is not None and len(listing[0].classes) < 2:
        fail(f"the data set has {len(listing[0].classes)} class ({listing[0].root}): a "
             "classifier needs at least 2 class folders", comm)
    if cfg.model.num_classes is None:
        if listing is None:
            fail("model.num_classes is not set and no --data-dir was given to count classes; "
                 "pass --data-dir or --set model.num_classes=1000", comm)
        cfg.model.num_classes = len(listing[0].classes)
    elif listing is not None and len(listing[0].classes) > cfg.model.num_classes:
        fail(f"the data set has {len(listing[0].classes)} classes but model.num_classes="
             f"{cfg.model.num_classes}; set it to null or to at least that", comm)
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
        fail(f"{e} (for {world_size:,} ranks)", comm)
    resume = None
    if args.resume:
        resume = run_state.find(args.resume, output_dir, warn=say)
        if resume is not None:
            accepted = run_state.check_compatible(
                resume[2], cfg, comm.size, run_state.data_identity(listing[0]),
                args.accept_changes)
            for change in accepted:
                say(f"resume: --accept-changes: the checkpoint was trained with {change}")
        if resume is None:
            say(f"resume: no checkpoint in {run_state.checkpoint_dir(output_dir)}: "
                "starting from the beginning")
    elif not args.dry_run and not args.overwrite and set(run_files(output_dir)) & {
            "log.jsonl", "checkpoints", "summary.json"}:
        fail(f"{output_dir} already holds a run; pass --resume to continue it, --overwrite to "
             "start afresh (the old run is moved aside), or choose another --output-dir", comm)
    if not args.dry_run and rank0:     # one run per output dir, then the dir itself
        lock = RunLock(output_dir, say).acquire() if os.path.isdir(output_dir) else None
        # an --overwrite, or a --resume with nothing to resume, starts from scratch
        moved = run_state.prepare_output_dir(output_dir, replace=args.overwrite or (
            args.resume is not None and resume is None))
        lock = lock or RunLock(output_dir, say).acquire()
        job.at_abort(lock.release)
        atexit.register(lock.release)
        if moved:
            say(f"output dir: the previous run's files moved to {moved}")
    comm.barrier()   # every rank has passed the checks before rank 0 writes anything

    return listing, schedule, world_size, resume


# --- main ----------------------------------------------------------------------------------
def main(argv=None):
    """Run; the trainer's own errors and file-system errors end as one line (the whole job
    under mpirun); any other exception, in any thread, names rank and host and aborts."""
    job.abort_on_uncaught()
    state = SimpleNamespace(comm=None)
    try:
        return train(parse_args(argv), state)
    except USER_ERRORS as e:
        fail(str(e), state.comm)
    except OSError as e:
        fail(os_error_line(e), state.comm)


def train(args, state):
    try:
        cfg = load_config(args.config, args.set + (["device=gpu"] if args.rehearse_gpu else []))
    except ConfigError as e:
        fail(str(e))
    if args.data_dir:
        cfg.data.dir = args.data_dir
    recipe = os.path.splitext(os.path.basename(args.config or "default"))[0]
    output_dir = (args.output_dir if args.output_dir is not None
                  else os.path.join("runs", recipe))
    rehearse = args.rehearse_gpu     # implies device=gpu (set above, before the checks)
    if rehearse:
        if args.dry_run:
            fail("--rehearse-gpu runs the GPU path on CPU ranks and --dry-run runs nothing: "
                 "drop one of them")
        import rehearsal
    gpu = cfg.device == "gpu" and not args.dry_run   # a dry run plans on any machine
    if gpu and not rehearse:  # each missing piece of the GPU stack is one line, before any work
        problems = check_gpu_stack(multi_rank=launched_by_mpi())
        if problems:
            sys.exit("\n".join(f"error: {p}" for p in problems))

    def gpu_contexts(device_id=0):    # a rehearsal's CPU contexts stand in for cudnn's
        return rehearsal.contexts(cfg.type_config) if rehearse else \
            contexts("gpu", cfg.type_config, device_id)

    # One process: a local communicator. Under mpirun: cfg.comm's algorithm and grid, on MPI
    # (CPU, numpy) or on nnabla's NCCL communicator (GPU, NdArrays); NCCL picks the device.
    ctx, float_ctx = gpu_contexts() if gpu else contexts("cpu", cfg.type_config)
    nccl = gpu and launched_by_mpi()
    problem = check_devices() if nccl and not rehearse else None
    if problem:     # nnabla's init would fail on some ranks and hang the others
        print(f"error: {problem}", file=sys.stderr, flush=True)
        job.abort_job(1)
    try:
        comm = create_communicator(
            cfg.comm.algorithm, cfg.comm.grid, backend="nccl" if nccl else "mpi",
            bucket_mb=cfg.comm.bucket_mb, wire_dtype=cfg.comm.wire_dtype,
            timeout_s=cfg.comm.timeout_s, column_phase=cfg.comm.column_phase,
            **({"ctx": ctx} if nccl else {}),
            **({"nnabla_communicator": rehearsal.MultiProcessDataParallelCommunicator}
               if nccl and rehearse else {}))
    except CommError as e:     # may differ between ranks (size, devices): end every rank
        print(f"error: {e}", file=sys.stderr, flush=True)
        job.abort_job(1)
    state.comm = comm
    if gpu:     # the rank's GPU: its local rank on the node, as nnabla-examples do
        ctx, float_ctx = gpu_contexts(comm.local_rank)
    rank0 = comm.rank == 0
    say = print if rank0 else (lambda *a, **k: None)
    if cfg.note:
        say(f"note: {cfg.note}")
    if rehearse:     # said once, in the run's first lines
        for line in rehearsal.NOT_REHEARSED:
            say(line)
        if cfg.data.device == "gpu":
            say(rehearsal.DATA_ON_CPU)
            cfg.data.device = "cpu"
        if cfg.model.channel_last:
            say(rehearsal.NCHW_ON_CPU)
            cfg.model.channel_last = False

    listing, schedule, world_size, resume = check_and_plan(args, cfg, comm, output_dir, say)
    if not args.dry_run:     # MLPerf's init_start (a resumed run cuts the file back instead)
        mlperf = MLPerfLog(output_dir, cfg, comm.size, enabled=rank0,
                           resume_step=resume[2]["step"] if resume else None)

    # --- model, graphs (one per per-rank batch size, all sharing the weights), optimizer ---
    nn.set_default_context(ctx)      # a dry run builds the graph on the CPU, computes nothing
    model = ResNet(cfg.model.depth, cfg.model.num_classes, cfg.model.width, cfg.model.small_stem,
                   cfg.model.zero_init_last_bn, cfg.model.channel_last,
                   rng=np.random.RandomState(cfg.train.seed))
    graphs = TrainGraphs(cfg, model, schedule, loss_ctx=float_ctx)   # the loss in float
    graphs.for_stage(schedule.stage(0))
    val_net = build_val_graph(cfg, model)
    params, statistics = model.parameters(), model.statistics()
    n_params = count_parameters(params)

    if args.dry_run:
        print_plan(cfg, schedule, n_params, listing, world_size, args.local_size)
        if cfg.device == "gpu":
            print_gpu_plan(cfg, schedule, world_size, args.local_size)
        preset = preset_for(args.local_size, args.preset)
        if preset:
            print_predictions(cfg, schedule, world_size, args.local_size, preset,
                              gradient_arrays=len(params), parameters=n_params)
        if args.plot_schedule:
            from training.schedule_plot import plot_schedule
            plot_schedule(schedule, args.plot_schedule, title=f"{recipe}: {world_size:,} ranks")
            print(f"plot       {args.plot_schedule}")
        return 0

    optimizer = Optimizer(params, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.optimizer,
                          cfg.optim.lars_coefficient, cfg.optim.lars_eps, float_ctx)
    all_params = {**params, **statistics}
    exchange = Exchange(comm, params, cfg.comm.backward_callback, float_ctx)
    half = cfg.type_config == "half"
    loss_sum = LossSum(float_ctx)
    probe = optimizer.grads_probe(float_ctx) if half else None
    scale = loss_scaling.LossScale(cfg.loss_scale.initial) if half else None

    # --- start fresh, or continue exactly where the checkpoint left off -------------------
    step, meta = 0, None
    if resume is not None:
        path = resume[0]
        step, meta = run_state.restore(resume, all_params, optimizer, schedule)
        if not run_state.same_on_every_rank(comm, step):
            fail(f"ranks found different checkpoints (rank {comm.rank}: step {step}): is "
                 f"{output_dir} on a file system every node sees?", comm)
        if half and meta.get("loss_scale"):
            scale = loss_scaling.LossScale(*meta["loss_scale"])
        if rank0:
            dropped = truncate_log(os.path.join(output_dir, "log.jsonl"), step)
            say(f"resume: step {step} of {schedule.total_steps} from {path}"
                + (f" ({dropped} log lines after it dropped, {mlperf.dropped} of mlperf.log)"
                   if dropped or mlperf.dropped else ""))
            changed = run_state.changed_settings(meta, cfg)
            if changed:
                say(f"resume: warning: settings changed since the checkpoint: {', '.join(changed)}")
    else:
        comm.bcast(exchange.arrays(all_params.values(), grad=False), root=0)  # all start alike

    train_set, val_set = listing
    try:
        loader, val_loader = build_loaders(
            cfg.data, train_set, val_set, seed=cfg.train.seed, val_batch_size=cfg.eval.batch_size,
            shard_id=comm.rank, num_shards=comm.size, channel_last=cfg.model.channel_last,
            half=half, device_id=comm.local_rank, state=meta and meta["stream"],
            ranks_per_node=comm.local_size)
    except DataError as e:      # e.g. data.shuffle=node on a node that lacks its shards
        fail(str(e), comm)
    if rank0:
        with open(os.path.join(output_dir, "config.yaml.tmp"), "w") as f:
            f.write(dump_yaml(cfg))
        os.replace(os.path.join(output_dir, "config.yaml.tmp"),
                   os.path.join(output_dir, "config.yaml"))
    log = RunLog(output_dir, enabled=rank0, thresholds=cfg.eval.top1_thresholds,
                 append=meta is not None, evals=meta["evals"] if meta else (),
                 tensorboard=cfg.train.tensorboard)
    meters = Meters(**(meta["meters"] if meta else {}))   # the clock starts after setup
    start_fields = dict(world_size=comm.size, parameters=n_params,
                        total_steps=schedule.total_steps, comm_algorithm=comm.algorithm,
                        comm_grid=f"{comm.grid[0]}x{comm.grid[1]}", argv=sys.argv[1:],
                        host=platform.node(), commit=git_commit(), rehearsal=rehearse)
    if meta is None:
        log.write("start", epoch=0.0, step=0, elapsed_s=0.0,
                  global_batch=schedule.stage(0).global_batch, schedule=schedule.rows(),
                  train_images=len(train_set), val_images=len(val_set),
                  excluded_images=train_set.excluded + val_set.excluded, config=to_dict(cfg),
                  nnabla=nn.__version__, python=platform.python_version(), **start_fields)
    else:
        log.write("resume", epoch=loader.epochs_done, step=step, elapsed_s=meters.elapsed(),
                  global_batch=schedule.stage(step).global_batch, checkpoint=path, **start_fields)

    def save_checkpoint():
        """Every rank takes part (BN statistics are averaged first); rank 0 writes."""
        average_bn_statistics(comm, exchange.arrays(statistics.values(), grad=False))
        if rank0:
            run_state.save(output_dir, step, all_params, optimizer,
                           run_state.make_meta(cfg, comm.size, loader.state(), meters, log.evals,
                                               scale, run_state.data_identity(train_set)),
                           keep=cfg.checkpoint.keep)

    mlperf.run_start(schedule, len(train_set), len(val_set))   # init_stop, run_start (fresh run)
    stop = StopRequest()
    progress = Progress(schedule.total_steps, initial_step=step, enabled=rank0)
    stage, status, lr = None, "completed", schedule.lr_at_step(step)

    # --- the loop: one update per iteration ----------------------------------------------
    while step < schedule.total_steps:
        if stage is None or step == stage.end_step:    # a stage begins: switch batch and hypers
            stage = schedule.stage(step)
            hyper = schedule.hyper(stage)
            train_net = graphs.for_stage(stage)
            optimizer.configure(hyper["momentum"], hyper["weight_decay"])
            if step == stage.first_step:     # (not again when a resume lands mid-stage)
                log.write("stage", epoch=loader.epochs_done, step=step,
                          elapsed_s=meters.elapsed(), global_batch=stage.global_batch,
                          lr=schedule.lr_at_step(step), stage=stage.index,
                          local_batch=stage.local_batch, accumulation=stage.accumulation,
                          steps=stage.steps, **hyper)
            progress.message(f"stage {stage.index} from step {step} (epoch "
                             f"{loader.epochs_done:.3f}): global batch {stage.global_batch}, "
                             f"{stage.local_batch} per rank x {stage.accumulation}")
        epoch_before = loader.epochs_done
        lr = schedule.lr_at_step(step)

        # One update = `accumulation` forward/backward passes; gradients add up in place.
        optimizer.zero_grad()
        loss_sum.reset()
        overlap = exchange.backward_callback(stage.accumulation)   # native NCCL only
        for _ in range(stage.accumulation):
            with meters.timing("data"):
                try:
                    if cfg.data.device == "gpu":     # DALI writes into the arrays on the GPU
                        loader.next_batch_into(train_net.image.data, train_net.label.data,
                                               stage.local_batch, ctx)
                    else:
                        train_net.image.d, train_net.label.d = loader.next_batch(
                            stage.local_batch)
                except DataError as e:   # a broken image: one line naming it and the fix
                    fail(str(e), comm)
            train_net.loss.forward(clear_no_need_grad=True)
            backward(train_net.loss, scale.scale if half else 1.0, overlap)
            loss_sum.add(train_net.loss)       # on the device: no host read per micro-batch

        # The gradients' all-reduce, then the update's one host read (the loss, and in half
        # whether every reduced gradient is finite), then one small full-precision exchange
        # of every rank's loss and any stop request, so all ranks see the same mean loss and
        # stop after the same step (a loss in float16 could round, or overflow into a false
        # divergence). In float a non-finite gradient shows in the loss (the next one at
        # the latest), so only half checks the gradients, where overflow is routine.
        with meters.timing("allreduce"):
            loss, stop_now, grads_ok = exchange(loss_sum.total, stop.requested,
                                                grads_done=overlap is not None, probe=probe)
        loss /= stage.accumulation
        finite = math.isfinite(loss) and grads_ok
        if half:     # FP16: an overflow skips the update and lowers the scale
            grad_scale = scale.scale
            scale, apply = loss_scaling.update(scale, not finite,
                                               cfg.loss_scale.growth_interval)
            if apply:
                optimizer.scale_grad(1.0 / (grad_scale * stage.accumulation))
                optimizer.step(lr)
            else:
                meters.skipped_updates += 1
            if not apply and scale.scale <= 1.0 and not math.isfinite(loss):
                status = f"diverged: loss {loss} at step {step + 1} with the loss scale at 1"
                break
        elif not finite:
            what = f"loss {loss}" if not math.isfinite(loss) else "gradients not finite"
            status = f"diverged: {what} at step {step + 1} (lr {lr:.4g})"
            break
        else:
            if stage.accumulation > 1:
                optimizer.scale_grad(1.0 / stage.accumulation)  # the mean over micro-steps
            optimizer.step(lr)
        step += 1
        meters.update(loss, stage.global_batch)
        epoch_now = loader.epochs_done
        progress.update(step, epoch_now, meters.mean_loss(), meters.images_per_s(), lr,
                        stage.global_batch)

        # --- log, evaluate, checkpoint (in that order: a checkpoint covers the lines) -----
        last = step == schedule.total_steps
        if step % cfg.train.log_every_steps == 0 or last:
            log.write("step", epoch=epoch_now, step=step, elapsed_s=meters.elapsed(),
                      global_batch=stage.global_batch, lr=lr, **meters.step_fields(),
                      **({"loss_scale": scale.scale} if half else {}))
        if crossed(epoch_before, epoch_now, 1.0):
            log.write("epoch", epoch=epoch_now, step=step, elapsed_s=meters.elapsed(),
                      global_batch=stage.global_batch, lr=lr, epoch_index=math.floor(epoch_now),
                      **meters.epoch_fields())
            mlperf.epoch_stop(step, epoch_now)
        evaluate_now = last or crossed(epoch_before, epoch_now, cfg.eval.every_epochs,
                                       cfg.eval.first_epoch)
        if evaluate_now:
            mlperf.eval_start(step, epoch_now)
            with meters.timing("eval"):
                average_bn_statistics(comm, exchange.arrays(statistics.values(), grad=False))
                try:
                    top1, top5, val_loss = evaluate(val_net, val_loader, comm,
                                                    ctx if cfg.data.device == "gpu" else None)
                except DataError as e:
                    fail(str(e), comm)
            log.write("eval", epoch=epoch_now, step=step, elapsed_s=meters.elapsed(),
                      val_top1=top1, val_top5=top5, val_loss=val_loss,
                      global_batch=stage.global_batch, lr=lr)
            mlperf.eval_stop(step, epoch_now, top1)
            progress.message(f"epoch {epoch_now:.2f}: val top-1 {top1:.4f} top-5 {top5:.4f} "
                             f"loss {val_loss:.4f} ({format_seconds(meters.elapsed())})")
        mlperf.next_update(step, epoch_before, epoch_now, evaluate_now)  # epoch/block/stage start
        ck = cfg.checkpoint
        if (last or stop_now or (ck.every_steps and step % ck.every_steps == 0)
                or crossed(epoch_before, epoch_now, ck.every_epochs)):
            save_checkpoint()
        if stop_now:
            status = "stopped"
            break

    # --- wrap up ---------------------------------------------------------------------------
    progress.close()
    loader.close()
    run = SimpleNamespace(cfg=cfg, comm=comm, log=log, mlperf=mlperf, meters=meters,
                          schedule=schedule, output_dir=output_dir, params=params,
                          statistics=statistics, n_params=n_params,
                          param_digest=args.param_digest)
    finish_run(run, step, stage, lr, status, stop.signal_name if status == "stopped" else None)
    return 0 if status in ("completed", "stopped") else 1


if __name__ == "__main__":
    sys.exit(main())
