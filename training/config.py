"""Typed run configuration: one YAML per recipe, ``--set section.key=value`` overrides.

Every key lives in a dataclass section below with its type and default, so the full set of
knobs is visible in one place and a typo is an error, not a silently ignored setting.
``load_config`` merges defaults <- YAML file <- overrides, checks types and values, and the
trainer writes the result to ``OUTPUT_DIR/config.yaml`` so every run records what it ran.
"""
import dataclasses
import difflib
import math
import typing
from dataclasses import dataclass, field
from typing import List, Optional

import yaml

from comm.plan import ALGORITHMS, COLUMN_PHASES, WIRE_DTYPES, CommError, parse_grid
from schedules.batch import MODES, ScheduleError, check_stages
from schedules.schedule import LR_BATCH


# ResNet depths models/resnet.py builds (tests/test_config.py checks they agree).
DEPTHS = (18, 34, 50, 101, 152)
# Buckets below 64 KiB make ResNet-50's 25M gradients thousands of tiny collectives per
# update: hours of latency that look like a hang.
MIN_BUCKET_MB = 1 / 16


class ConfigError(ValueError):
    """A config problem; the message names the key and how to fix it."""


@dataclass
class ModelConfig:
    depth: int = 50
    num_classes: Optional[int] = None     # None: the number of classes in the data set
    width: float = 1.0                     # channel multiplier; <1 only for CPU demos
    small_stem: bool = False               # 3x3/1 stem, no max-pool (32-64 px inputs)
    zero_init_last_bn: bool = True         # gamma=0 in each block's last BN (Goyal et al.)
    channel_last: bool = False             # NHWC; cuDNN only (nnabla's CPU convolution is NCHW)


@dataclass
class DataConfig:
    dir: Optional[str] = None              # ImageNet layout: DIR/train/<class>/*, DIR/val/<class>/*
    format: str = "auto"                   # auto | folder | packed (python -m data.prepare_imagenet)
    shuffle: str = "global"                # global: one permutation of all; node: each node its shards
    backend: str = "dali"                  # dali | pil | synthetic (docs/data.md)
    device: str = "cpu"                    # dali decoding: cpu | gpu (mixed, on the local rank's GPU)
    image_size: int = 224                  # training crop and validation crop, in pixels
    val_resize_ratio: float = 256 / 224    # validation: shorter side = image_size * ratio
    min_crop_area: float = 0.08            # random-resized-crop area range [min, 1]
    num_threads: int = 2                   # decoding threads per rank
    train_list: Optional[str] = None       # `path label` lines, paths relative to DIR/train
    val_list: Optional[str] = None         # the same for DIR/val; both or neither
    on_bad_image: str = "error"            # error | skip (skip drops the exclude_list files)
    exclude_list: Optional[str] = None     # from `python -m tools.check_dataset DIR --write-exclude`
    synthetic_train_size: int = 1281167    # backend synthetic: images per epoch (ImageNet-1k)
    synthetic_val_size: int = 50000
    synthetic_classes: int = 1000


@dataclass
class TrainConfig:
    epochs: float = 90.0
    global_batch: Optional[int] = 256      # samples per update, summed over all ranks;
                                           # null when batch.stages sets the batch
    seed: int = 0
    log_every_steps: int = 20              # a "step" line in log.jsonl every N updates
    tensorboard: bool = True               # the log's scalars also in OUTPUT_DIR/tb/ (rank 0)


