"""From the official ImageNet tars to a packed, checked data set, in one command.

    python -m data.prepare_imagenet --train-tar ILSVRC2012_img_train.tar \\
        --val-tar ILSVRC2012_img_val.tar --devkit ILSVRC2012_devkit_t12.tar.gz --out OUT
    python -m data.prepare_imagenet ... --val-labels LOC_val_solution.csv --out OUT   # Kaggle
    python -m data.prepare_imagenet --from-folder IMAGENET_DIR --out OUT   # train/, val/ folders

Streams the tars (nothing is extracted: every image is a byte range of the tar), checks the
counts (1,281,167 / 50,000 / 1,000; ``--allow-partial`` accepts a subset) before writing,
decodes every image with the loaders' own test (data/checks.py), keeps the bytes as they are
(no re-encoding: CMYK JPEGs stay JPEGs, which both decoders turn into RGB; the PNG named .JPEG
is stored as ``KEY.png``) and says what it found. Writes webdataset-layout shards and an index
(data/packed.py). ``--workers`` processes write whole shards in parallel; a killed run resumes
where it was (finished shards are kept, checked by size). ``--verify-md5`` first compares the
tars with their published MD5 sums. The output is one directory to copy to a cluster
(``python -m data.stage``) and train from (``--data-dir OUT``).
"""
import argparse
import hashlib
import json
import os
import sys
import time

import numpy as np

from .imagefolder import DataError
from .packed import FORMAT, INDEX, ROW, index_path, shard_name
from .shard_writer import write_shard
from .imagenet_sources import (csv_val_wnids, devkit_val_wnids, folder_plan, train_plan,
                               val_plan)

EXPECTED = {"train": 1281167, "val": 50000, "classes": 1000}
# torchvision/datasets/imagenet.py
PUBLISHED_MD5 = {"ILSVRC2012_img_train.tar": "1d675b47d978889d74fa0da5fadfb00e",
                 "ILSVRC2012_img_val.tar": "29b22e2961454d5413ddabcf34fc5622",
                 "ILSVRC2012_devkit_t12.tar.gz": "fa75699e90414af021442c21a62c3abf"}
WORK = ".prepare"


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m data.prepare_imagenet",
                                description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("--train-tar", help="ILSVRC2012_img_train.tar (nested: one nWNID.tar a class)")
    p.add_argument("--val-tar", help="ILSVRC2012_img_val.tar (flat)")
    labels = p.add_mutually_exclusive_group()
    labels.add_argument("--devkit", help="ILSVRC2012_devkit_t12.tar.gz (or its extracted dir)")
    labels.add_argument("--val-labels", metavar="CSV", help="Kaggle's LOC_val_solution.csv")
    p.add_argument("--from-folder", metavar="DIR",
                   help="pack an ImageNet-layout folder (DIR/train/<wnid>/*, DIR/val/<wnid>/*)")
    p.add_argument("--out", required=True, help="the packed data set's directory")
    p.add_argument("--shard-size", type=float, default=768,
                   help="MB of images per shard (default 768; for data.shuffle=node make at "
                        "least as many training shards as nodes)")
    p.add_argument("--workers", type=int, default=os.cpu_count(),
                   help="processes writing shards (default: every core)")
    p.add_argument("--allow-partial", action="store_true",
                   help="accept other counts than ImageNet-1k's 1,281,167 / 50,000 / 1,000")
    p.add_argument("--verify-md5", action="store_true",
                   help="first compare the tars with their published MD5 sums (one full read)")
    p.add_argument("--seed", type=int, default=0, help="how samples are dealt to shards")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    official = a.train_tar or a.val_tar or a.devkit or a.val_labels
    if a.from_folder and official:
        p.error("--from-folder packs a folder; --train-tar/--val-tar/--devkit/--val-labels "
                "read the official tars: give one or the other")
    if not a.from_folder and not (a.train_tar and a.val_tar and (a.devkit or a.val_labels)):
        p.error("give --train-tar T --val-tar V and --devkit D or --val-labels CSV "
                "(or --from-folder DIR)")
    if a.workers < 1 or a.shard_size <= 0:
        p.error("--workers and --shard-size must be positive")
    return a


def say(message):
    print(f"prepare_imagenet: {message}", flush=True)


# --- reading the inputs ------------------------------------------------------------------
def verify_md5(paths, progress):
    for path in paths:
        expected = PUBLISHED_MD5.get(os.path.basename(path))
        if expected is None:
            say(f"md5: {path}: no published sum for this file name; not checked")
            continue
        digest = hashlib.md5()
        with open(path, "rb") as f, progress(os.path.getsize(path), f"md5 {os.path.basename(path)}",
                                             "B") as bar:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
                bar.update(len(block))
        if digest.hexdigest() != expected:
            raise DataError(f"{path} has MD5 {digest.hexdigest()}, not the published {expected}: "
                            "a damaged or different download; fetch it again")
        say(f"md5: {path} matches the published sum")


