"""What the official ImageNet archives hold, found without extracting them.

``train_plan(tar)`` walks the headers of ``ILSVRC2012_img_train.tar`` and of each ``nWNID.tar``
inside it (tar members are stored uncompressed, so every image is a byte range of the outer
file); ``val_plan(tar, wnid_of)`` does the same for the flat validation tar. The validation
labels come from the devkit (``devkit_val_wnids``: ``data/meta.mat`` read with scipy.io as
torchvision does, leaves are the synsets with ``num_children`` 0, and
``ILSVRC2012_validation_ground_truth.txt`` holds one ILSVRC2012_ID per image, in the devkit's
own class order) or Kaggle's ``LOC_val_solution.csv`` (first token of ``PredictionString``).
Labels are positions in the sorted WNIDs, never devkit IDs: those are in another order, and
using them as labels is the classic 0.1 %-accuracy mistake. ``folder_plan`` does the same
for an ImageNet-layout folder. Every problem is a one-line ``DataError``.
"""
import csv
import os
import re
import tarfile
from dataclasses import dataclass
from typing import List

import numpy as np

from .imagefolder import DataError, list_imagenet

TRAIN_MEMBER = re.compile(r"^(n\d{8})\.tar$")
VAL_MEMBER = re.compile(r"^(ILSVRC2012_val_\d{8})\.(JPEG|jpeg|jpg|png)$")
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"


@dataclass
class Plan:
    """Every sample of a split as a byte range of a source file, in the folder loader's order
    (label, then file name)."""
    sources: List[str]
    names: List[str]          # original file names (KEY = name without extension)
    labels: np.ndarray        # int32, index in the sorted WNIDs
    source: np.ndarray        # int32, index into sources
    offset: np.ndarray        # int64, where the bytes start in the source
    size: np.ndarray          # int64

    def __len__(self):
        return len(self.names)

    @property
    def total_bytes(self):
        return int(self.size.sum())


class _Window:
    """A read-only view of ``f`` from ``base`` for ``length`` bytes; positions are absolute,
    so tarfile's member offsets are offsets in the outer file."""

    def __init__(self, f, base, length):
        self.f, self.base, self.end, self.pos = f, base, base + length, base

    def tell(self):
        return self.pos

    def seek(self, pos, whence=0):
        self.pos = {0: pos, 1: self.pos + pos, 2: self.end + pos}[whence]
        return self.pos

    def read(self, n=-1):
        n = self.end - self.pos if n < 0 else min(n, self.end - self.pos)
        self.f.seek(self.pos)
        data = self.f.read(max(0, n))
        self.pos += len(data)
        return data


def _open_tar(path, what):
    try:
        return tarfile.open(path, mode="r:")
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist") from None
    except tarfile.ReadError as e:
        raise DataError(f"{what} {path} is not an uncompressed tar ({e}): pass the official "
                        "ILSVRC2012_img_*.tar as downloaded, or an ImageNet folder with "
                        "--from-folder") from None


def _members(tar, path, what):
    try:
        for info in tar:
            if info.isfile():
                yield info
    except tarfile.TarError as e:
        raise DataError(f"{what} {path} is damaged ({e}): download it again (check its MD5 "
                        "with --verify-md5)") from None


class _Unusual(Exception):
    """A header the fast walk does not read (long names, pax, links): tarfile reads it."""