@dataclass
class OptimConfig:
    optimizer: str = "momentum"            # momentum | lars (LARS on weights; BN/bias: momentum)
    base_lr: Optional[float] = 0.1         # per 256 samples, scaled by the global batch;
                                           # null when peak_lr states the rate
    peak_lr: Optional[float] = None        # absolute peak rate (every stage; a stage's own
                                           # peak_lr wins); LARS recipes state it this way
    lr_scaling: str = "linear"             # linear | sqrt (in global_batch / 256)
    momentum: float = 0.9
    weight_decay: float = 1e-4             # not applied to BN parameters and biases
    label_smoothing: float = 0.0
    warmup_epochs: float = 5.0             # linear, per iteration, from warmup_start_factor
    warmup_start_factor: float = 0.0       # first lr = factor * peak
    decay: str = "cosine"                  # cosine | poly | step
    poly_power: float = 2.0
    step_milestones: List[float] = field(default_factory=lambda: [30.0, 60.0, 80.0])
    step_gamma: float = 0.1
    final_lr_factor: float = 0.0           # cosine/poly end at factor * peak
    end_lr: Optional[float] = None         # or at this absolute rate (MLPerf closed: 1e-4)
    lars_coefficient: float = 0.001        # LARS trust coefficient (eta; MLPerf: 0.001)
    lars_eps: float = 0.0                  # LARS: added to the trust ratio's denominator
                                           # (MLPerf's closed rules: 0)


@dataclass
class BatchConfig:
    """Batch-size control (schedules/batch.py). Without stages: train.global_batch throughout."""
    stages: List[dict] = field(default_factory=list)   # [{until_epoch, global_batch, momentum?,
    #                                                     weight_decay?, label_smoothing?}, ...]
    mode: str = "grow_local"               # grow_local | accumulate
    max_local_batch: Optional[int] = None  # per-rank samples per forward/backward; null: no cap
    lr_batch: str = "stage"                # stage | first: the batch the lr scaling rule uses


@dataclass
class EvalConfig:
    every_epochs: float = 1.0              # validation every N epochs, and always at the end
    first_epoch: Optional[float] = None    # the first validation (then every_epochs apart);
                                           # null: at every_epochs. MLPerf: every 4, first <= 4
    batch_size: int = 100                  # per rank
    top1_thresholds: List[float] = field(default_factory=lambda: [0.5, 0.75, 0.9])


@dataclass
class MLPerfConfig:
    """OUTPUT_DIR/mlperf.log: the run in MLPerf Training's `:::MLLOG` format (training/mlperf_log.py;
    docs/mlperf_log.md). The submission_* fields describe who ran it, on what."""
    log: bool = True                       # write mlperf.log (rank 0)
    target_top1: float = 0.759             # MLPerf's ResNet-50 quality target: run_stop is
                                           # "success" if an evaluation reached it, else "aborted"
    org: str = "unknown"                   # submission_org
    platform: Optional[str] = None         # submission_platform; null: "<ranks>x<device>"
    division: str = "closed"               # closed | open (which rule set the checker applies)
    status: str = "research"               # cloud | onprem | preview | research


@dataclass
class CommConfig:
    """Gradient all-reduce across ranks (comm/; docs/comm.md)."""
    algorithm: str = "torus2d"             # torus2d | ring | hierarchical | native
    grid: str = "auto"                     # auto: X = ranks per node, Y = nodes; or "XxY"
    bucket_mb: float = 4.0                 # arrays are fused into flat buckets of this size
    wire_dtype: Optional[str] = None       # null: as stored | float16 | float32 on the wire
    timeout_s: float = 300.0               # watchdog: abort if a collective waits longer; 0 off
    column_phase: str = "auto"             # torus2d on MPI: ring where columns span nodes, else
    #   MPI_Allreduce (auto) | ring | allreduce  (docs/comm.md; measured in docs/results.md)
    backward_callback: bool = False        # native on NCCL: nnabla's all_reduce_callback during
    #   backward (not measured on a GPU; a blocking host MPI_Allreduce per gradient)


@dataclass
class CheckpointConfig:
    """Checkpoints for resuming (OUTPUT_DIR/checkpoints/step-*.npz); also written at the end
    and when SIGUSR1/SIGTERM asks the run to stop."""
    every_steps: int = 0                   # 0: not by steps
    every_epochs: float = 1.0              # 0: not by epochs
    keep: int = 3                          # the newest K are kept; 0 keeps all


@dataclass
class LossScaleConfig:
    """Dynamic loss scaling for type_config: half (training/loss_scaling.py)."""
    initial: float = 32768.0               # 2**15
    growth_interval: int = 2000            # double the scale after this many good steps


