"""Single-crop top-1 and top-5 of a finished run (or one checkpoint) on the validation split.

    python -m tools.evaluate runs/demo --data-dir data/toy
    python -m tools.evaluate runs/demo/checkpoints/step-000000569.npz --data-dir data/toy --json
    mpirun -np 4 python -m tools.evaluate runs/demo --data-dir data/toy

It scores exactly as the run's own evaluation does: the model rebuilt from the run's resolved
config.yaml, the BN statistics as saved (averaged over ranks before every save), the
validation loader the trainer builds (data.build.build_val_loader: the run's data.backend,
image_size, val_resize_ratio), and the trainer's evaluate() (each image counted once across
ranks, padding rows never counted). So the top-1 of final_params.h5 equals the run's final
logged top-1. It computes on the CPU in float (docs/after_training.md). --json prints
{"top1": ..., "top5": ..., "images": ...} as the last line.
"""
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("NNABLA_CONFIG_FILE_PATH", os.path.join(REPO, "nnabla.conf"))

import argparse  # noqa: E402
import json  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m tools.evaluate",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("target", metavar="RUN_DIR|CHECKPOINT",
                   help="a run's --output-dir (its final_params.h5), a checkpoint "
                        "(checkpoints/step-*.npz) or an nnabla parameter file (.h5)")
    p.add_argument("--data-dir", help="ImageNet layout with DIR/val/<class>/* (default: the "
                                      "run's data.dir)")
    p.add_argument("--json", action="store_true",
                   help='print {"top1": ..., "top5": ..., "images": ...} as the last line')
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    import nnabla as nn
    from comm import CommError, create
    from data.build import build_val_loader, list_data
    from data.imagefolder import DataError
    from training.device import contexts
    from training.evaluate import evaluate
    from training.graphs import build_val_graph
    from tools.trained_model import ModelError, load

    try:
        comm = create("native", "auto")
    except CommError as e:
        sys.exit(f"error: {e}")

    def fail(message):     # every rank reads the same files, so every rank fails alike
        if comm.size > 1:
            comm.abort(f"error: {message}")
        sys.exit(f"error: {message}")

    nn.set_default_context(contexts("cpu", "float")[0])
    try:
        trained = load(args.target)
    except ModelError as e:
        fail(str(e))
    cfg = trained.cfg
    if args.data_dir:
        cfg.data.dir = args.data_dir
    try:
        _, val_set = list_data(cfg.data)
        loader = build_val_loader(cfg.data, val_set, cfg.eval.batch_size, comm.rank, comm.size)
        val_graph = build_val_graph(cfg, trained.model)
        top1, top5, loss = evaluate(val_graph, loader, comm)
    except DataError as e:
        fail(str(e))
    if comm.rank == 0:
        print(f"{trained.path}: top-1 {top1:.4f}  top-5 {top5:.4f}  loss {loss:.4f}  "
              f"({len(val_set)} validation images, {comm.size} rank(s), config "
              f"{trained.config_path})")
        if args.json:
            print(json.dumps({"top1": top1, "top5": top5, "images": len(val_set)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
