"""What `train_resnet50.py --dry-run` prints: the whole plan of a run, checked, without training.

A cluster recipe can be validated on a laptop (`--world-size 2176 --local-size 4`): the model
is built at full size and counted, the batch schedule resolved for that many ranks, and the
data listed when a directory is given.
"""
IMAGENET_TRAIN_IMAGES = 1281167


def print_shuffle(cfg, listing, world_size, local_size):
    """data.shuffle and what it costs (data/node_shuffle.py)."""
    packed = listing is not None and hasattr(listing[0], "shards")
    if packed:
        print(f"format     packed: {len(listing[0].shards)} training shards, read by index "
              "(no listing, one positioned read per sample)")
    if cfg.data.shuffle == "node":
        from data.node_shuffle import TRADE_OFF
        nodes = world_size // (local_size or 1)
        print(f"shuffle    node: {TRADE_OFF.format(nodes=f'{nodes:,}')}")
    elif packed:
        print("shuffle    global: one permutation of all training images per epoch, so every "
              "node holds every shard (data.shuffle=node: each node only 1/N)")


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
        excluded = train.excluded + val.excluded
        print(f"data       {len(train):,} training / {len(val):,} validation images, "
              f"{len(train.classes)} classes, in {cfg.data.dir or train.root}"
              + (f" ({excluded} excluded)" if excluded else ""))
    print_shuffle(cfg, listing, world_size, local_size)
    nodes = f" = {world_size // local_size:,} nodes x {local_size}" if local_size else ""
    print(f"ranks      {world_size:,}{nodes}; batch mode {cfg.batch.mode}"
          + (f", max {cfg.batch.max_local_batch} per rank" if cfg.batch.max_local_batch else ""))
    print(f"comm       {cfg.comm.algorithm}, grid {cfg.comm.grid}, buckets of "
          f"{cfg.comm.bucket_mb:g} MB" + (f", {cfg.comm.wire_dtype} on the wire"
                                          if cfg.comm.wire_dtype else ""))
    print(f"lr         {describe_rate(cfg)}; warm-up {o.warmup_epochs:g} epochs from "
          f"{o.warmup_start_factor:g} x peak; {o.decay} decay"
          + (f" (power {o.poly_power:g})" if o.decay == "poly" else "")
          + (f" to {o.end_lr:g}" if o.end_lr is not None else
             f" to {o.final_lr_factor:g} x peak" if o.decay != "step" else "")
          + f" at {cfg.train.epochs:g} epochs")
    if o.optimizer == "lars":
        print(f"optimizer  lars as MLPerf's reference: trust {o.lars_coefficient:g} |w| / (|g| + "
              f"wd |w| + {o.lars_eps:g}) on conv/affine weights; BN and biases: momentum, no "
              "decay, no trust ratio")
    else:
        print("optimizer  momentum SGD, weight decay not on BN/bias")
    e, m = cfg.eval, cfg.mlperf
    first = e.first_epoch if e.first_epoch is not None else e.every_epochs
    print(f"eval       every {e.every_epochs:g} epochs from epoch {first:g}, and at the end"
          + (f"; mlperf.log ({m.division} division), target top-1 {m.target_top1:g}"
             if m.log else ""))
    c = cfg.checkpoint
    every = " and ".join(e for e in (f"{c.every_steps} steps" if c.every_steps else "",
                                     f"{c.every_epochs:g} epochs" if c.every_epochs else "") if e)
    print(f"checkpoint {'every ' + every + ', ' if every else ''}at the end and on "
          f"SIGUSR1/SIGTERM; newest {c.keep or 'all'} kept")
    print(schedule.table())


def describe_rate(cfg):
    o, b = cfg.optim, cfg.batch
    if o.peak_lr is not None:
        text = f"peak {o.peak_lr:g} (absolute)"
    elif o.base_lr is not None:
        text = (f"{o.base_lr:g} per 256 samples, {o.lr_scaling} in the "
                f"{'current stage' if b.lr_batch == 'stage' else 'first stage'}'s global batch")
    else:
        text = "peak per stage"
    if any(isinstance(s, dict) and s.get("peak_lr") is not None for s in b.stages):
        text += " (a stage's own peak_lr wins: column peak)"
    return text


