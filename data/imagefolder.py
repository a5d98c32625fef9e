"""Listing an ImageNet-layout data set: ``ROOT/train/<class>/*.JPEG``, ``ROOT/val/<class>/*``.

Only the listing lives here (paths, integer labels, class names); decoding belongs to the
loaders. Class indices are the sorted class-directory names of the training split, so the
validation split and every rank agree on them. Problems are one-line ``DataError``s that say
what is wrong and what to do.
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

    def __len__(self):
        return len(self.files)


def list_split(data_dir, split, classes=None):
    """List ``data_dir/split``. ``classes`` (from the training split) fixes the label order."""
    if not data_dir:
        raise DataError("no data directory given: pass --data-dir DIR (ImageNet layout, "
                        "DIR/train/<class>/*), or run `make toy-data` for the toy set")
    if not os.path.isdir(data_dir):
        raise DataError(f"data directory {data_dir} does not exist: check --data-dir "
                        "(or run `make toy-data` for the toy set)")
    root = os.path.join(data_dir, split)
    if not os.path.isdir(root):
        raise DataError(f"{root} does not exist: the data directory needs {split}/<class>/ "
                        "sub-folders (ImageNet layout)")
    found = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
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
        images = sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_EXTENSIONS))
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