@dataclass
class Config:
    note: Optional[str] = None             # one line the dry run and the trainer print first
    device: str = "cpu"                    # cpu | gpu (gpu: dry runs only until GPU support)
    type_config: str = "float"             # float | half
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    comm: CommConfig = field(default_factory=CommConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    loss_scale: LossScaleConfig = field(default_factory=LossScaleConfig)
    mlperf: MLPerfConfig = field(default_factory=MLPerfConfig)


CHOICES = {
    "device": ("cpu", "gpu"),
    "type_config": ("float", "half"),
    "data.backend": ("dali", "pil", "synthetic"),
    "data.device": ("cpu", "gpu"),
    "data.on_bad_image": ("error", "skip"),
    "data.format": ("auto", "folder", "packed"),
    "data.shuffle": ("global", "node"),
    "optim.optimizer": ("momentum", "lars"),
    "optim.lr_scaling": ("linear", "sqrt"),
    "optim.decay": ("cosine", "poly", "step"),
    "batch.mode": MODES,
    "batch.lr_batch": LR_BATCH,
    "comm.algorithm": ALGORITHMS,
    "comm.wire_dtype": WIRE_DTYPES,
    "comm.column_phase": COLUMN_PHASES,
    "mlperf.division": ("closed", "open"),
    "mlperf.status": ("cloud", "onprem", "preview", "research"),
}
POSITIVE = ("model.width", "comm.bucket_mb", "train.epochs", "train.log_every_steps", "optim.lars_coefficient",
            "optim.poly_power", "eval.every_epochs", "eval.batch_size",
            "data.synthetic_train_size", "data.synthetic_val_size", "loss_scale.initial",
            "loss_scale.growth_interval")
NON_NEGATIVE = ("checkpoint.every_steps", "checkpoint.every_epochs", "checkpoint.keep",
                "optim.lars_eps", "optim.weight_decay", "optim.warmup_epochs")
FRACTIONS = ("optim.warmup_start_factor", "optim.final_lr_factor", "mlperf.target_top1")
# Keys with their own closed ranges [low, high] (None: unbounded); "(" marks an open end.
RANGES = {
    "train.seed": (0, 2 ** 32 - 1, "[]"),             # numpy's RandomState takes 32 bits
    "data.image_size": (8, 4096, "[]"),                # padding keeps >= 1 pixel at stride 32
    "data.min_crop_area": (0, 1, "(]"),                # a crop needs some area
    "data.val_resize_ratio": (1, 8, "[]"),             # the centre crop lies inside the resize
    "data.num_threads": (1, 256, "[]"),
    "data.synthetic_classes": (2, None, "[]"),
    "optim.momentum": (0, 1, "[)"),
    "optim.label_smoothing": (0, 1, "[)"),
    "optim.step_gamma": (0, 1, "(]"),                  # a step decay lowers the rate
    "comm.bucket_mb": (MIN_BUCKET_MB, None, "[]"),
}
# Optional keys that must be positive when they are set.
POSITIVE_OR_NULL = ("optim.base_lr", "optim.peak_lr", "eval.first_epoch")


# --- loading -----------------------------------------------------------------------------
def load_config(path=None, overrides=()):
    """defaults <- YAML at ``path`` <- ``overrides`` (["model.width=0.25", ...]); validated."""
    cfg = Config()
    if path is not None:
        try:
            with open(path) as f:
                doc = yaml.safe_load(f) or {}
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist; recipes live in configs/")
        except IsADirectoryError:
            raise ConfigError(f"--config {path} is a directory; give a recipe file, e.g. "
                              "configs/cpu_demo.yaml") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"config file {path} cannot be read "
                              f"({getattr(e, 'strerror', None) or e})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {path} is not valid YAML: {e}")
        if not isinstance(doc, dict):
            raise ConfigError(f"config file {path} must hold a mapping of sections")
        _merge(cfg, doc, prefix="", source=path)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. model.width=0.25")
        set_value(cfg, key.strip(), yaml.safe_load(text) if text.strip() else None,
                  source="--set")
    validate(cfg)
    return cfg


