"""Listing a data set: ImageNet-layout folders or ``path label`` file lists, minus exclusions.

Layout: ``ROOT/train/<class>/*.JPEG``, ``ROOT/val/<class>/*``; class indices are the sorted
class-directory names of the training split, so the validation split and every rank agree.
File lists (as nnabla-examples' ``create_input_files.py`` writes them): one ``path label``
line per image, paths relative to ``ROOT/train`` (``ROOT/val`` for the validation list), so
the flat ImageNet validation folder works. An exclusion list (written by
``python -m tools.check_dataset ROOT --write-exclude FILE``) holds paths relative to ``ROOT``
that are dropped up front (the list file is found relative to the current directory).

Only the listing lives here (paths, integer labels, class names); decoding belongs to the
loaders. Problems are one-line ``DataError``s that say what is wrong and what to do.
"""
import os
from dataclasses import dataclass
from typing import List

import numpy as np

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class DataError(ValueError):
    """A data set problem; the message names the path and the fix."""


@dataclass
class Listing:
    root: str
    files: List[str]          # absolute paths
    labels: np.ndarray        # int32, one per file
    classes: List[str]        # index -> class directory name
    excluded: int = 0         # files dropped because the exclusion list names them

    def __len__(self):
        return len(self.files)

    # Where a loader's bytes come from (data/packed.py's PackedListing has the same three).
    def read(self, i):
        """The encoded bytes of sample ``i`` (OSError if the file cannot be read)."""
        with open(self.files[i], "rb") as f:
            return f.read()

    def name(self, i):
        return self.files[i]

    def source(self, i):
        """What Pillow opens for sample ``i``: its path."""
        return self.files[i]


def _check_data_dir(data_dir):
    if not data_dir:
        raise DataError("no data directory given: pass --data-dir DIR (ImageNet layout, "
                        "DIR/train/<class>/*), or run `make toy-data` for the toy set")
    if not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir} does not exist: check --data-dir "
                        "(or run `make toy-data` for the toy set)")


def _list(folder):
    try:
        return os.listdir(folder)
    except OSError as e:
        raise DataError(f"cannot list {folder}: {e.strerror}; check its permissions (the user "
                        "running the job must be able to read every class folder)") from None


def list_split(data_dir, split, classes=None):
    """List ``data_dir/split``. ``classes`` (from the training split) fixes the label order."""
    _check_data_dir(data_dir)
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
        raise DataError(f"{root} does not exist: the data directory needs {split}/<class>/ "
                        "sub-folders (ImageNet layout)")
    found = sorted(d for d in _list(root) if os.path.isdir(os.path.join(root, d)))
    if not found:
        raise DataError(f"{root} has no class sub-folders: expected {split}/<class>/<image>")
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"{root} has classes not in the training split: "
                            f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}; "
                            "train and val must use the same class folders")
    files, labels = [], []
    for index, name in enumerate(classes):
        folder = os.path.join(root, name)
        if not os.path.isdir(folder):
            continue  # a validation split may lack a class; training defines the classes
        images = sorted(f for f in _list(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        if not images and split == "train":
            raise DataError(f"class folder {folder} has no images (.jpg/.jpeg/.png): remove it "
                            "or fill it")
        files.extend(os.path.join(folder, f) for f in images)
        labels.extend([index] * len(images))
    if not files:
        raise DataError(f"{root} holds no images (.jpg/.jpeg/.png) in its class folders")
    return Listing(root, files, np.asarray(labels, dtype=np.int32), list(classes))


def list_imagenet(data_dir):
    """(train, val) listings with a shared class order."""
    train = list_split(data_dir, "train")
    val = list_split(data_dir, "val", classes=train.classes)
    return train, val


def _resolve(data_dir, path):
    return path if os.path.isabs(path) else os.path.join(data_dir, path)


def read_file_list(data_dir, split, list_path):
    """Listing of ``split`` from a ``path label`` file (paths relative to ``data_dir/split``)."""
    list_path = _resolve(data_dir, list_path)
    if not os.path.isfile(list_path):
        raise DataError(f"file list {list_path} does not exist: data.{split}_list is read "
                        "relative to the data directory (lines: `relative/path.JPEG label`)")
    root = os.path.join(data_dir, split)
    files, labels = [], []
    with open(list_path) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            path, _, label = line.rpartition(" ")
            if not path or not label.isdigit():
                raise DataError(f"{list_path} line {number}: expected `path label` with a "
                                f"non-negative integer label, got {line[:80]!r}")
            files.append(os.path.join(root, path.strip()))
            labels.append(int(label))
    if not files:
        raise DataError(f"file list {list_path} names no images")
    labels = np.asarray(labels, dtype=np.int32)
    classes = [str(c) for c in range(int(labels.max()) + 1)]
    return Listing(root, files, labels, classes)


def list_file_lists(data_dir, train_list, val_list):
    """(train, val) listings from file lists; labels index the same classes in both."""
    _check_data_dir(data_dir)
    train = read_file_list(data_dir, "train", train_list)
    val = read_file_list(data_dir, "val", val_list)
    if len(val.classes) > len(train.classes):
        raise DataError(f"validation list {val_list} uses label {len(val.classes) - 1} but the "
                        f"training list only labels 0..{len(train.classes) - 1}; the lists "
                        "must share one class numbering")
    val.classes = train.classes
    return train, val


def read_exclude_list(data_dir, path):
    """Normalised paths named by an exclusion list (``#`` comments allowed).

    The list file itself is found like any file on the command line (relative to the current
    directory); its entries are relative to ``data_dir``, as the checker writes them.
    """
    if not os.path.isfile(path):
        raise DataError(f"exclusion list {path} does not exist: write it with "
                        f"`python -m tools.check_dataset {data_dir} --write-exclude {path}`")
    with open(path) as f:
        entries = [line.strip() for line in f]
    return {os.path.normpath(_resolve(data_dir, e)) for e in entries
            if e and not e.startswith("#")}


def exclude(listing, excluded_paths):
    """``listing`` without the files in ``excluded_paths`` (a set of normalised paths)."""
    keep = np.array([os.path.normpath(f) not in excluded_paths for f in listing.files], bool)
    if keep.all():
        return listing
    if not keep.any():
        raise DataError(f"the exclusion list drops every image of {listing.root}")
    return Listing(listing.root, [f for f, k in zip(listing.files, keep) if k],
                   listing.labels[keep], listing.classes, int((~keep).sum()))
