"""ImageNet's shape end to end: official archives -> packed set -> dry run -> staging.

    python -m tools.bench_data_scale --dir DIR [--steps generate,prepare,dryrun,stage]
        [--workers 2] [--small] [--folder] [--json FILE]

generate  the three official archives at ImageNet's shape (1,000 classes, 1,281,167 + 50,000
          tiny images; data/official_archives.py), once (kept in DIR/official)
prepare   python -m data.prepare_imagenet on them: wall time, images/s and MB/s per worker,
          and what that predicts for the real 147 GB on a 32-core node (the tiny images
          decode faster than real ones: the prediction adds the measured decode time of a
          500x375 JPEG, ImageNet's typical size, per image)
dryrun    train_resnet50.py --dry-run on the packed set (and on the same images as a folder
          with --folder, which writes 1.33 M files): seconds and peak memory of the process
stage     python -m data.stage across an emulated cluster (4 nodes x 2 rails at 200 Mbit/s;
          needs root) on a set of a few hundred MB: global and node shuffle, against each node
          copying the whole source itself; the bandwidth bound is what each node must receive
          over its rails
--small   a quick rehearsal at 1/100 of the shape. Numbers go to stdout, one JSON line each.
"""
import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
RATE_MBIT, NODES, RAILS = 200, 4, 2


def cpu_seconds():
    """User + system time of the waited-for children (and theirs) so far."""
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(argv, **kw):
    """(seconds, peak RSS MB of the child, CompletedProcess)."""
    start = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-f", "MAXRSS_KB %M", *argv], cwd=REPO,
                       capture_output=True, text=True, **kw)
    seconds = time.perf_counter() - start
    rss = [int(line.split()[1]) for line in r.stderr.splitlines() if line.startswith("MAXRSS_KB")]
    if r.returncode != 0:
        sys.exit(f"bench_data_scale: {' '.join(argv[:4])} ... failed:\n{r.stderr[-2000:]}")
    return seconds, (rss[-1] / 1024 if rss else None), r


def emit(record):
    record["load_average"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(record), flush=True)
    return record


def generate(a):
    out = os.path.join(a.dir, "official")
    if os.path.exists(os.path.join(out, "LOC_synset_mapping.txt")):
        return out
    args = ["--imagenet-shape"] if not a.small else ["--classes", "100", "--train-per-class",
                                                     "128", "--val-images", "500"]
    seconds, _, _ = run([PYTHON, "-m", "data.official_archives", out, "--size", "16", *args])
    emit({"step": "generate", "seconds": round(seconds, 1)})
    return out