def plans(a, progress):
    """(train Plan, val Plan, classes, {wnid: names}) of the inputs, checked."""
    if a.from_folder:
        train, val, classes = folder_plan(a.from_folder)
        return train, val, classes, {}
    for flag, path in (("--train-tar", a.train_tar), ("--val-tar", a.val_tar),
                       ("--devkit", a.devkit), ("--val-labels", a.val_labels)):
        if path and not os.path.exists(path):
            raise DataError(f"{flag} {path} does not exist")
    val_of, names = devkit_val_wnids(a.devkit) if a.devkit else csv_val_wnids(a.val_labels)
    with progress(None, "reading the training tar's headers", " classes") as bar:
        train, classes = train_plan(a.train_tar, bar.update)
    val = val_plan(a.val_tar, val_of, classes)
    return train, val, classes, names


def check_counts(a, train, val, classes):
    found = {"train": len(train), "val": len(val), "classes": len(classes)}
    if found != EXPECTED and not a.allow_partial:
        diff = ", ".join(f"{k} {found[k]:,} (ImageNet-1k: {EXPECTED[k]:,})" for k in EXPECTED
                         if found[k] != EXPECTED[k])
        raise DataError(f"the input is not the whole of ImageNet-1k: {diff}; a damaged or "
                        "partial download? (--allow-partial accepts a subset)")
    return found