def _plain_members(fd, base, length):
    """(name, data offset, size) of each regular file in the tar at ``base`` of ``fd``, read
    straight from the ustar headers (one 512-byte pread each; tarfile costs ~10x more per
    member, which matters for 1.28 M of them)."""
    pos, end, found = base, base + length, []
    while pos + 512 <= end:
        header = os.pread(fd, 512, pos)
        if len(header) < 512 or header == bytes(512):
            break
        if header[156:157] not in (b"0", b"\0", b"5") or header[257:262] != b"ustar":
            raise _Unusual()
        size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        name = header[:100].split(b"\0", 1)[0]
        prefix = header[345:500].split(b"\0", 1)[0]
        if header[156:157] != b"5":
            found.append(((prefix + b"/" + name if prefix else name).decode(), pos + 512, size))
        pos += 512 + -(-size // 512) * 512
    return found


def _class_members(raw, fd, info, path):
    """(file name, offset, size) of the images in one nWNID.tar member."""
    try:
        return [(os.path.basename(n), o, s) for n, o, s in
                _plain_members(fd, info.offset_data, info.size)]
    except (_Unusual, ValueError, UnicodeDecodeError):
        inner = tarfile.open(fileobj=_Window(raw, info.offset_data, info.size), mode="r:")
        return [(os.path.basename(m.name), m.offset_data, m.size)
                for m in _members(inner, f"{path}:{info.name}", "class tar")]


def _sorted_plan(sources, rows, classes):
    """rows: (wnid, name, source, offset, size) -> Plan in (label, name) order."""
    label_of = {w: k for k, w in enumerate(classes)}
    rows.sort(key=lambda r: (label_of[r[0]], r[1]))
    return Plan(sources, [r[1] for r in rows],
                np.array([label_of[r[0]] for r in rows], np.int32),
                np.array([r[2] for r in rows], np.int32),
                np.array([r[3] for r in rows], np.int64),
                np.array([r[4] for r in rows], np.int64))


def train_plan(path, progress=None):
    """(Plan, sorted WNIDs) of the nested training tar."""
    what = "training tar"
    rows = []
    with _open_tar(path, what) as outer, open(path, "rb") as raw:
        for info in _members(outer, path, what):
            m = TRAIN_MEMBER.match(os.path.basename(info.name))
            if not m:
                swapped = VAL_MEMBER.match(os.path.basename(info.name))
                raise DataError(f"{path} is not ImageNet's training tar: member {info.name!r} "
                                "is not an nWNID.tar"
                                + ("; it looks like the validation tar: swap --train-tar and "
                                   "--val-tar" if swapped else
                                   "; pass ILSVRC2012_img_train.tar, or an ImageNet folder "
                                   "with --from-folder"))
            wnid = m.group(1)
            rows += [(wnid, name, 0, offset, size) for name, offset, size in
                     _class_members(raw, raw.fileno(), info, path)]
            if progress:
                progress(1)
    if not rows:
        raise DataError(f"{path} holds no images: is it ImageNet's training tar?")
    classes = sorted({r[0] for r in rows})
    return _sorted_plan([os.path.abspath(path)], rows, classes), classes


def val_plan(path, wnid_of, classes):
    """Plan of the flat validation tar; ``wnid_of`` maps an image's stem to its WNID."""
    what = "validation tar"
    rows, missing = [], []
    with _open_tar(path, what) as tar:
        for info in _members(tar, path, what):
            name = os.path.basename(info.name)
            m = VAL_MEMBER.match(name)
            if not m:
                raise DataError(f"{path} is not ImageNet's validation tar: member {info.name!r} "
                                "is not ILSVRC2012_val_NNNNNNNN.JPEG"
                                + ("; it looks like the training tar: swap --train-tar and "
                                   "--val-tar" if TRAIN_MEMBER.match(name) else ""))
            wnid = wnid_of.get(m.group(1))
            if wnid is None:
                missing.append(name)
                continue
            rows.append((wnid, name, 0, info.offset_data, info.size))
    if missing:
        raise DataError(f"no label for {len(missing):,} validation image(s) (first "
                        f"{missing[0]}): the labels given cover {len(wnid_of):,} images; pass "
                        "the devkit or CSV that belongs to this validation tar")
    unknown = sorted({r[0] for r in rows} - set(classes))
    if unknown:
        raise DataError(f"the validation labels name {len(unknown)} WNID(s) the training tar "
                        f"has no class for (first {unknown[0]}): the labels do not belong to "
                        "these tars")
    return _sorted_plan([os.path.abspath(path)], rows, classes)


def devkit_val_wnids(path):
    """{``ILSVRC2012_val_NNNNNNNN``: WNID} and {WNID: names} from the devkit tar.gz (or its
    extracted directory), via meta.mat's leaves as torchvision's parse_devkit_archive."""
    meta, truth = _devkit_files(path)
    from scipy.io import loadmat
    try:
        synsets = loadmat(meta, squeeze_me=True)["synsets"]
        leaf = np.array([int(n) == 0 for n in synsets["num_children"]])
        ids = [int(i) for i in synsets["ILSVRC2012_ID"][leaf]]
        wnids = [str(w) for w in synsets["WNID"][leaf]]
        words = [str(w) for w in synsets["words"][leaf]]
    except (KeyError, ValueError, TypeError) as e:
        raise DataError(f"{path}: data/meta.mat has no usable synsets struct ({e}): pass the "
                        "official ILSVRC2012_devkit_t12.tar.gz") from None
    wnid_of_id = dict(zip(ids, wnids))
    lines = truth.decode().split()
    try:
        val = {f"ILSVRC2012_val_{k + 1:08d}": wnid_of_id[int(t)] for k, t in enumerate(lines)}
    except (KeyError, ValueError) as e:
        raise DataError(f"{path}: {GROUND_TRUTH} holds {e}, not a leaf ILSVRC2012_ID of "
                        "meta.mat: the devkit is damaged") from None
    return val, dict(zip(wnids, words))


def _devkit_files(path):
    """(meta.mat file object, ground truth bytes) from the tar.gz or a directory."""
    import io
    if os.path.isdir(path):
        found = {}
        for root, _, files in os.walk(path):
            for f in files:
                found.setdefault(f, os.path.join(root, f))
        if "meta.mat" in found and GROUND_TRUTH in found:
            with open(found["meta.mat"], "rb") as m, open(found[GROUND_TRUTH], "rb") as t:
                return io.BytesIO(m.read()), t.read()
    else:
        try:
            with tarfile.open(path) as tar:
                names = {os.path.basename(n): n for n in tar.getnames()}
                if "meta.mat" in names and GROUND_TRUTH in names:
                    return (io.BytesIO(tar.extractfile(names["meta.mat"]).read()),
                            tar.extractfile(names[GROUND_TRUTH]).read())
        except (OSError, tarfile.TarError) as e:
            why = str(e).splitlines()[0].rstrip(":")
            raise DataError(f"--devkit {path}: cannot read it ({why}): pass the official "
                            "ILSVRC2012_devkit_t12.tar.gz") from None
    raise DataError(f"--devkit {path} holds no data/meta.mat and data/{GROUND_TRUTH}: pass the "
                    "official ILSVRC2012_devkit_t12.tar.gz (or --val-labels LOC_val_solution.csv)")


def csv_val_wnids(path):
    """{``ILSVRC2012_val_NNNNNNNN``: WNID} from Kaggle's LOC_val_solution.csv, and names from
    LOC_synset_mapping.txt beside it when present."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            if not {"ImageId", "PredictionString"} <= set(reader.fieldnames or ()):
                raise DataError(f"--val-labels {path} has no ImageId,PredictionString header: "
                                "pass Kaggle's LOC_val_solution.csv")
            val = {row["ImageId"]: row["PredictionString"].split()[0] for row in reader
                   if row["PredictionString"].strip()}
    except FileNotFoundError:
        raise DataError(f"--val-labels {path} does not exist") from None
    names = {}
    mapping = os.path.join(os.path.dirname(path), "LOC_synset_mapping.txt")
    if os.path.isfile(mapping):
        with open(mapping) as f:
            for line in f:
                wnid, _, words = line.strip().partition(" ")
                names[wnid] = words
    return val, names


def folder_plan(data_dir):
    """(train Plan, val Plan, classes) of an ImageNet-layout folder: one source per file."""
    try:
        train, val = list_imagenet(data_dir)
    except DataError as e:
        raise DataError(f"--from-folder: {e}") from None
    plans = []
    for listing in (train, val):
        sizes = np.array([os.path.getsize(f) for f in listing.files], np.int64)
        plans.append(Plan(list(listing.files), [os.path.basename(f) for f in listing.files],
                          listing.labels.astype(np.int32),
                          np.arange(len(listing), dtype=np.int32),
                          np.zeros(len(listing), np.int64), sizes))
    return plans[0], plans[1], list(train.classes)
