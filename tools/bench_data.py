"""Benchmark the input pipelines: images/s of DALI-CPU and Pillow, and the trainer's data wait.

    python tools/bench_data.py                 # both tables (make bench-data)
    python tools/bench_data.py --skip-train    # loader throughput only

1. Loader throughput: each training loader (same JPEGs, same crops and flips: data/augment.py,
   same number of decoding threads) delivers batches as fast as it can; images/s is the
   median of ``--repeats`` timed passes after one warm-up batch. Two data sets: the toy set
   of ``make train`` (64 px JPEGs, 48 px crops, as configs/cpu_demo.yaml) and ImageNet-like
   JPEGs (400x350, quality 90, 224 px crops of area >= 0.08), generated once into /tmp.
2. Data wait: ``make train``'s recipe for ``--train-epochs`` epochs with each backend; the
   share of training time (evaluation excluded) spent in ``next_batch``, from log.jsonl.

Timing on a shared machine is noisy: rerun on a quiet one before trusting a digit.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402

from data.checks import encoded_problem  # noqa: E402
from data.dali_loader import DaliTrainLoader  # noqa: E402
from data.imagefolder import list_imagenet  # noqa: E402
from data.pil_loader import PilTrainLoader  # noqa: E402
from data.toy_imagenet import generate, make_image  # noqa: E402

LOADERS = {"dali-cpu": DaliTrainLoader, "pillow": PilTrainLoader}


def ensure_toy(path):
    if not os.path.isfile(os.path.join(path, ".complete")):
        generate(path)
        open(os.path.join(path, ".complete"), "w").close()
    return path


def ensure_imagenet_like(path, classes=10, per_class=64, width=400, height=350):
    """JPEGs of ImageNet's typical size (the toy drawings at 400x350, quality 90)."""
    if os.path.isfile(os.path.join(path, ".complete")):
        return path
    for split, count in (("train", per_class), ("val", 2)):
        for c in range(classes):
            folder = os.path.join(path, split, f"class{c:02d}")
            os.makedirs(folder, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([7, c, i, split == "val"])
                img = make_image(c, classes, width, rng).crop((0, 0, width, height))
                img.save(os.path.join(folder, f"{i:04d}.JPEG"), "JPEG", quality=90)
    open(os.path.join(path, ".complete"), "w").close()
    return path


def loader_rate(cls, listing, image_size, min_area, batch, images, threads, repeats):
    """(median images/s, CPU cores busy) of one loader delivering ``images`` per pass."""
    loader = cls(listing, image_size, seed=0, num_threads=threads, min_crop_area=min_area)
    loader.next_batch(batch)                       # warm-up: pipeline build, first decode
    rates, cores = [], []
    for _ in range(repeats):
        t, cpu = time.perf_counter(), os.times()
        for _ in range(images // batch):
            loader.next_batch(batch)
        seconds, after = time.perf_counter() - t, os.times()
        rates.append(images // batch * batch / seconds)
        cores.append((after.user + after.system - cpu.user - cpu.system) / seconds)
    loader.close()
    return statistics.median(rates), statistics.median(cores)


def gpu_loader_rate(listing, image_size, min_area, batch, images, threads, repeats):
    """images/s of DALI with mixed (nvJPEG) decoding on GPU 0, written into nnabla arrays on
    the GPU as the trainer does (data.device: gpu). NOT VERIFIED ON A GPU by this project."""
    import nnabla as nn
    import nnabla_ext.cuda     # main() has checked the GPU stack before any measurement
    from training.device import contexts
    ctx, _ = contexts("gpu", "float", 0)
    nn.set_default_context(ctx)
    loader = DaliTrainLoader(listing, image_size, seed=0, num_threads=threads,
                             min_crop_area=min_area, device="gpu", device_id=0)
    image, label = nn.NdArray((batch, 3, image_size, image_size)), nn.NdArray((batch, 1))
    loader.next_batch_into(image, label, batch, ctx)          # warm-up
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(images // batch):
            loader.next_batch_into(image, label, batch, ctx)
        nnabla_ext.cuda.synchronize(device_id="0")
        rates.append(images // batch * batch / (time.perf_counter() - t))
    loader.close()
    return statistics.median(rates)


def check_cost(listing, files=640):
    """CPU microseconds per file of the structural check every file passes before DALI
    (data/checks.py's encoded_problem), on the files already read into memory."""
    blobs = []
    for path in listing.files[:files]:
        with open(path, "rb") as f:
            blobs.append(f.read())
    t = time.process_time()
    for data in blobs:
        encoded_problem(data)
    return (time.process_time() - t) / len(blobs) * 1e6


def throughput_table(sets, args):
    rows = ["| data set | crop | loader | threads | images/s | CPU cores busy | vs Pillow |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, root, size, min_area, images in sets:
        train, _ = list_imagenet(root)
        rates = {}
        for loader, cls in LOADERS.items():
            rates[loader] = loader_rate(cls, train, size, min_area, args.batch, images,
                                        args.threads, args.repeats)
        rate, cores = rates["dali-cpu"]
        check = check_cost(train)
        print(f"{name}: the structural check costs {check:.0f} us CPU per file, "
              f"{check * 1e-6 * rate / cores:.1%} of the DALI-CPU loader's CPU per image",
              flush=True)
        for loader, (rate, cores) in rates.items():
            rows.append(f"| {name} | {size} px | {loader} | {args.threads} | {rate:,.0f} | "
                        f"{cores:.2f} | {rate / rates['pillow'][0]:.2f}x |")
        if args.gpu:
            rate = gpu_loader_rate(train, size, min_area, args.batch, images, args.threads,
                                   args.repeats)
            rows.append(f"| {name} | {size} px | dali-gpu (mixed) | {args.threads} | "
                        f"{rate:,.0f} | n/a | {rate / rates['pillow'][0]:.2f}x |")
        print("\n".join(rows[-(3 if args.gpu else 2):]), flush=True)
    return rows


def data_wait_table(toy, args):
    rows = ["| backend | epochs | images/s (training) | data wait, whole run | "
            "data wait, last epoch |", "| --- | --- | --- | --- | --- |"]
    for backend in ("dali", "pil"):
        out = f"/tmp/bench_data_run_{backend}"
        cmd = [sys.executable, os.path.join(REPO, "train_resnet50.py"), "--config",
               "configs/cpu_demo_constant.yaml", "--data-dir", toy, "--output-dir", out,
               "--overwrite",
               "--set", f"data.backend={backend}", "--set", f"train.epochs={args.train_epochs}"]
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"bench_data: training with {backend} failed: {proc.stderr[-500:]}")
        with open(os.path.join(out, "summary.json")) as f:
            s = json.load(f)
        with open(os.path.join(out, "log.jsonl")) as f:
            epochs = [r for r in map(json.loads, f) if r["event"] == "epoch"]
        whole = s["data_wait_s"] / max(s["wall_time_s"] - s["eval_time_s"], 1e-9)
        rows.append(f"| {backend} | {args.train_epochs:g} | {s['images_per_s']:,.0f} | "
                    f"{100 * whole:.1f}% | {100 * epochs[-1]['data_wait_frac']:.1f}% |")
        print(rows[-1], flush=True)
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--toy-dir", default=os.path.join(REPO, "data", "toy"))
    p.add_argument("--large-dir", default="/tmp/bench_data_imagenet_like")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-epochs", type=float, default=2.0)
    p.add_argument("--skip-train", action="store_true", help="loader throughput only")
    p.add_argument("--gpu", action="store_true",
                   help="also DALI with GPU (mixed) decoding on GPU 0 (not verified on a GPU)")
    args = p.parse_args(argv)

    if args.gpu:     # say what is missing before minutes of CPU measurements
        from training.device import check_gpu_stack
        problems = check_gpu_stack(multi_rank=False)
        if problems:
            sys.exit("\n".join(f"error: {p}" for p in problems))
    toy = ensure_toy(args.toy_dir)
    large = ensure_imagenet_like(args.large_dir)
    print(f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f} at start", flush=True)
    sets = [("toy (64 px JPEGs)", toy, 48, 0.35, 40 * args.batch),
            ("ImageNet-like (400x350 JPEGs)", large, 224, 0.08, 10 * args.batch)]
    tables = [throughput_table(sets, args)]
    if not args.skip_train:
        tables.append(data_wait_table(toy, args))
    print(f"\nload average {os.getloadavg()[0]:.2f} at the end\n")
    for rows in tables:
        print("\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