def _merge(node, doc, prefix, source):
    for key, value in doc.items():
        dotted = prefix + str(key)
        if isinstance(value, dict) and dataclasses.is_dataclass(_child(node, dotted, key, source)):
            _merge(getattr(node, key), value, dotted + ".", source)
        else:
            set_value(node, str(key), value, source, full_key=dotted)


def _child(node, dotted, key, source):
    names = [f.name for f in dataclasses.fields(node)]
    if key not in names:
        raise ConfigError(_unknown_key_message(dotted, node, key, source))
    return getattr(node, key)


def set_value(node, key, value, source, full_key=None):
    """Set dotted ``key`` under dataclass ``node`` with a type check."""
    full_key = full_key or key
    *parents, leaf = key.split(".")
    for p in parents:
        child = _child(node, full_key, p, source)
        if not dataclasses.is_dataclass(child):
            raise ConfigError(f"{source}: {full_key}: {p!r} is a value, not a section")
        node = child
    fields = {f.name: f for f in dataclasses.fields(node)}
    if leaf not in fields:
        raise ConfigError(_unknown_key_message(full_key, node, leaf, source))
    hint = typing.get_type_hints(type(node))[leaf]
    if dataclasses.is_dataclass(hint):
        raise ConfigError(f"{source}: {full_key} is a section; set its keys, e.g. "
                          f"{full_key}.{dataclasses.fields(hint)[0].name}=...")
    setattr(node, leaf, _coerce(value, hint, full_key, source))


def _unknown_key_message(full_key, node, leaf, source):
    names = [f.name for f in dataclasses.fields(node)]
    close = difflib.get_close_matches(leaf, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return (f"{source}: unknown config key {full_key!r}{hint}; valid keys here: "
            f"{', '.join(names)}")


def _coerce(value, hint, key, source):
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union and type(None) in args:          # Optional[X]
        if value is None:
            return None
        return _coerce(value, [a for a in args if a is not type(None)][0], key, source)
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]", source) if args else v
                for i, v in enumerate(value)]
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:        # YAML 1.1 reads 1e-4 (no dot) as a string; it is meant as a number
            return float(value)
        except ValueError:
            pass
    if hint is typing.Any or isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{source}: {key} must be {getattr(hint, '__name__', hint)}, "
                      f"got {value!r} ({type(value).__name__})")


# --- validation --------------------------------------------------------------------------
def get(cfg, dotted):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _non_finite(node, prefix=""):
    """The first dotted key holding NaN or infinity (lists and stage mappings included)."""
    items = ([(f.name, getattr(node, f.name)) for f in dataclasses.fields(node)]
             if dataclasses.is_dataclass(node) else
             list(node.items()) if isinstance(node, dict) else
             [(f"[{i}]", v) for i, v in enumerate(node)])
    for name, value in items:
        key = f"{prefix}{name}" if name.startswith("[") or not prefix else f"{prefix}.{name}"
        if isinstance(value, float) and not math.isfinite(value):
            return key, value
        if dataclasses.is_dataclass(value) or isinstance(value, (list, dict)):
            found = _non_finite(value, key)
            if found:
                return found
    return None


def _in_range(value, low, high, ends):
    return ((low is None or (value > low if ends[0] == "(" else value >= low)) and
            (high is None or (value < high if ends[1] == ")" else value <= high)))


def _range_text(low, high, ends):
    num = lambda x: str(x) if isinstance(x, int) else f"{x:g}"  # noqa: E731
    if high is None:
        return f"be {'>' if ends[0] == '(' else '>='} {num(low)}"
    return f"lie in {ends[0]}{num(low)}, {num(high)}{ends[1]}"


