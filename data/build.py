"""The data set and loaders a ``DataConfig`` describes: the trainer's one entry into data/.

``list_data(cfg)`` lists the images (folders, file lists or synthetic) and drops the files an
exclusion list names; ``build_loaders(cfg, ...)`` makes the training and validation loaders
of the configured backend for one rank. ``cfg`` is duck-typed (training/config.py's
``DataConfig``), so data/ imports nothing from the trainer, the model or the communicator.

Bad data policy (``data.on_bad_image``): ``error`` (default) lists every file; the first
file that cannot be decoded stops the run with one line naming it and the checker command.
``skip`` needs ``data.exclude_list``: the files it names (found by ``tools/check_dataset``)
are left out of the listing up front, so every epoch is still exact over the rest. A broken
file that is not on the list still stops the run: nothing is skipped silently.
"""
from .imagefolder import (DataError, _check_data_dir, exclude, list_file_lists, list_imagenet,
                          read_exclude_list)
from .packed import is_packed, list_packed


def list_data(cfg):
    """(train, val) listings with a shared class order."""
    if cfg.backend == "synthetic":
        from .synthetic import synthetic_listings
        return synthetic_listings(cfg.synthetic_train_size, cfg.synthetic_val_size,
                                  cfg.synthetic_classes)
    if uses_packed(cfg):
        return _list_packed(cfg)
    dropped = None       # read the exclusion list first: a typo fails before a long listing
    if cfg.on_bad_image == "skip" and cfg.exclude_list:
        dropped = read_exclude_list(cfg.dir, cfg.exclude_list)
    if cfg.train_list or cfg.val_list:
        train, val = list_file_lists(cfg.dir, cfg.train_list, cfg.val_list)
    else:
        train, val = list_imagenet(cfg.dir)
    if dropped:
        train, val = exclude(train, dropped), exclude(val, dropped)
    return train, val


def uses_packed(cfg):
    """data.format: packed, or auto on a directory that holds a packed set's index.json."""
    fmt = getattr(cfg, "format", "auto")
    return fmt == "packed" or (fmt == "auto" and is_packed(cfg.dir))


def _list_packed(cfg):
    _check_data_dir(cfg.dir)
    if cfg.train_list or cfg.val_list or cfg.exclude_list:
        raise DataError(f"{cfg.dir} is a packed data set (index.json): data.train_list, "
                        "data.val_list and data.exclude_list are for image folders; drop them "
                        "(prepare_imagenet already decoded every image)")
    return list_packed(cfg.dir)


def _loader_classes(cfg, channel_last, half, device_id):
    """(training loader class, validation loader class, keyword arguments both take) of
    ``cfg.backend``."""
    half = half and cfg.device == "gpu"
    common = dict(channel_last=channel_last)
    if cfg.backend == "synthetic":
        from .synthetic import SyntheticTrainLoader as Train, SyntheticValLoader as Val
        common["half"] = half
    elif cfg.backend == "dali":
        from .dali_loader import DaliTrainLoader as Train, DaliValLoader as Val
        common.update(half=half, device=cfg.device, device_id=device_id)
    elif cfg.backend == "pil":
        from .pil_loader import PilTrainLoader as Train, PilValLoader as Val
    else:
        raise ValueError(f"unknown data backend {cfg.backend!r}")
    return Train, Val, common


def build_loaders(cfg, train_set, val_set, *, seed, val_batch_size, shard_id=0, num_shards=1,
                  channel_last=False, half=False, device_id=None, state=None, ranks_per_node=1):
    """(training loader, validation loader) of rank ``shard_id`` of ``num_shards``.

    With data.shuffle=node the training loader reads the share of node
    ``shard_id // ranks_per_node`` only (data/node_shuffle.py); validation is global.

    ``half`` asks for float16 images (DALI on a GPU only; the CPU graph takes float32).
    ``device_id`` is the rank's GPU (its local rank) when ``cfg.device == "gpu"``.
    """
    Train, _, common = _loader_classes(cfg, channel_last, half, device_id)
    train_shard, train_shards = shard_id, num_shards
    if getattr(cfg, "shuffle", "global") == "node":
        from .node_shuffle import node_share
        node, nodes = divmod(shard_id, ranks_per_node)[0], num_shards // ranks_per_node
        train_set = node_share(train_set, node, nodes, ranks_per_node)
        train_shard, train_shards = shard_id % ranks_per_node, ranks_per_node
        seed = seed * 1000003 + node     # augmentation draws are per node-local sample index
    train = Train(train_set, cfg.image_size, shard_id=train_shard, num_shards=train_shards,
                  seed=seed, num_threads=cfg.num_threads, min_crop_area=cfg.min_crop_area,
                  state=state, **common)
    return train, build_val_loader(cfg, val_set, val_batch_size, shard_id, num_shards,
                                   channel_last=channel_last, half=half, device_id=device_id)


def build_val_loader(cfg, val_set, batch_size, shard_id=0, num_shards=1, channel_last=False,
                     half=False, device_id=None):
    """The validation loader alone, exactly as ``build_loaders`` makes it (tools/evaluate
    scores saved parameters with it)."""
    _, Val, common = _loader_classes(cfg, channel_last, half, device_id)
    return Val(val_set, cfg.image_size, batch_size, shard_id=shard_id, num_shards=num_shards,
               resize_ratio=cfg.val_resize_ratio, num_threads=cfg.num_threads, **common)
