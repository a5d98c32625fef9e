#!/usr/bin/env python
"""Train ResNet-50 v1.5 on ImageNet-layout data with nnabla, on one process or under mpirun.

    python train_resnet50.py --config configs/cpu_demo.yaml --data-dir data/toy --output-dir runs/demo
    mpirun -np 4 python train_resnet50.py --config configs/cpu_demo.yaml --set comm.grid=2x2
    python train_resnet50.py --config configs/paper_224s.yaml --dry-run --world-size 2176 --local-size 4
    python train_resnet50.py --config configs/cpu_demo.yaml --output-dir runs/demo --resume
    mpirun -np 4 python train_resnet50.py --config configs/cpu_demo.yaml --rehearse-gpu

The run writes OUTPUT_DIR/config.yaml (the resolved config), log.jsonl (one JSON object per
event), mlperf.log (MLPerf's :::MLLOG format), summary.json, checkpoints/step-*.npz and
final_params.h5. docs/training.md: "Logs", "Training on several ranks, resuming".
"""
import os
import sys

REPO = os.path.dirname(os.path.abspath(__file__))
os.environ.setdefault("NNABLA_CONFIG_FILE_PATH", os.path.join(REPO, "nnabla.conf"))

import argparse  # noqa: E402

from comm import CommError, job  # noqa: E402
from data.imagefolder import DataError  # noqa: E402
from models.resnet import count_parameters  # noqa: E402
from schedules.batch import ScheduleError  # noqa: E402
from training.checkpoint import CheckpointError  # noqa: E402
from training.config import ConfigError  # noqa: E402
from training.dry_run import preset_for, print_gpu_plan, print_plan, print_predictions  # noqa: E402
from training.finish import finish_run  # noqa: E402
from training.output_dir import OutputDirError  # noqa: E402
from training.preflight import check_and_plan  # noqa: E402
from training.run_state import ResumeError  # noqa: E402
from training.runtime import StartError, build_runtime, load_run_config  # noqa: E402
from training.trainer import Trainer, build_model  # noqa: E402


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
                        "cudnn's, rehearsal/'s double of nnabla's NCCL communicator "
                        "(docs/gpu.md); for machines without a GPU")
    p.add_argument("--param-digest", action="store_true",
                   help="every rank writes OUTPUT_DIR/param_digest.rank<R> at the end: sha256 of "
                        "the trained parameters and of the BN statistics, one line each "
                        "(shows whether ranks stayed in sync, or two runs ended alike)")
    return p.parse_args(argv)


# The trainer's own errors: each message is one line naming the problem and the fix.
USER_ERRORS = (ConfigError, DataError, ScheduleError, ResumeError, CommError, CheckpointError,
               OutputDirError, StartError)


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


def main(argv=None):
    """Check, plan, train. The trainer's own errors and file-system errors end as one line
    (the whole job under mpirun); any other exception, in any thread, names the rank and
    host and aborts the job (comm/job.py)."""
    job.abort_on_uncaught()
    comm = None
    try:
        args = parse_args(argv)
        cfg, notes = load_run_config(args)
        recipe = os.path.splitext(os.path.basename(args.config or "default"))[0]
        output_dir = (args.output_dir if args.output_dir is not None
                      else os.path.join("runs", recipe))
        runtime = build_runtime(cfg, args.rehearse_gpu, args.dry_run)
        comm = runtime.comm
        say = print if comm.rank == 0 else (lambda *a, **k: None)
        for line in ([f"note: {cfg.note}"] if cfg.note else []) + notes:
            say(line)      # said once, in the run's first lines
        plan = check_and_plan(args, cfg, comm, output_dir, say)
        if args.dry_run:
            return dry_run(args, cfg, runtime, plan, recipe)
        trainer = Trainer(cfg, runtime, plan, output_dir, args.param_digest)
        trainer.start()
        result = trainer.train()
        finish_run(trainer, result)
        return 0 if result.status in ("completed", "stopped") else 1
    except StartError as e:
        fail(str(e), None if e.same_on_every_rank else comm)
    except USER_ERRORS as e:
        fail(str(e), comm)
    except OSError as e:
        fail(os_error_line(e), comm)


def dry_run(args, cfg, runtime, plan, recipe):
    """Build the model (to count it) and print the plan; computes nothing."""
    model, _, _ = build_model(cfg, plan.schedule, runtime.ctx, runtime.float_ctx)
    params = model.parameters()
    n_params, schedule, world_size = count_parameters(params), plan.schedule, plan.world_size
    print_plan(cfg, schedule, n_params, plan.listing, world_size, args.local_size)
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


if __name__ == "__main__":
    sys.exit(main())