def full_size_decode_seconds():
    """Seconds one core spends decoding (the loaders' check) a 500x375 q90 JPEG."""
    import numpy as np
    from PIL import Image
    from data.checks import check_bytes
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:375, 0:500]
    base = np.stack([x * 0.4, y * 0.6, (x + y) * 0.2], -1) + rng.normal(0, 12, (375, 500, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    start, n = time.process_time(), 50
    for _ in range(n):
        assert check_bytes(data) is None
    return (time.process_time() - start) / n, len(data)


def prepare(a, official):
    out = os.path.join(a.dir, "packed")
    shutil.rmtree(out, ignore_errors=True)
    cpu_before = cpu_seconds()
    seconds, rss, r = run([PYTHON, "-m", "data.prepare_imagenet", "--no-progress",
                           "--train-tar", f"{official}/ILSVRC2012_img_train.tar",
                           "--val-tar", f"{official}/ILSVRC2012_img_val.tar",
                           "--devkit", f"{official}/ILSVRC2012_devkit_t12.tar.gz",
                           "--out", out, "--workers", str(a.workers)]
                          + (["--allow-partial"] if a.small else []))
    cpu = cpu_seconds() - cpu_before
    manifest = json.load(open(os.path.join(out, "index.json")))
    images = sum(manifest["counts"][k] for k in ("train", "val"))
    shard_bytes = sum(s["size"] for sp in manifest["splits"].values() for s in sp["shards"])
    decode_s, decode_bytes = full_size_decode_seconds()
    real_images, real_bytes, cores = 1331167, 147e9, 32
    # CPU per image: what the tiny set cost (busy cores, so other jobs on the machine do not
    # count) plus decoding a real-size image instead of a tiny one
    per_image_s = cpu / images + decode_s
    emit({"step": "prepare", "workers": a.workers, "seconds": round(seconds, 1),
          "images": images, "shard_bytes": shard_bytes, "cpu_seconds": round(cpu, 1),
          "images_per_s_per_core_wall": round(images / seconds / a.workers),
          "images_per_cpu_second": round(images / cpu), "peak_rss_mb": rss,
          "full_size_decode_ms": round(decode_s * 1e3, 2), "full_size_jpeg_bytes": decode_bytes,
          "predicted_real_seconds_32_cores_cpu": round(real_images * per_image_s / cores),
          "predicted_real_read_seconds_at_1GBps": round(real_bytes / 1e9)})
    return out


def dry_run(a, data_dir, label):
    """The trainer's dry run (builds the full-size graph; no data dir: the data's share)."""
    data = ["--data-dir", data_dir] if data_dir else []
    seconds, rss, r = run([PYTHON, "train_resnet50.py", "--config",
                           "configs/resnet50_imagenet.yaml", *data, "--dry-run"])
    line = next((l for l in r.stdout.splitlines() if l.startswith("data ")), "")
    return emit({"step": f"dryrun_{label}", "seconds": round(seconds, 2), "peak_rss_mb": rss,
                 "data_line": line.strip()})


def folder_from_packed(packed, out):
    """The same images as an ImageNet-layout folder (1.33 M files)."""
    from data.packed import list_packed
    for split, listing in zip(("train", "val"), list_packed(packed)):
        made = set()
        for i in range(len(listing)):
            folder = os.path.join(out, split, listing.classes[int(listing.labels[i])])
            if folder not in made:
                os.makedirs(folder, exist_ok=True)
                made.add(folder)
            name = listing.name(i).rsplit(":", 1)[1]
            with open(os.path.join(folder, name), "wb") as f:
                f.write(listing.read(i))


def stage_set(a):
    """A few hundred MB packed set for the staging benchmark."""
    official = os.path.join(a.dir, "stage-official")
    packed = os.path.join(a.dir, "stage-packed")
    if not os.path.exists(os.path.join(packed, "index.json")):
        subprocess.run([PYTHON, "-m", "data.official_archives", official, "--classes", "100",
                        "--train-per-class", "100", "--val-images", "400", "--size", "224"],
                       cwd=REPO, check=True, capture_output=True)
        subprocess.run([PYTHON, "-m", "data.prepare_imagenet", "--no-progress", "--train-tar",
                        f"{official}/ILSVRC2012_img_train.tar", "--val-tar",
                        f"{official}/ILSVRC2012_img_val.tar", "--devkit",
                        f"{official}/ILSVRC2012_devkit_t12.tar.gz", "--out", packed,
                        "--allow-partial", "--shard-size", "24", "--workers", str(a.workers)],
                       cwd=REPO, check=True, capture_output=True)
    return packed


def stage(a):
    """data.stage on an emulated 4 x 2 cluster against every node copying the source."""
    import secrets
    from tools import minicluster
    packed = stage_set(a)
    size = sum(s["size"] for sp in json.load(open(os.path.join(packed, "index.json")))
               ["splits"].values() for s in sp["shards"])
    name = "bds" + secrets.token_hex(2)
    root = os.path.join(a.dir, "minicluster")
    c = minicluster.Cluster.up(NODES, RAILS, f"{RATE_MBIT}mbit", name=name, root=root)
    try:
        per_node_bps = RAILS * RATE_MBIT * 1e6 / 8
        bound = size * (NODES - 1) / NODES / per_node_bps     # what each node must receive
        for shuffle in ("global", "node"):
            start = time.perf_counter()
            r = c.run([PYTHON, "-m", "data.stage", packed, os.path.join(c.local_dir, shuffle),
                       "--shuffle", shuffle], ranks_per_node=1, env={"PYTHONPATH": REPO},
                      timeout=3600)
            wall = time.perf_counter() - start
            if r.returncode != 0:
                sys.exit(f"bench_data_scale: staging failed: {r.stderr[-2000:]}")
            result = json.loads(r.stdout.strip().splitlines()[-1])
            emit({"step": f"stage_{shuffle}", "set_bytes": size, "nodes": NODES, "rails": RAILS,
                  "rate_mbit": RATE_MBIT, "wall_seconds": round(wall, 2),
                  "bandwidth_bound_seconds": round(bound, 2) if shuffle == "global" else None,
                  "x_bound": round(result["seconds"] / bound, 2) if shuffle == "global" else None,
                  "source_reads": round(result["bytes_read_from_source"] / size, 3), **result})
        start = time.perf_counter()
        r = c.run(["sh", "-c", f'cp -r {packed} "$LOCAL_DIR/each"'], ranks_per_node=1,
                  timeout=3600)
        emit({"step": "stage_each_node_copies_the_source", "set_bytes": size,
              "wall_seconds": round(time.perf_counter() - start, 2), "source_reads": NODES,
              "note": "the emulated shared file system is this machine's disk, not behind the "
                      "emulated network: only the source reads compare"})
    finally:
        minicluster.down(name, root)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--dir", default=os.path.join(REPO, "runs", "bench_data_scale"))
    p.add_argument("--steps", default="generate,prepare,dryrun,stage")
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--small", action="store_true", help="1/100 of ImageNet's shape")
    p.add_argument("--folder", action="store_true",
                   help="also time the dry run on the same images as a folder (1.33 M files)")
    a = p.parse_args(argv)
    steps = a.steps.split(",")
    os.makedirs(a.dir, exist_ok=True)
    official = generate(a) if {"generate", "prepare"} & set(steps) else None
    packed = prepare(a, official) if "prepare" in steps else os.path.join(a.dir, "packed")
    if "dryrun" in steps:
        dry_run(a, None, "without_data")
        dry_run(a, packed, "packed")
        if a.folder:
            folder = os.path.join(a.dir, "folder")
            if not os.path.isdir(folder):
                folder_from_packed(packed, folder)
            dry_run(a, folder, "folder")
    if "stage" in steps:
        stage(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
