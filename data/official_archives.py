"""ImageNet's three official archives, made up at any scale, for tests and benchmarks.

    python -m data.official_archives OUT [--classes 1000] [--train-per-class 1281]
        [--val-images 50000] [--size 16] [--seed 0] [--imagenet-shape]

Writes what image-net.org hands out, in the same layout:
  * ``ILSVRC2012_img_train.tar``: one member ``nWNID.tar`` per class, each an uncompressed tar
    of that class's ``nWNID_I.JPEG`` files;
  * ``ILSVRC2012_img_val.tar``: flat, ``ILSVRC2012_val_00000001.JPEG`` ...;
  * ``ILSVRC2012_devkit_t12.tar.gz``: ``ILSVRC2012_devkit_t12/data/meta.mat`` (the ``synsets``
    struct array: leaves with ``num_children`` 0 and ``ILSVRC2012_ID`` 1..C, plus internal
    synsets with children, as the real one has 1,860 rows) and
    ``ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt`` (one ID a line);
  * Kaggle's ``LOC_val_solution.csv`` and ``LOC_synset_mapping.txt`` beside them.
The ILSVRC2012_IDs are deliberately NOT in sorted-WNID order (as in the real devkit, where
validation image 1 has ID 490 but label 65 in sorted-WNID order), so a tool that uses the IDs
as labels gets 1/C accuracy. Like the real train tar, one class holds a CMYK JPEG and one a PNG named
``.JPEG``. Images are tiny noisy colour fields; at scale only a few distinct encodings per class
are made and reused under each file name (the byte stream is still a real JPEG per member).
``truth()`` returns the generator's own record of every file's WNID for the tests.
"""
import argparse
import gzip
import io
import os
import sys
import tarfile

import numpy as np
from PIL import Image

IMAGENET_TRAIN, IMAGENET_VAL, IMAGENET_CLASSES = 1281167, 50000, 1000
CMYK_SLOT, PNG_SLOT = (0, 1), (1, 2)      # (class, image) holding the odd formats
TRAIN_TAR, VAL_TAR = "ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar"
DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
GROUND_TRUTH = "ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt"
META = "ILSVRC2012_devkit_t12/data/meta.mat"


def wnids(classes, seed):
    """``classes`` distinct WordNet-like IDs, in devkit (ILSVRC2012_ID) order, not sorted."""
    rng = np.random.default_rng([seed, 7])
    numbers = rng.choice(np.arange(1_000_000, 15_000_000), size=classes, replace=False)
    return [f"n{n:08d}" for n in numbers]            # random order: IDs are not sorted WNIDs


