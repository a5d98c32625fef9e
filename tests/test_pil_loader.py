import os

import numpy as np
import pytest

from data.imagefolder import DataError, list_imagenet, list_split
from data.pil_loader import MEAN, STD, PilTrainLoader, PilValLoader
from data.sampler import padded_epoch_length

LOW, HIGH = (0 - MEAN.max()) / STD.min(), (255 - MEAN.min()) / STD.min()


def test_listing_shares_class_order(toy_dir):
    train, val = list_imagenet(toy_dir)
    assert len(train) == 240 and len(val) == 80
    assert train.classes == val.classes and len(train.classes) == 10
    assert np.bincount(train.labels).tolist() == [24] * 10
    assert all(os.path.isfile(f) for f in train.files)


def test_train_batches_shape_dtype_and_range(toy_dir):
    train, _ = list_imagenet(toy_dir)
    loader = PilTrainLoader(train, 24, seed=0, num_threads=2)
    x, y = loader.next_batch(16)
    loader.close()
    assert x.shape == (16, 3, 24, 24) and x.dtype == np.float32
    assert y.shape == (16, 1) and y.dtype == np.int32
    assert LOW - 1e-4 <= x.min() and x.max() <= HIGH + 1e-4
    assert 0.2 < x.std() < 3.0                     # normalised, not raw pixels
    assert set(y.ravel()) <= set(range(10))


def test_train_batches_are_deterministic_and_follow_the_stream(toy_dir):
    train, _ = list_imagenet(toy_dir)
    a = PilTrainLoader(train, 16, seed=3)
    b = PilTrainLoader(train, 16, seed=3)
    for size in (8, 8, 5):
        xa, ya = a.next_batch(size)
        xb, yb = b.next_batch(size)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    a.close(), b.close()


def test_batch_size_change_rewinds_the_prefetch(toy_dir):
    """After a size change the state counts only delivered samples (no sample lost)."""
    train, _ = list_imagenet(toy_dir)
    loader = PilTrainLoader(train, 16, shard_id=1, num_shards=2, seed=1)
    labels = []
    for size in (10, 10, 30, 7, 30, 33):   # 120 = one shard-epoch of 240 / 2
        labels.append(loader.next_batch(size)[1])
        assert loader.state()["offset"] in (sum(len(l) for l in labels) * 2, 0)
    assert loader.state() == {"epoch": 1, "offset": 0}
    assert loader.epochs_done == 1.0
    loader.close()
    per_class = np.bincount(np.concatenate(labels).ravel(), minlength=10)
    # the two shards split each class's 24 images; together they see all of them
    other = PilTrainLoader(train, 16, shard_id=0, num_shards=2, seed=1)
    both = per_class + np.bincount(other.next_batch(120)[1].ravel(), minlength=10)
    other.close()
    assert both.tolist() == [24] * 10


def test_validation_counts_each_image_once_across_ranks(toy_dir):
    _, val = list_imagenet(toy_dir)
    seen = []
    for rank in range(3):
        loader = PilValLoader(val, 16, batch_size=7, shard_id=rank, num_shards=3,
                              resize_ratio=256 / 224)
        for x, y, valid in loader:
            assert x.shape == (7, 3, 16, 16) and y.shape == (7, 1)
            assert 1 <= valid <= 7
            seen.append(valid)
    assert sum(seen) == len(val) == 80


def test_missing_and_empty_data_are_one_line_errors(tmp_path, toy_dir):
    with pytest.raises(DataError, match="does not exist.*--data-dir"):
        list_imagenet(str(tmp_path / "nope"))
    with pytest.raises(DataError, match="no data directory given"):
        list_imagenet(None)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="cat has no images"):
        list_split(str(tmp_path), "train")
    with pytest.raises(DataError, match="val does not exist"):
        list_split(str(tmp_path), "val")


def test_a_corrupt_jpeg_is_named(tmp_path):
    folder = tmp_path / "train" / "a"
    folder.mkdir(parents=True)
    (folder / "bad.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    train = list_split(str(tmp_path), "train")
    loader = PilTrainLoader(train, 8)
    with pytest.raises(DataError, match="bad.JPEG"):
        loader.next_batch(1)
    loader.close()


def test_padded_length():
    assert padded_epoch_length(10, 4) == 12
    assert padded_epoch_length(12, 4) == 12
