"""Everything checked before work is spent, as errors raised (the entry point turns each
into its one ``error:`` line): the arguments, the data and its classes, the batch schedule
for this world size, the checkpoint to resume, the output directory and its lock."""
import atexit
import os
from typing import Any, NamedTuple, Optional

from comm import job
from data.build import list_data
from data.sampler import padded_epoch_length
from schedules.batch import ScheduleError
from schedules.schedule import TrainingSchedule

from . import run_state
from .dry_run import IMAGENET_TRAIN_IMAGES
from .output_dir import RunLock, check_path, run_files
from .runtime import StartError


class Plan(NamedTuple):
    listing: Any                 # (train, val) listings; None for a dry run without data
    schedule: TrainingSchedule
    world_size: int              # the run's, or the dry run's --world-size
    resume: Optional[run_state.FoundCheckpoint]


def check_and_plan(args, cfg, comm, output_dir, say):
    """The Plan of this run, or StartError/DataError/ResumeError/...: nothing written before
    every rank has passed every check (rank 0 then takes the lock and prepares the dir)."""
    check_arguments(args, output_dir)
    listing = list_data(cfg.data) if (cfg.data.dir or cfg.data.backend == "synthetic"
                                      or not args.dry_run) else None
    check_classes(cfg, listing)
    world_size = args.world_size or comm.size
    if world_size < 1 or (args.local_size is not None and (
            args.local_size < 1 or world_size % args.local_size)):
        raise StartError(f"--world-size {world_size} must be a positive multiple of "
                         f"--local-size {args.local_size}", same_on_every_rank=True)
    epoch_length = padded_epoch_length(len(listing[0]) if listing else IMAGENET_TRAIN_IMAGES,
                                       world_size)
    try:
        schedule = TrainingSchedule.from_config(cfg, epoch_length, world_size)
    except ScheduleError as e:
        raise StartError(f"{e} (for {world_size:,} ranks)") from None
    resume = find_resume(args, cfg, comm, output_dir, listing, say)
    if not args.dry_run and comm.rank == 0:
        prepare_output(args, output_dir, resume, say)
    comm.barrier()   # every rank has passed the checks before rank 0 writes anything
    return Plan(listing, schedule, world_size, resume)


def check_arguments(args, output_dir):
    """Flags that contradict each other, and where the run would be written."""
    def refuse(message):
        raise StartError(message, same_on_every_rank=True)
    if not args.dry_run:
        check_path(output_dir)
    if args.accept_changes and not args.resume:
        refuse("--accept-changes qualifies --resume: add --resume, or drop it")
    if not args.dry_run and (args.world_size or args.local_size or args.plot_schedule
                             or args.preset):
        refuse("--world-size, --local-size, --plot-schedule and --preset plan a run: add "
               "--dry-run (a real run takes its ranks from mpirun)")
    if args.preset:
        from scale_model.presets import PRESETS
        if args.preset not in PRESETS:
            refuse(f"--preset {args.preset}: unknown; the scale model knows "
                   f"{', '.join(PRESETS)}")
    if args.dry_run and args.resume:
        refuse("--resume continues a run; a dry run trains nothing: drop one of them")


def check_classes(cfg, listing):
    """At least two classes, and a model with room for all of them (null: as many)."""
    classes = len(listing[0].classes) if listing is not None else None
    if classes is not None and classes < 2:
        raise StartError(f"the data set has {classes} class ({listing[0].root}): a classifier "
                         "needs at least 2 class folders")
    if cfg.model.num_classes is None:
        if listing is None:
            raise StartError("model.num_classes is not set and no --data-dir was given to "
                             "count classes; pass --data-dir or --set model.num_classes=1000")
        cfg.model.num_classes = classes
    elif classes is not None and classes > cfg.model.num_classes:
        raise StartError(f"the data set has {classes} classes but model.num_classes="
                         f"{cfg.model.num_classes}; set it to null or to at least that")


def find_resume(args, cfg, comm, output_dir, listing, say):
    """The checkpoint --resume continues (checked against this run), or None; without
    --resume, an output dir that holds a run needs --overwrite."""
    if not args.resume:
        if not args.dry_run and not args.overwrite and set(run_files(output_dir)) & {
                "log.jsonl", "checkpoints", "summary.json"}:
            raise StartError(f"{output_dir} already holds a run; pass --resume to continue it, "
                             "--overwrite to start afresh (the old run is moved aside), or "
                             "choose another --output-dir")
        return None
    resume = run_state.find(args.resume, output_dir, warn=say)
    if resume is None:
        say(f"resume: no checkpoint in {run_state.checkpoint_dir(output_dir)}: "
            "starting from the beginning")
        return None
    accepted = run_state.check_compatible(resume.meta, cfg, comm.size,
                                          run_state.data_identity(listing[0]),
                                          args.accept_changes)
    for change in accepted:
        say(f"resume: --accept-changes: the checkpoint was trained with {change}")
    return resume


def prepare_output(args, output_dir, resume, say):
    """Rank 0: one run per output dir (the lock), then the dir; an --overwrite, or a
    --resume with nothing to resume, starts from scratch with the old run moved aside."""
    lock = RunLock(output_dir, say).acquire() if os.path.isdir(output_dir) else None
    moved = run_state.prepare_output_dir(output_dir, replace=args.overwrite or (
        args.resume is not None and resume is None))
    lock = lock or RunLock(output_dir, say).acquire()
    job.at_abort(lock.release)
    atexit.register(lock.release)
    if moved:
        say(f"output dir: the previous run's files moved to {moved}")
