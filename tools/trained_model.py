"""A finished run's model, rebuilt from its files: what tools/evaluate and tools/export share.

A target is a run directory (its ``final_params.h5``, written when the run completed), a
checkpoint (``RUN_DIR/checkpoints/step-*.npz``) or a parameter file (``*.h5``). The model is
built from the run's resolved ``config.yaml`` (a checkpoint's own copy of the config when it
is not inside a run directory) with the trainer's own ``models.resnet.ResNet``, so the
parameter names and shapes must match exactly; a file of another model is refused with one
line before any work.

Models trained channel-last (NHWC, cuDNN only) are rebuilt channel-first (NCHW, what nnabla's
CPU convolution computes and what ONNX expects): the convolution weights are transposed from
(out, kh, kw, in) to (out, in, kh, kw) and the BN arrays reshaped from (1, 1, 1, C) to
(1, C, 1, 1); the arithmetic is the same.
"""
import os
from types import SimpleNamespace

import numpy as np

from models.resnet import ResNet
from training import checkpoint
from training.config import Config, ConfigError, load_config, set_value, validate

FINAL = "final_params.h5"


class ModelError(ValueError):
    """A target that cannot be loaded; the message is one line naming the problem and fix."""


def _config_from_dict(doc, source):
    cfg = Config()
    for section, values in doc.items():
        if isinstance(values, dict):
            for key, value in values.items():
                set_value(cfg, f"{section}.{key}", value, source)
        else:
            set_value(cfg, section, values, source)
    return cfg


def for_cpu(cfg):
    """The run's config, made runnable here: NCHW in float on the CPU (the module's
    docstring); returns whether the saved model was channel-last."""
    channel_last = cfg.model.channel_last
    cfg.model.channel_last = False
    cfg.device, cfg.type_config = "cpu", "float"
    cfg.data.device = "cpu"
    try:
        validate(cfg)
    except ConfigError as e:
        raise ModelError(str(e)) from None
    return channel_last


def resolve(target):
    """(run_dir, parameter file, kind "final" | "checkpoint" | "h5")."""
    if os.path.isdir(target):
        path = os.path.join(target, FINAL)
        if not os.path.isfile(path):
            found = checkpoint.list_checkpoints(os.path.join(target, "checkpoints"))
            hint = (f"pass a checkpoint instead, e.g. {found[-1]}" if found else
                    "is it a run's --output-dir? let the run finish (or --resume it)")
            raise ModelError(f"{target} has no {FINAL} (written when a run completes): {hint}")
        return target, path, "final"
    if not os.path.isfile(target):
        raise ModelError(f"{target}: no such run directory or parameter file; pass a run's "
                         "--output-dir, one of its checkpoints/step-*.npz or a *.h5")
    if target.endswith(".npz"):
        parent = os.path.dirname(os.path.abspath(target))
        run_dir = os.path.dirname(parent) if os.path.basename(parent) == "checkpoints" else parent
        return run_dir, target, "checkpoint"
    if target.endswith(".h5"):
        return os.path.dirname(os.path.abspath(target)), target, "h5"
    raise ModelError(f"{target} is neither a checkpoint (.npz) nor nnabla parameters (.h5); "
                     "pass a run directory or one of its files")


def read_arrays(path, kind):
    """{name: ndarray} of parameters and BN statistics, and the checkpoint's config (or None)."""
    if kind == "checkpoint":
        try:
            arrays, meta = checkpoint.load(path)
        except checkpoint.CheckpointError as e:
            raise ModelError(str(e)) from None
        params = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
        return params, meta.get("config")
    import nnabla as nn
    with nn.parameter_scope("__read__"):
        try:
            nn.load_parameters(path)
        except Exception as e:   # nnabla raises many kinds for a file that is not its format
            raise ModelError(f"{path} is not an nnabla parameter file ({type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''})") from None
        params = {k: v.d.copy() for k, v in nn.get_parameters(grad_only=False).items()}
        nn.clear_parameters()
    return params, None


def load_config_for(run_dir, saved_config, path):
    """(config, where it came from): the run's config.yaml, else the checkpoint's copy."""
    yaml_path = os.path.join(run_dir, "config.yaml")
    try:
        if os.path.isfile(yaml_path):
            return load_config(yaml_path), yaml_path
        if saved_config:
            return _config_from_dict(saved_config, path), path
    except ConfigError as e:
        raise ModelError(str(e)) from None
    raise ModelError(f"no config.yaml in {run_dir} to rebuild the model of {path}: keep "
                     "the parameter file inside its run directory")


def to_channel_first(arrays, shapes):
    """Arrays saved by a channel-last model, in the layout of the channel-first one. Every
    convolution weight is transposed, also where the shape does not tell: the small stem's
    3x3 convolution of 3 channels is (out, 3, 3, 3) in both layouts."""
    out = {}
    for name, value in arrays.items():
        want = shapes.get(name)
        if want is not None and value.ndim == 4:
            if name.endswith("/W"):
                value = value.transpose(0, 3, 1, 2)      # (out, kh, kw, in) -> (out, in, kh, kw)
            elif value.size == int(np.prod(want)):
                value = value.reshape(want)              # BN (1, 1, 1, C) -> (1, C, 1, 1)
        out[name] = value
    return out


def check_same_model(arrays, expected, path, config_path):
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    other = sorted(n for n in set(arrays) & set(expected)
                   if tuple(arrays[n].shape) != tuple(expected[n].shape))
    if missing or extra or other:
        detail = ", ".join(part for part in (
            f"{len(missing)} parameters missing (e.g. {missing[0]})" if missing else "",
            f"{len(extra)} unexpected (e.g. {extra[0]})" if extra else "",
            f"{len(other)} of another shape (e.g. {other[0]}: {tuple(arrays[other[0]].shape)} "
            f"in the file, {tuple(expected[other[0]].shape)} in the model)" if other else "")
            if part)
        raise ModelError(f"{path} holds another model than {config_path} describes ({detail}): "
                         "pass it with the run directory it was trained in")


def load(target):
    """The rebuilt model with its trained parameters: a namespace of cfg, model, run_dir,
    path, kind, config_path. Parameters live in nnabla's global scope (as in the trainer)."""
    import nnabla as nn
    run_dir, path, kind = resolve(target)
    arrays, saved_config = read_arrays(path, kind)
    cfg, config_path = load_config_for(run_dir, saved_config, path)
    channel_last = for_cpu(cfg)
    if cfg.model.num_classes is None:
        fc = arrays.get("fc/affine/b")
        cfg.model.num_classes = int(fc.shape[0]) if fc is not None else 1000
    nn.clear_parameters()
    model = ResNet(cfg.model.depth, cfg.model.num_classes, cfg.model.width, cfg.model.small_stem,
                   cfg.model.zero_init_last_bn, channel_last=False)
    size = cfg.data.image_size
    model(nn.Variable((1, 3, size, size)), train=False)    # creates the parameters
    expected = {**model.parameters(), **model.statistics()}
    if channel_last:
        arrays = to_channel_first(arrays, {n: v.shape for n, v in expected.items()})
    check_same_model(arrays, expected, path, config_path)
    for name, var in expected.items():
        var.d = arrays[name]
    return SimpleNamespace(cfg=cfg, model=model, run_dir=run_dir, path=path, kind=kind,
                           config_path=config_path, channel_last=channel_last)