def _validate_ranges(cfg):
    if cfg.model.depth not in DEPTHS:
        raise ConfigError(f"model.depth={cfg.model.depth} must be one of "
                          f"{', '.join(map(str, DEPTHS))} (the ResNet depths)")
    for key, (low, high, ends) in RANGES.items():
        if not _in_range(get(cfg, key), low, high, ends):
            raise ConfigError(f"{key}={get(cfg, key)} must {_range_text(low, high, ends)}")
    for i, t in enumerate(cfg.eval.top1_thresholds):
        if not 0 < t <= 1:
            raise ConfigError(f"eval.top1_thresholds[{i}]={t} must be in (0, 1]")
    milestones = cfg.optim.step_milestones
    if any(b <= a for a, b in zip(milestones, milestones[1:])) or any(m <= 0 for m in milestones):
        raise ConfigError(f"optim.step_milestones={milestones} must be positive epochs in "
                          "increasing order")
    if cfg.optim.decay == "step" and milestones and milestones[-1] >= cfg.train.epochs:
        raise ConfigError(f"optim.step_milestones={milestones} must lie below train.epochs="
                          f"{cfg.train.epochs:g}")
    if cfg.comm.timeout_s and cfg.comm.timeout_s < 1:
        raise ConfigError(f"comm.timeout_s={cfg.comm.timeout_s} must be 0 (watchdog off) or "
                          ">= 1 second")


def validate(cfg):
    found = _non_finite(cfg)      # first: every comparison with NaN is false, so passes
    if found:
        raise ConfigError(f"{found[0]}={found[1]} must be a finite number")
    for key, allowed in CHOICES.items():
        if get(cfg, key) not in allowed:
            raise ConfigError(f"{key}={get(cfg, key)!r} is not one of "
                              f"{', '.join(map(str, allowed))}")
    for key in POSITIVE:
        if get(cfg, key) <= 0:
            raise ConfigError(f"{key}={get(cfg, key)} must be positive")
    for key in NON_NEGATIVE:
        if get(cfg, key) < 0:
            raise ConfigError(f"{key}={get(cfg, key)} must be 0 (off) or positive")
    for key in FRACTIONS:
        if not 0 <= get(cfg, key) <= 1:
            raise ConfigError(f"{key}={get(cfg, key)} must lie in [0, 1]")
    for key in POSITIVE_OR_NULL:
        if get(cfg, key) is not None and get(cfg, key) <= 0:
            raise ConfigError(f"{key}={get(cfg, key):g} must be positive, or null")
    if cfg.model.num_classes is not None and cfg.model.num_classes < 2:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes} must be at least 2, "
                          "or null to take it from the data set")
    _validate_batch(cfg)
    _validate_rate(cfg)
    _validate_eval(cfg)
    if cfg.optim.warmup_epochs >= cfg.train.epochs:
        raise ConfigError(f"optim.warmup_epochs={cfg.optim.warmup_epochs} must be less than "
                          f"train.epochs={cfg.train.epochs}")
    validate_data(cfg)
    try:
        parse_grid(cfg.comm.grid)
    except CommError as e:
        raise ConfigError(str(e))
    if cfg.comm.timeout_s < 0:
        raise ConfigError(f"comm.timeout_s={cfg.comm.timeout_s} must be >= 0 (0 turns the "
                          "watchdog off)")
    if cfg.comm.backward_callback and cfg.comm.algorithm != "native":
        raise ConfigError(f"comm.backward_callback=true needs comm.algorithm=native (nnabla's "
                          f"all_reduce_callback is NCCL's own all-reduce), not "
                          f"{cfg.comm.algorithm}")
    if cfg.model.channel_last and cfg.device == "cpu":
        raise ConfigError("model.channel_last=true needs device=gpu: nnabla's CPU convolution "
                          "supports only NCHW; drop the override for CPU runs")
    _validate_ranges(cfg)


def _validate_batch(cfg):
    """One way to set the batch: train.global_batch (constant) or batch.stages (a schedule)."""
    b, batch = cfg.batch, cfg.train.global_batch
    if b.max_local_batch is not None and b.max_local_batch <= 0:
        raise ConfigError(f"batch.max_local_batch={b.max_local_batch} must be positive or null")
    if not b.stages:
        if batch is None or batch <= 0:
            raise ConfigError(f"train.global_batch={batch} must be positive "
                              "(or give batch.stages instead)")
        return
    if batch is not None:
        raise ConfigError(f"train.global_batch={batch} and batch.stages are both set; with "
                          "stages the batch comes from them: set train.global_batch to null "
                          "(--set train.global_batch=null)")
    try:
        check_stages(b.stages, cfg.train.epochs)
    except ScheduleError as e:
        raise ConfigError(str(e)) from None


