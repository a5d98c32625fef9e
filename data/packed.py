"""A packed data set: webdataset-layout tar shards plus a compact index, and reading it.

Layout of a packed directory (written by ``python -m data.prepare_imagenet``):

    DIR/train-000000.tar ...   POSIX (ustar) tars; per sample ``KEY.jpg`` (or ``KEY.png`` when
    DIR/val-000000.tar ...     the bytes are a PNG) then ``KEY.cls``, its label as ASCII decimal.
                               KEY is the original file name without its extension, so the
                               webdataset library and DALI's webdataset reader read them as is.
    DIR/classes.txt            one line per label: ``WNID<TAB>names`` in label order (sorted
                               WNIDs, as torchvision and nnabla-examples number them).
    DIR/index-train.npy        one row per sample, in the folder loader's order (label, then
    DIR/index-val.npy          file name): shard number, byte offset of the image data in the
                               shard, its size, its label (20 bytes a sample).
    DIR/index.json             written last: the shards (name, size, sha256, samples), counts.

The loader never lists a directory or opens a file per sample: ``PackedListing`` maps the index
(``np.load(mmap_mode="r")``: the page cache holds it once for all ranks of a node), keeps one
file descriptor per shard it has touched, and reads a sample with one ``os.pread`` at its
offset. Start-up is reading index.json and two .npy headers, whatever the number of files.
"""
import io
import json
import os

import numpy as np

from .imagefolder import DataError

INDEX = "index.json"
FORMAT = "imagenet-packed-v1"
ROW = np.dtype([("shard", "<u4"), ("offset", "<u8"), ("size", "<u4"), ("label", "<i4")])
BLOCK = 512


def is_packed(data_dir):
    return bool(data_dir) and os.path.isfile(os.path.join(data_dir, INDEX))


def shard_name(split, number):
    return f"{split}-{number:06d}.tar"


def index_path(data_dir, split):
    return os.path.join(data_dir, f"index-{split}.npy")


def read_manifest(data_dir):
    """index.json as a dict; DataError (one line) if it is missing or not ours."""
    path = os.path.join(data_dir, INDEX)
    try:
        with open(path) as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{data_dir} is not a packed data set (no {INDEX}): make one with "
                        "`python -m data.prepare_imagenet ... --out DIR`") from None
    except ValueError as e:
        raise DataError(f"{path} is not valid JSON ({e}): prepare the data set again") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}: "
                        "prepare the data set again with this version")
    return manifest


def read_classes(data_dir):
    with open(os.path.join(data_dir, "classes.txt")) as f:
        return [line.split("\t", 1)[0].strip() for line in f if line.strip()]


class PackedListing:
    """The samples of one split of a packed set: what the loaders need of a ``Listing``
    (``labels``, ``classes``, ``root``, ``excluded``, ``len``) plus ``read(i)`` (the encoded
    bytes) and ``name(i)`` (shard and member, for error messages)."""

    def __init__(self, data_dir, split, manifest, classes, rows=None):
        self.root = data_dir
        self.split = split
        self.classes = classes
        self.excluded = 0
        self.shards = [s["name"] for s in manifest["splits"][split]["shards"]]
        self.sizes = [s["size"] for s in manifest["splits"][split]["shards"]]
        path = index_path(data_dir, split)
        try:
            self.index = np.load(path, mmap_mode="r") if rows is None else rows
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read the index {path} ({e}): prepare the data set "
                            "again") from None
        if self.index.dtype != ROW:
            raise DataError(f"{path} has rows {self.index.dtype}, expected {ROW}: prepare "
                            "the data set again")
        self.labels = self.index["label"]
        self._fds = {}

    def __len__(self):
        return len(self.index)

    def _fd(self, shard):
        fd = self._fds.get(shard)
        if fd is None:
            path = os.path.join(self.root, self.shards[shard])
            try:
                fd = os.open(path, os.O_RDONLY)
            except OSError as e:
                raise DataError(f"cannot open shard {path}: {e.strerror}; copy it again "
                                f"(python -m data.stage) or prepare the set again") from None
            fd = self._fds.setdefault(shard, fd)   # another thread may have opened it first
        return fd

    def read(self, i):
        """The encoded image of sample ``i``: one positioned read."""
        row = self.index[i]
        shard, offset, size = int(row["shard"]), int(row["offset"]), int(row["size"])
        data = os.pread(self._fd(shard), size, offset)
        if len(data) != size:
            raise DataError(f"shard {os.path.join(self.root, self.shards[shard])} is truncated "
                            f"({self.sizes[shard]:,} bytes expected; sample {i} needs bytes "
                            f"{offset:,}..{offset + size:,}): copy it again (python -m "
                            "data.stage) or prepare the set again")
        return data

    def source(self, i):
        """What Pillow opens for sample ``i``: its bytes, named for error messages."""
        data = io.BytesIO(self.read(i))
        data.name = self.name(i)
        return data

    def name(self, i):
        """``SHARD:MEMBER`` of sample ``i`` (the member name from its tar header)."""
        row = self.index[i]
        shard, offset = int(row["shard"]), int(row["offset"])
        header = os.pread(self._fd(shard), 100, offset - BLOCK)
        member = header.split(b"\0", 1)[0].decode("utf-8", "replace")
        return f"{os.path.join(self.root, self.shards[shard])}:{member}"

    def close(self):
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def list_packed(data_dir):
    """(train, val) ``PackedListing``s of the packed set in ``data_dir``."""
    manifest = read_manifest(data_dir)
    classes = read_classes(data_dir)
    if len(classes) != manifest["classes"]:
        raise DataError(f"{data_dir}/classes.txt has {len(classes)} classes but {INDEX} says "
                        f"{manifest['classes']}: prepare the data set again")
    return (PackedListing(data_dir, "train", manifest, classes),
            PackedListing(data_dir, "val", manifest, classes))
