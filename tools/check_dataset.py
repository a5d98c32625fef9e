"""Find the broken files of an image data set before a run meets them.

    python -m tools.check_dataset DIR [--write-exclude bad.txt] [--workers N]
    python -m tools.check_dataset DIR --train-list train_label --val-list val_label

Decodes every image of DIR/train and DIR/val (ImageNet layout, or the files that the
``path label`` lists name) in parallel processes, with the same test the loaders use
(data/checks.py: full Pillow decode, formats DALI reads too), and reports unreadable or
corrupt images, empty class folders, listed files that are missing and validation classes
that training lacks. ``--write-exclude FILE`` writes the broken files (paths relative to DIR)
for ``--set data.on_bad_image=skip --set data.exclude_list=FILE``. Exits 1 when it found a
problem, 0 when the data set is clean, 2 when it cannot start.
"""
import argparse
import multiprocessing
import os
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from data.checks import check_image  # noqa: E402
from data.imagefolder import IMAGE_EXTENSIONS, DataError, read_file_list  # noqa: E402

SPLITS = ("train", "val")


def _walk_split(data_dir, split, problems, notes):
    """{class name: [paths]} of an ImageNet-layout split; empty classes become problems."""
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
        problems.append(f"{split}/ does not exist (expected {split}/<class>/<image>)")
        return {}
    classes = {}
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue
        entries = sorted(os.listdir(folder))
        images = [os.path.join(folder, f) for f in entries if f.lower().endswith(IMAGE_EXTENSIONS)]
        if len(images) < len(entries):
            notes.append(f"{split}/{name}: {len(entries) - len(images)} entries without an "
                         "image extension are ignored by the loaders")
        if not images:
            problems.append(f"empty class: {split}/{name} has no images (.jpg/.jpeg/.png)")
        classes[name] = images
    if not classes:
        problems.append(f"{split}/ has no class folders")
    return classes


def gather(data_dir, train_list, val_list, problems, notes):
    """Paths to decode, after the layout checks."""
    paths = []
    if train_list:
        for split, list_path in zip(SPLITS, (train_list, val_list)):
            try:
                listing = read_file_list(data_dir, split, list_path)
            except DataError as e:
                problems.append(str(e))
                continue
            for path in listing.files:
                if os.path.isfile(path):
                    paths.append(path)
                else:
                    problems.append(f"listed but missing: {os.path.relpath(path, data_dir)}")
        return paths
    found = {split: _walk_split(data_dir, split, problems, notes) for split in SPLITS}
    extra = sorted(set(found["val"]) - set(found["train"]))
    if extra:
        problems.append(f"class mismatch: val has {len(extra)} classes that train lacks "
                        f"({', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''})")
    missing = sorted(set(found["train"]) - set(found["val"]))
    if found["val"] and missing:
        notes.append(f"val has no folder for {len(missing)} training classes "
                     f"({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''})")
    for split in SPLITS:
        for images in found[split].values():
            paths.extend(images)
    return paths


def _check(path):
    return path, check_image(path)


def decode_all(paths, workers, progress_every=10.0):
    """[(path, reason)] of the unusable files, checking in ``workers`` processes."""
    bad, start, last = [], time.time(), time.time()
    with multiprocessing.Pool(workers) as pool:
        for done, (path, reason) in enumerate(pool.imap_unordered(_check, paths, chunksize=64), 1):
            if reason is not None:
                bad.append((path, reason))
            if time.time() - last > progress_every:
                last = time.time()
                rate = done / (last - start)
                print(f"checked {done:,}/{len(paths):,} files ({rate:,.0f}/s, "
                      f"{(len(paths) - done) / rate:,.0f} s left), {len(bad)} broken so far",
                      file=sys.stderr, flush=True)
    return sorted(bad)


def write_exclude(path, data_dir, bad):
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"# broken images found by `python -m tools.check_dataset {data_dir}`; paths "
                "relative to the data directory\n")
        for file, _ in bad:
            f.write(os.path.relpath(file, data_dir) + "\n")
    os.replace(tmp, path)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 2)[2])
    p.add_argument("data_dir")
    p.add_argument("--train-list", help="`path label` file, paths relative to DIR/train")
    p.add_argument("--val-list", help="`path label` file, paths relative to DIR/val")
    p.add_argument("--write-exclude", metavar="FILE",
                   help="write the broken files here (for data.exclude_list)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = p.parse_args(argv)
    if not os.path.isdir(a.data_dir):
        print(f"check_dataset: {a.data_dir} is not a directory: pass the data directory "
              "(DIR/train/<class>/*, DIR/val/...)", file=sys.stderr)
        return 2
    if bool(a.train_list) != bool(a.val_list):
        print("check_dataset: --train-list and --val-list go together", file=sys.stderr)
        return 2

    problems, notes = [], []
    start = time.time()
    paths = gather(a.data_dir, a.train_list, a.val_list, problems, notes)
    bad = decode_all(paths, max(1, a.workers)) if paths else []
    for note in notes:
        print(f"note: {note}")
    for problem in problems:
        print(f"problem: {problem}")
    for path, reason in bad:
        print(f"broken: {os.path.relpath(path, a.data_dir)}: {reason}")
    if a.write_exclude:
        write_exclude(a.write_exclude, a.data_dir, bad)
    print(f"checked {len(paths):,} images in {time.time() - start:.1f} s: {len(bad)} broken, "
          f"{len(problems)} other problems"
          + (f"; wrote {a.write_exclude}" if a.write_exclude else ""))
    if bad and not a.write_exclude:
        print("fix: replace or delete the broken files, or write an exclusion list with "
              f"`python -m tools.check_dataset {a.data_dir} --write-exclude bad.txt` and train "
              "with --set data.on_bad_image=skip --set data.exclude_list=bad.txt")
    elif bad:
        print(f"next: train with --set data.on_bad_image=skip --set data.exclude_list="
              f"{a.write_exclude}")
    return 1 if bad or problems else 0


if __name__ == "__main__":
    sys.exit(main())