def _validate_rate(cfg):
    """One way to state the peak (per 256 and scaled, or absolute) and one way to end."""
    o, stages = cfg.optim, cfg.batch.stages
    every_stage = bool(stages) and all(isinstance(s, dict) and s.get("peak_lr") is not None
                                       for s in stages)
    if o.base_lr is not None and o.peak_lr is not None:
        raise ConfigError(f"optim.base_lr={o.base_lr:g} and optim.peak_lr={o.peak_lr:g} are "
                          "both set: give the rate one way, per 256 samples scaled with the "
                          "batch (base_lr) or absolute (peak_lr); add --set optim.base_lr=null")
    if o.base_lr is None and o.peak_lr is None and not every_stage:
        raise ConfigError("no learning rate: set optim.base_lr (per 256 samples) or "
                          "optim.peak_lr (absolute), or a peak_lr in every batch stage")
    if o.end_lr is None:
        return
    if o.end_lr < 0:
        raise ConfigError(f"optim.end_lr={o.end_lr:g} must be >= 0, or null")
    if o.decay == "step":
        raise ConfigError("optim.end_lr is where a cosine or poly decay ends; optim.decay=step "
                          "has no end rate: drop end_lr or choose decay poly")
    if o.final_lr_factor:
        raise ConfigError(f"optim.end_lr={o.end_lr:g} and optim.final_lr_factor="
                          f"{o.final_lr_factor:g} both set the end of the decay: keep one")
    peaks = [s["peak_lr"] for s in stages if isinstance(s, dict) and s.get("peak_lr")]
    peaks += [o.peak_lr] if o.peak_lr is not None else []
    if any(p <= o.end_lr for p in peaks):
        raise ConfigError(f"optim.end_lr={o.end_lr:g} must be below the peak rate "
                          f"({min(peaks):g})")


def _validate_eval(cfg):
    """MLPerf's cadence: every N epochs from a first-evaluation epoch; inside the run."""
    e, epochs = cfg.eval, cfg.train.epochs
    if e.first_epoch is not None and e.first_epoch > epochs:
        raise ConfigError(f"eval.first_epoch={e.first_epoch:g} is past train.epochs="
                          f"{epochs:g}: the run would only be evaluated at its end; choose a "
                          f"first epoch <= {epochs:g} (MLPerf ResNet-50: 1 to 4)")


def validate_data(cfg):
    d = cfg.data
    if d.on_bad_image == "skip" and not d.exclude_list:
        raise ConfigError("data.on_bad_image=skip needs the list of files to skip: write it with "
                          "`python -m tools.check_dataset DIR --write-exclude bad.txt` and add "
                          "--set data.exclude_list=bad.txt")
    if d.exclude_list and d.on_bad_image != "skip":
        raise ConfigError(f"data.exclude_list={d.exclude_list} is read only with "
                          "data.on_bad_image=skip (skipping files must be deliberate); add "
                          "--set data.on_bad_image=skip")
    if (d.train_list is None) != (d.val_list is None):
        raise ConfigError("data.train_list and data.val_list go together (one class numbering "
                          "for both); set both or neither")
    if d.device == "gpu" and d.backend != "dali":
        raise ConfigError(f"data.device=gpu decodes with DALI; data.backend={d.backend} "
                          "decodes on the CPU: set data.backend=dali or data.device=cpu")
    if d.device == "gpu" and cfg.device != "gpu":
        raise ConfigError("data.device=gpu puts the batches on the GPU and needs device=gpu; "
                          "use data.device=cpu for CPU runs")


# --- output ------------------------------------------------------------------------------
def to_dict(cfg):
    return dataclasses.asdict(cfg)


def dump_yaml(cfg):
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)
