"""Export a finished run's inference network with its trained parameters, as nnabla's .nnp or
as ONNX, with the preprocessing it expects written beside it.

    python -m tools.export runs/demo --format nnp --out model.nnp
    python -m tools.export runs/demo --format onnx --out model.onnx
    python -m tools.export runs/demo/checkpoints/step-000000569.npz --format onnx --out m.onnx

The network is the trainer's validation graph (models.resnet.ResNet with train=False: BN with
its saved running statistics): input ``image``, float32 NCHW of the run's data.image_size,
output ``logits`` (batch, classes), before any softmax. A model trained channel-last is
exported channel-first (tools/trained_model.py). .nnp is written by nnabla.utils.save; ONNX
is converted from that .nnp by nnabla-converter (nnabla's own converter, the same release
as nnabla; requirements.txt). Beside FILE, ``<FILE stem>.preprocess.json`` says how to make
the input from an image (mean, std, resize, crop), as the run's validation did it.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("NNABLA_CONFIG_FILE_PATH", os.path.join(REPO, "nnabla.conf"))

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

NETWORK, INPUT, OUTPUT = "resnet_inference", "image", "logits"
ONNX_OPSET = "11"   # nnabla-converter 1.39.0's default for OnnxExporter


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tools.export",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("target", metavar="RUN_DIR",
                   help="a run's --output-dir (its final_params.h5), or a checkpoint/.h5 of it")
    p.add_argument("--format", required=True, choices=("nnp", "onnx"))
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.add_argument("--batch-size", type=int, default=1,
                   help="the input's batch dimension (default 1; .nnp allows any at load)")
    return p.parse_args(argv)


def preprocess_path(out):
    return os.path.splitext(out)[0] + ".preprocess.json"


def check_out(out, fmt):
    """Fail before any work when FILE cannot be written (one line)."""
    ext = os.path.splitext(out)[1].lower()
    if ext != "." + fmt:
        return f"--out {out}: give the file the .{fmt} extension (--format {fmt})"
    if os.path.isdir(out):
        return f"--out {out} is a directory; name a file, e.g. {os.path.join(out, 'model.' + fmt)}"
    probe = out + f".write-test-{os.getpid()}"
    try:
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        return (f"--out {out}: cannot write there ({e.strerror}); choose a writable "
                "directory that exists")
    return None


def preprocessing(cfg, batch_size, trained):
    from data.augment import val_geometry
    from data.pil_loader import MEAN, STD
    size = cfg.data.image_size
    w, h, _, _ = val_geometry([size * 4], [size * 2], size, cfg.data.val_resize_ratio)
    return {
        "input": {"name": INPUT, "shape": [batch_size, 3, size, size], "layout": "NCHW",
                  "dtype": "float32", "channels": "RGB"},
        "output": {"name": OUTPUT, "shape": [batch_size, cfg.model.num_classes],
                   "meaning": "class scores before softmax; class i is the i-th class folder "
                              "of the training set in sorted order"},
        "resize_shorter_side": int(h[0]),
        "resize_interpolation": "bilinear",
        "center_crop": size,
        "mean": [round(float(v), 4) for v in MEAN],
        "std": [round(float(v), 4) for v in STD],
        "normalize": "(pixel - mean) / std, pixels 0-255",
        "source": {"parameters": os.path.abspath(trained.path),
                   "config": os.path.abspath(trained.config_path),
                   "exported_channel_first_from_channel_last": trained.channel_last},
    }


def save_nnp(path, image, logits, batch_size):
    from nnabla.utils.save import save
    contents = {
        "networks": [{"name": NETWORK, "batch_size": batch_size,
                      "outputs": {OUTPUT: logits}, "names": {INPUT: image}}],
        "executors": [{"name": "runtime", "network": NETWORK,
                       "data": [INPUT], "output": [OUTPUT]}],
    }
    save(path, contents, variable_batch_size=True)


def nnp_to_onnx(nnp_path, onnx_path, batch_size):
    """nnabla-converter's nnp -> ONNX (what `nnabla_cli convert -b N x.nnp x.onnx` runs),
    its progress prints ("Importing ...") kept off this tool's output."""
    from nnabla.utils.converter.nnabla import NnpImporter
    from nnabla.utils.converter.onnx import OnnxExporter
    with contextlib.redirect_stdout(io.StringIO()):
        nnp = NnpImporter(nnp_path, expand_network=True, executor_index=None).execute()
        OnnxExporter(nnp, batch_size, -1, opset=ONNX_OPSET).execute(onnx_path)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.batch_size < 1:
        sys.exit(f"error: --batch-size {args.batch_size} must be positive")
    problem = check_out(args.out, args.format)
    if problem:
        sys.exit(f"error: {problem}")
    import nnabla as nn
    from training.device import contexts
    from tools.trained_model import ModelError, load
    nn.set_default_context(contexts("cpu", "float")[0])
    try:
        trained = load(args.target)
    except ModelError as e:
        sys.exit(f"error: {e}")
    cfg, size = trained.cfg, trained.cfg.data.image_size
    image = nn.Variable((args.batch_size, 3, size, size))
    logits = trained.model(image, train=False)
    workdir = tempfile.mkdtemp(prefix="export-")
    try:
        nnp_path = os.path.join(workdir, "model.nnp")
        save_nnp(nnp_path, image, logits, args.batch_size)
        result = nnp_path
        if args.format == "onnx":
            result = os.path.join(workdir, "model.onnx")
            nnp_to_onnx(nnp_path, result, args.batch_size)
        shutil.move(result, args.out + ".tmp")
        os.replace(args.out + ".tmp", args.out)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    info = preprocess_path(args.out)
    with open(info + ".tmp", "w") as f:
        json.dump(preprocessing(cfg, args.batch_size, trained), f, indent=2)
        f.write("\n")
    os.replace(info + ".tmp", info)
    print(f"written: {args.out} ({args.format}: input {INPUT} {list(image.shape)} NCHW float32, "
          f"output {OUTPUT} {list(logits.shape)}), {info} (preprocessing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