def _encode(rng, size, mode="RGB", fmt="JPEG"):
    colour = rng.integers(0, 256, 3)
    pixels = np.clip(colour + rng.normal(0, 30, (size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(pixels, "RGB")
    if mode == "CMYK":
        img = img.convert("CMYK")
    out = io.BytesIO()
    img.save(out, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


class Images:
    """Encoded images by (class, image number), a few distinct ones per class."""

    def __init__(self, size, seed, variants=3):
        self.size, self.seed, self.variants, self.cache = size, seed, variants, {}

    def get(self, split, c, i):
        if (c, i) == CMYK_SLOT and split == "train":
            return _encode(np.random.default_rng([self.seed, 1]), self.size, "CMYK")
        if (c, i) == PNG_SLOT and split == "train":
            return _encode(np.random.default_rng([self.seed, 2]), self.size, fmt="PNG")
        key = (split, c, i % self.variants)
        if key not in self.cache:
            self.cache[key] = _encode(np.random.default_rng([self.seed, split == "val", c,
                                                             i % self.variants]), self.size)
        return self.cache[key]


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 1_340_000_000, 0o644   # fixed: same bytes
    tar.addfile(info, io.BytesIO(data))


def write_train(path, ids, counts, images):
    """The nested train tar: class ``c`` (WNID ``ids[c]``) holds ``counts[c]`` images."""
    with open(path + ".tmp", "wb") as f, tarfile.open(fileobj=f, mode="w",
                                                      format=tarfile.USTAR_FORMAT) as outer:
        for c, (wnid, count) in enumerate(zip(ids, counts)):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w", format=tarfile.USTAR_FORMAT) as t:
                for i in range(count):
                    _add(t, f"{wnid}_{i + 1}.JPEG", images.get("train", c, i))
            _add(outer, f"{wnid}.tar", inner.getvalue())
    os.replace(path + ".tmp", path)


def val_classes(count, classes, seed):
    """Devkit class index (0-based ILSVRC2012_ID - 1) of each validation image."""
    return np.random.default_rng([seed, 3]).integers(0, classes, count)


def write_val(path, classes_of, images):
    with open(path + ".tmp", "wb") as f, tarfile.open(fileobj=f, mode="w",
                                                      format=tarfile.USTAR_FORMAT) as tar:
        for k, c in enumerate(classes_of):
            _add(tar, f"ILSVRC2012_val_{k + 1:08d}.JPEG", images.get("val", int(c), k))
    os.replace(path + ".tmp", path)


def meta_mat(ids, seed):
    """meta.mat bytes: leaves (IDs 1..C, num_children 0) then internal synsets (children)."""
    from scipy.io import savemat
    internal = max(2, len(ids) // 2)
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children",
              "wordnet_height", "num_train_images"]
    rows = np.zeros((len(ids) + internal, 1), dtype=[(f, object) for f in fields])
    for k, wnid in enumerate(ids):
        rows[k, 0] = (np.uint16(k + 1), wnid, f"class {wnid}, thing {k}", "a leaf synset",
                      np.uint16(0), np.zeros((1, 0)), np.uint8(0), np.uint16(1300))
    rng = np.random.default_rng([seed, 5])
    for j in range(internal):
        children = np.sort(rng.choice(np.arange(1, len(ids) + 1), 2, replace=False))
        rows[len(ids) + j, 0] = (np.uint16(len(ids) + j + 1), f"n{90_000_000 + j:08d}",
                                 f"group {j}", "an internal synset", np.uint16(2),
                                 children.astype(np.uint16).reshape(1, -1), np.uint8(1),
                                 np.uint16(0))
    out = io.BytesIO()
    savemat(out, {"synsets": rows})
    return out.getvalue()


def write_devkit(path, ids, classes_of, seed):
    truth = "".join(f"{c + 1}\n" for c in classes_of).encode()
    with open(path + ".tmp", "wb") as f:
        with gzip.GzipFile(fileobj=f, mode="wb", mtime=0) as gz, \
                tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            _add(tar, META, meta_mat(ids, seed))
            _add(tar, GROUND_TRUTH, truth)
    os.replace(path + ".tmp", path)


def write_kaggle(out, ids, classes_of):
    with open(os.path.join(out, "LOC_val_solution.csv"), "w") as f:
        f.write("ImageId,PredictionString\n")
        for k, c in enumerate(classes_of):      # first token of PredictionString: the WNID
            f.write(f"ILSVRC2012_val_{k + 1:08d},{ids[c]} 10 20 30 40 \n")
    with open(os.path.join(out, "LOC_synset_mapping.txt"), "w") as f:
        f.writelines(f"{w} class {w}\n" for w in sorted(ids))


def generate(out, classes=10, train_per_class=6, val_images=20, size=16, seed=0):
    """Write the three archives (and Kaggle's CSV) into ``out``; returns ``truth(...)``."""
    if classes < 2 or train_per_class < 3 or val_images < 1:
        raise ValueError("need at least 2 classes, 3 training images per class, 1 val image")
    os.makedirs(out, exist_ok=True)
    ids, images = wnids(classes, seed), Images(size, seed)
    classes_of = val_classes(val_images, classes, seed)
    write_train(os.path.join(out, TRAIN_TAR), ids, [train_per_class] * classes, images)
    write_val(os.path.join(out, VAL_TAR), classes_of, images)
    write_devkit(os.path.join(out, DEVKIT), ids, classes_of, seed)
    write_kaggle(out, ids, classes_of)
    return truth(classes, train_per_class, val_images, seed)


def truth(classes, train_per_class, val_images, seed=0):
    """What the generator wrote: WNIDs in devkit order, each val file's WNID, the odd files."""
    ids = wnids(classes, seed)
    val = {f"ILSVRC2012_val_{k + 1:08d}.JPEG": ids[c]
           for k, c in enumerate(val_classes(val_images, classes, seed))}
    odd = {"cmyk": f"{ids[CMYK_SLOT[0]]}_{CMYK_SLOT[1] + 1}.JPEG",
           "png": f"{ids[PNG_SLOT[0]]}_{PNG_SLOT[1] + 1}.JPEG"}
    return {"devkit_order": ids, "val": val, "odd": odd, "train": classes * train_per_class}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--train-per-class", type=int, default=6)
    p.add_argument("--val-images", type=int, default=20)
    p.add_argument("--size", type=int, default=16, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--imagenet-shape", action="store_true",
                   help="1,000 classes, 1,281 or 1,282 per class (1,281,167 in all), 50,000 val")
    a = p.parse_args(argv)
    try:
        if a.imagenet_shape:
            return _imagenet_shape(a.out, a.size, a.seed)
        generate(a.out, a.classes, a.train_per_class, a.val_images, a.size, a.seed)
    except (ValueError, OSError) as e:
        sys.exit(f"official_archives: {e}")
    print(f"wrote {a.classes * a.train_per_class} training and {a.val_images} validation images "
          f"({a.classes} classes) as the official archives in {a.out}")
    return 0


def _imagenet_shape(out, size, seed):
    """1,281,167 training images: 167 classes get 1,282, the rest 1,281 (as close to the real
    per-class spread as a count needs; the real classes hold 732 to 1,300)."""
    os.makedirs(out, exist_ok=True)
    ids, images = wnids(IMAGENET_CLASSES, seed), Images(size, seed)
    extra = IMAGENET_TRAIN - IMAGENET_CLASSES * 1281
    counts = [1282 if c < extra else 1281 for c in range(IMAGENET_CLASSES)]
    classes_of = val_classes(IMAGENET_VAL, IMAGENET_CLASSES, seed)
    write_train(os.path.join(out, TRAIN_TAR), ids, counts, images)
    write_val(os.path.join(out, VAL_TAR), classes_of, images)
    write_devkit(os.path.join(out, DEVKIT), ids, classes_of, seed)
    write_kaggle(out, ids, classes_of)
    print(f"wrote {sum(counts):,} training and {IMAGENET_VAL:,} validation images "
          f"({IMAGENET_CLASSES} classes) as the official archives in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
