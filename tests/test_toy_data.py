import hashlib
import os

from PIL import Image

from data.toy_imagenet import generate


def digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(f.encode())
            with open(os.path.join(dirpath, f), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_generator_is_deterministic_and_writes_jpegs_in_imagenet_layout(tmp_path):
    generate(str(tmp_path / "a"), classes=3, train_per_class=4, val_per_class=2, size=24)
    generate(str(tmp_path / "b"), classes=3, train_per_class=4, val_per_class=2, size=24)
    generate(str(tmp_path / "c"), classes=3, train_per_class=4, val_per_class=2, size=24, seed=1)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    classes = sorted(os.listdir(tmp_path / "a" / "train"))
    assert len(classes) == 3 and sorted(os.listdir(tmp_path / "a" / "val")) == classes
    path = tmp_path / "a" / "train" / classes[0]
    files = sorted(os.listdir(path))
    assert len(files) == 4
    with Image.open(path / files[0]) as img:
        assert img.format == "JPEG" and img.size == (24, 24) and img.mode == "RGB"