# --- planning the shards and resuming --------------------------------------------------------
def deal(plan, shard_bytes, seed, split):
    """Shard number of each sample: a seeded shuffle cut into equal counts, so every shard
    mixes all classes (what data.shuffle=node needs)."""
    shards = max(1, -(-plan.total_bytes // shard_bytes))
    order = np.random.default_rng([seed, split == "val"]).permutation(len(plan))
    of = np.empty(len(plan), np.int64)
    of[order] = np.arange(len(plan)) * shards // len(plan)
    return of, shards


def fingerprint(a, train, val):
    """What a resumed run must agree on."""
    digest = hashlib.sha256()
    for plan in (train, val):
        digest.update("\n".join(plan.names).encode())
        for array in (plan.labels, plan.offset, plan.size):
            digest.update(np.ascontiguousarray(array).tobytes())
    return {"inputs": [os.path.abspath(p) for p in (a.train_tar, a.val_tar, a.devkit,
                                                    a.val_labels, a.from_folder) if p],
            "shard_size_mb": a.shard_size, "seed": a.seed, "samples": digest.hexdigest()}


def start_or_resume(out, fp):
    work = os.path.join(out, WORK)
    path = os.path.join(work, "plan.json")
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) != fp:
                raise DataError(f"{out} holds a preparation of other inputs or settings: choose "
                                "another --out, or remove that directory yourself")
        return True
    if os.path.exists(os.path.join(out, INDEX)):
        raise DataError(f"{out} already holds a packed data set: choose another --out")
    if os.path.isdir(out) and os.listdir(out):
        raise DataError(f"{out} is not empty and holds no preparation: choose an empty --out")
    os.makedirs(work, exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(fp, f)
    os.replace(path + ".tmp", path)
    return False


def done_part(out, split, number):
    """The record of a finished shard, if the shard is there with its recorded size."""
    part = os.path.join(out, WORK, f"{shard_name(split, number)}.json")
    try:
        with open(part) as f:
            record = json.load(f)
        if os.path.getsize(os.path.join(out, shard_name(split, number))) == record["size"]:
            return record
    except (OSError, ValueError, KeyError):
        pass
    return None


# --- writing ----------------------------------------------------------------------------------
_JOBS = {}      # split -> (plan, shard of each sample); set before the workers fork


def _work(job):
    split, number, out = job
    plan, of = _JOBS[split]
    members = np.flatnonzero(of == number)
    members = members[np.lexsort((plan.offset[members], plan.source[members]))]  # forward reads
    record = write_shard(os.path.join(out, shard_name(split, number)), plan, members)
    record["number"] = number
    part = os.path.join(out, WORK, f"{shard_name(split, number)}.json")
    with open(part + ".tmp", "w") as f:
        json.dump(record, f)
    os.replace(part + ".tmp", part)
    return split, record


def write_all(a, jobs, progress, total_bytes):
    done = {}
    todo = []
    for split, number in jobs:
        record = done_part(a.out, split, number)
        if record is None:
            todo.append((split, number, a.out))
        else:
            done[(split, number)] = record
    if done:
        say(f"resuming: {len(done)} of {len(jobs)} shards already written")
    with progress(total_bytes, "packing", "B") as bar:
        bar.update(sum(r["image_bytes"] for r in done.values()))
        results = _run(todo, a.workers)
        for split, record in results:
            done[(split, record["number"])] = record
            bar.update(record["image_bytes"])
    return done


def _run(todo, workers):
    if workers == 1 or len(todo) <= 1:
        yield from map(_work, todo)
        return
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(min(workers, len(todo))) as pool:
        yield from pool.imap_unordered(_work, todo)


def finish(a, plans_by_split, shards, records, classes, names, counts, seconds):
    """Index, classes.txt, and index.json last (its presence marks a finished set)."""
    manifest = {"format": FORMAT, "classes": len(classes), "counts": counts, "splits": {},
                "prepared_by": "python -m data.prepare_imagenet", "seconds": round(seconds, 1)}
    odd = {"cmyk": [], "png": [], "bad": []}
    for split, plan in plans_by_split.items():
        rows = np.zeros(len(plan), ROW)
        rows["label"] = plan.labels
        listed = []
        for number in range(shards[split]):
            r = records[(split, number)]
            index = np.asarray(r["samples"], np.int64)
            rows["shard"][index] = number
            rows["offset"][index] = r["offsets"]
            rows["size"][index] = r["sizes"]
            for kind in odd:
                odd[kind] += r[kind]
            listed.append({"name": shard_name(split, number), "size": r["size"],
                           "sha256": r["sha256"], "samples": len(index)})
        np.save(index_path(a.out, split) + ".tmp.npy", rows)
        os.replace(index_path(a.out, split) + ".tmp.npy", index_path(a.out, split))
        manifest["splits"][split] = {"count": len(plan), "shards": listed}
    if odd["bad"]:
        raise DataError(f"{len(odd['bad'])} image(s) do not decode (first {odd['bad'][0]}): a "
                        "damaged download? Fetch the tar again (check it with --verify-md5)")
    with open(os.path.join(a.out, "classes.txt.tmp"), "w") as f:
        f.writelines(f"{w}\t{names.get(w, '')}\n" for w in classes)
    os.replace(os.path.join(a.out, "classes.txt.tmp"), os.path.join(a.out, "classes.txt"))
    manifest["odd_files"] = {"cmyk_jpeg_kept": odd["cmyk"], "png_stored_as_png": odd["png"]}
    with open(os.path.join(a.out, INDEX + ".tmp"), "w") as f:
        json.dump(manifest, f, indent=1)
    os.replace(os.path.join(a.out, INDEX + ".tmp"), os.path.join(a.out, INDEX))
    return odd


def progress_factory(enabled):
    """tqdm bars on stderr (updated every second on a terminal, every 30 s into a log)."""
    from contextlib import nullcontext
    from types import SimpleNamespace
    interval = 1 if sys.stderr.isatty() else 30

    def make(total, desc, unit):
        if not enabled:
            return nullcontext(SimpleNamespace(update=lambda n=1: None))
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B",
                    mininterval=interval, file=sys.stderr)
    return make


def run(a):
    start = time.perf_counter()
    progress = progress_factory(not a.no_progress)
    if a.verify_md5 and not a.from_folder:
        verify_md5([a.train_tar, a.val_tar] + ([a.devkit] if a.devkit else []), progress)
    train, val, classes, names = plans(a, progress)
    counts = check_counts(a, train, val, classes)
    say(f"found {counts['train']:,} training images in {counts['classes']:,} classes and "
        f"{counts['val']:,} validation images ({(train.total_bytes + val.total_bytes) / 1e9:.2f}"
        " GB); labels: index in the sorted WNIDs")
    resumed = start_or_resume(a.out, fingerprint(a, train, val))
    shard_bytes = int(a.shard_size * 1e6)
    shards, jobs = {}, []
    for split, plan in (("train", train), ("val", val)):
        of, shards[split] = deal(plan, shard_bytes, a.seed, split)
        _JOBS[split] = (plan, of)
        jobs += [(split, n) for n in range(shards[split])]
    records = write_all(a, jobs, progress, train.total_bytes + val.total_bytes)
    seconds = time.perf_counter() - start
    odd = finish(a, {"train": train, "val": val}, shards, records, classes, names, counts,
                 seconds)
    report(a, odd, shards, train.total_bytes + val.total_bytes, seconds, resumed)


def report(a, odd, shards, total, seconds, resumed):
    for path in odd["cmyk"]:
        say(f"{path}: a CMYK JPEG, kept as it is (Pillow and DALI both decode it to RGB)")
    for path in odd["png"]:
        say(f"{path}: a PNG named .JPEG, stored as KEY.png (its bytes unchanged)")
    say(f"wrote {shards['train']} training and {shards['val']} validation shards to {a.out} "
        f"in {seconds:.1f} s ({total / 1e6 / max(seconds, 1e-9):.1f} MB/s with {a.workers} "
        f"worker(s){', resumed' if resumed else ''}); every image decoded")
    say(f"train with: --data-dir {a.out}   copy to nodes with: python -m data.stage {a.out} DST")


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        run(a)
    except DataError as e:
        print(f"prepare_imagenet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prepare_imagenet: interrupted; run the same command again to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