def print_gpu_plan(cfg, schedule, world_size, local_size):
    """What a GPU run would do on each rank: contexts, precision, loss scaling, NCCL groups."""
    from comm import plan as comm_plan
    half = cfg.type_config == "half"
    local = local_size or min(world_size, 8)
    print(f"gpu        context cudnn, type_config {cfg.type_config} "
          f"({'FP16 forward/backward, ' if half else ''}loss in float); device_id = local rank "
          f"0..{local - 1} on each node")
    if half:
        print(f"           dynamic loss scaling from {cfg.loss_scale.initial:g}: an overflow "
              f"skips the update and halves it, {cfg.loss_scale.growth_interval} good steps "
              "double it")
    per_gpu = ", ".join(f"{r['local_batch']} x {r['accumulation']}" for r in schedule.rows())
    data = {"dali": "DALI " + ("mixed decoding on the GPU" if cfg.data.device == "gpu"
                               else "on the CPU"), "pil": "Pillow on the CPU",
            "synthetic": "synthetic"}[cfg.data.backend]
    print(f"           per-GPU batch by stage: {per_gpu}; data: {data}")
    if world_size == 1:
        print("           one GPU: no communicator")
        return
    algorithm = cfg.comm.algorithm
    if algorithm == "native" and cfg.comm.backward_callback:
        print("nccl       native with comm.backward_callback: nnabla's all_reduce_callback "
              "reduces gradients during backward (one micro-batch per update), blocking the "
              "host in one MPI_Allreduce over all ranks per gradient array; not measured on a "
              "GPU against the plain all-reduce")
        return
    if algorithm == "native":
        print("nccl       native: NCCL's own all-reduce after backward "
              "(comm.backward_callback: false)")
        return
    shape = comm_plan.parse_grid(cfg.comm.grid) or (local, world_size // local)
    try:
        grid = comm_plan.Grid.from_shape(*shape, world_size, spec=cfg.comm.grid)
    except comm_plan.CommError as e:
        print(f"nccl       {e}")
        return
    groups = list(grid.groups())
    print(f"nccl       {algorithm} on grid {shape[0]}x{shape[1]}: every rank calls "
          f"new_group for all {len(groups)} groups in this order")
    for name, ranks in groups[:3] + ([("...", [])] if len(groups) > 6 else []) + groups[-3:]:
        if name == "...":
            print("           ...")
            continue
        shown = ranks if len(ranks) <= 8 else ranks[:4] + ["..."] + ranks[-2:]
        print(f"           {name}: ranks {', '.join(map(str, shown))}")


def preset_for(local_size, name=None):
    """The scale model's hardware preset: the one named, else by GPUs per node (4: ABCI 2.0
    V100 nodes, 8: ABCI 3.0 H200 nodes), else none."""
    return name or {4: "abci2-v100", 8: "abci3-h200"}.get(local_size)


def print_predictions(cfg, schedule, world_size, local_size, preset, gradient_arrays=None,
                      parameters=None):
    """Predicted step, all-reduce and time-to-train from the scale model, per stage, then each
    assumption behind them on its own line. ``gradient_arrays``: the model's parameter arrays
    (all_reduce_callback's host checks); ``parameters``: its gradient elements."""
    from scale_model import calibration
    from scale_model import model as simulate
    from scale_model.presets import PresetError
    grid = None if cfg.comm.grid == "auto" else tuple(map(int, cfg.comm.grid.split("x")))
    # the gradients' wire format: comm.wire_dtype (MPI) if set, else the compute precision
    wire = cfg.comm.wire_dtype or ("float16" if cfg.type_config == "half" else "float32")
    why_wire = f"comm.wire_dtype {wire}" if cfg.comm.wire_dtype else \
        f"type_config {cfg.type_config}"
    bytes_per_param = 2 if wire == "float16" else 4
    parameters = parameters or simulate.RESNET50_PARAMETERS
    backend = "nccl" if cfg.device == "gpu" else "mpi"    # as train_resnet50.py under mpirun
    stages, assumptions = [], []
    try:
        for row in schedule.rows():
            overlap, reason = simulate.trainer_overlap(cfg.comm.algorithm, backend,
                                                       cfg.comm.backward_callback,
                                                       row["accumulation"], world_size)
            checks = (gradient_arrays or simulate.RESNET50_GRADIENT_ARRAYS) \
                if simulate.trainer_uses_callback(cfg.comm.algorithm, backend,
                                                  cfg.comm.backward_callback,
                                                  row["accumulation"], world_size) else 0
            result = simulate.predict_step(row["local_batch"], world_size, local_size, preset,
                                           cfg.comm.algorithm, grid, parameters=parameters,
                                           bytes_per_param=bytes_per_param, overlap=overlap,
                                           callback_checks=checks)
            lines = simulate.describe_step(result)
            print(f"stage {row['stage']}    " + lines[0].split("  ", 1)[1])
            print("           " + lines[1])
            assumptions += simulate.describe_assumptions(result, reason)
            stages.append({"until_epoch": row["end_epoch"], "global_batch": row["global_batch"],
                           "overlap": overlap, "callback_checks": checks})
        ttt = simulate.time_to_train(stages, world_size, preset, cfg.comm.algorithm, grid,
                                     local_size, parameters=parameters,
                                     bytes_per_param=bytes_per_param)
    except (simulate.SimError, PresetError) as e:
        print(f"predicted  not available: {e}")
        return
    print(f"predicted  time to train {ttt['train_s']:.0f} s over {schedule.plan.epochs:g} epochs "
          f"(evaluation, start-up and data loading not modelled; docs/scale_model.md)")
    print(f"band       {calibration.error_band()}")
    assumptions.insert(1, f"gradients {8 * bytes_per_param}-bit on the wire ({why_wire}): "
                          f"{bytes_per_param} B x {parameters:,} parameters = "
                          f"{bytes_per_param * parameters / 1e6:.1f} MB as one all-reduce "
                          f"per update (the trainer's {cfg.comm.bucket_mb:g} MB buckets, each "
                          "one more call latency, and its small control all-reduce over the "
                          "host are not modelled)")
    if backend == "mpi" and cfg.comm.algorithm == "native":
        assumptions.append("native on the MPI backend is MPI's own all-reduce: NCCL's tree "
                           "stands in for it")
    for line in dict.fromkeys(assumptions):       # once each, in order (stages repeat them)
        print(f"assumed:   {line}")
