"""The DALI loaders on real JPEG files (CPU pipelines of each pinned DALI: 2.4, 1.53, 1.35)."""
import os
import threading

import nnabla as nn
import numpy as np
import pytest
from PIL import Image

from data.dali_loader import DaliTrainLoader, DaliValLoader
from data.imagefolder import DataError, Listing, list_imagenet, list_split
from data.pil_loader import MEAN, STD, PilTrainLoader, PilValLoader
from data.sampler import padded_epoch_length, stream_for

LOW, HIGH = (0 - MEAN.max()) / STD.min(), (255 - MEAN.min()) / STD.min()


def write_awkward(folder):
    """Images real data sets contain: grey, CMYK, PNG named .JPEG, tiny, extreme aspect."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    rgb.convert("L").save(folder / "gray.JPEG", "JPEG")
    rgb.convert("CMYK").save(folder / "cmyk.JPEG", "JPEG")
    rgb.save(folder / "png_named.JPEG", "PNG")
    rgb.resize((4, 4)).save(folder / "tiny.JPEG", "JPEG")
    rgb.resize((400, 8)).save(folder / "wide.JPEG", "JPEG")
    rgb.resize((8, 300)).save(folder / "tall.JPEG", "JPEG")


def write_broken(folder):
    """Files no decoder should accept; returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(np.full((40, 50, 3), 120, np.uint8))
    rgb.save(folder / "ok.JPEG", "JPEG")
    whole = (folder / "ok.JPEG").read_bytes()
    (folder / "truncated.JPEG").write_bytes(whole[:len(whole) // 2])
    (folder / "empty.JPEG").write_bytes(b"")
    (folder / "garbage.JPEG").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all" * 4)
    rgb.convert("P").save(folder / "gif_named.JPEG", "GIF")
    return ["empty.JPEG", "garbage.JPEG", "gif_named.JPEG", "truncated.JPEG"]


@pytest.fixture(scope="module")
def awkward_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("awkward")
    write_awkward(root / "train" / "a")
    write_awkward(root / "val" / "a")
    return str(root)


def unique_labels(listing):
    """The same files with label = sample index, so a label identifies the sample."""
    return Listing(listing.root, listing.files, np.arange(len(listing), dtype=np.int32),
                   [str(i) for i in range(len(listing))])


def test_awkward_images_decode_to_the_right_shape_and_range(awkward_dir):
    train = list_split(awkward_dir, "train")
    for channel_last, shape in ((False, (3, 24, 24)), (True, (24, 24, 3))):
        loader = DaliTrainLoader(train, 24, seed=0, channel_last=channel_last)
        x, y = loader.next_batch(len(train))
        loader.close()
        assert x.shape == (len(train),) + shape and x.dtype == np.float32
        assert y.shape == (len(train), 1) and y.dtype == np.int32
        assert LOW - 1e-4 <= x.min() and x.max() <= HIGH + 1e-4
        assert np.isfinite(x).all() and x.std() > 0.1
    half = DaliTrainLoader(train, 24, seed=0, half=True)   # FP16 training's input (GPU use)
    x16 = half.next_batch(4)[0]
    half.close()
    assert x16.dtype == np.float16 and np.isfinite(x16).all()
    for x, y, valid in DaliValLoader(train, 16, batch_size=4, resize_ratio=256 / 224):
        assert x.shape == (4, 3, 16, 16) and x.dtype == np.float32 and 1 <= valid <= 4
        assert LOW - 1e-4 <= x.min() and x.max() <= HIGH + 1e-4


def test_dali_and_pillow_crop_the_same_windows(toy_dir, awkward_dir):
    """Same seed: same samples, labels, crops and flips; only decoder/resampler rounding differs."""
    for root in (toy_dir, awkward_dir):
        train, val = list_imagenet(root)
        dali = DaliTrainLoader(train, 24, seed=5, min_crop_area=0.3)
        pil = PilTrainLoader(train, 24, seed=5, min_crop_area=0.3)
        for size in (6, 6, 4, 9):
            xd, yd = dali.next_batch(size)
            xp, yp = pil.next_batch(size)
            np.testing.assert_array_equal(yd, yp)
            # a different crop or flip differs by ~0.5 on average; rounding by ~0.005
            assert np.abs(xd - xp).mean() < 0.05, (root, size, np.abs(xd - xp).mean())
        assert dali.state() == pil.state()
        dali.close(), pil.close()
        for (xd, yd, vd), (xp, yp, vp) in zip(DaliValLoader(val, 24, 5), PilValLoader(val, 24, 5)):
            assert vd == vp
            np.testing.assert_array_equal(yd, yp)
            assert np.abs(xd - xp).mean() < 0.05


def test_exif_orientation_is_ignored_as_pillow_does(tmp_path):
    """DALI 2.x decoders rotate by EXIF unless told not to; the 1.x decoders of the 3.9/3.8
    pins cannot be told but never rotate. Every pinned DALI must crop the stored grid."""
    grid = np.zeros((40, 96, 3), np.uint8)
    grid[:, :48, 0], grid[:14, :, 1], grid[:, 80:, 2] = 230, 200, 250   # no symmetry
    for orientation in (6, 8, 3):
        exif = Image.Exif()
        exif[0x0112] = orientation
        for split in ("train", "val"):
            (tmp_path / split / "a").mkdir(parents=True, exist_ok=True)
            Image.fromarray(grid).save(tmp_path / split / "a" / f"{orientation}.JPEG", "JPEG",
                                       exif=exif, quality=95)
    train, val = list_imagenet(str(tmp_path))
    dali = DaliTrainLoader(train, 24, seed=1, min_crop_area=0.5)
    pil = PilTrainLoader(train, 24, seed=1, min_crop_area=0.5)
    # a rotated decode fails the batch (crop outside the picture) or differs by ~2
    xd, xp = dali.next_batch(3)[0], pil.next_batch(3)[0]
    dali.close(), pil.close()
    assert np.abs(xd - xp).mean() < 0.05, np.abs(xd - xp).mean()
    (vd, _, _), = DaliValLoader(val, 24, 3)
    (vp, _, _), = PilValLoader(val, 24, 3)
    assert np.abs(vd - vp).mean() < 0.05, np.abs(vd - vp).mean()


def test_one_epoch_over_all_shards_is_the_whole_data_set(toy_dir):
    train = unique_labels(list_imagenet(toy_dir)[0])
    n, world = len(train), 7                       # 240 images: 5 padding repeats
    per_rank = padded_epoch_length(n, world) // world
    seen = []
    for rank in range(world):
        loader = DaliTrainLoader(train, 16, shard_id=rank, num_shards=world, seed=2)
        labels = np.concatenate([loader.next_batch(b)[1].ravel() for b in (13, 13, per_rank - 26)])
        assert loader.state() == {"epoch": 1, "offset": 0} and loader.epochs_done == 1.0
        loader.close()
        seen.append(labels)
    everything = np.concatenate(seen)
    assert len(everything) == padded_epoch_length(n, world)
    assert set(everything.tolist()) == set(range(n))                  # nothing missed
    assert len(everything) - len(set(everything.tolist())) == padded_epoch_length(n, world) - n


def test_batch_size_changes_keep_the_accounting_exact(toy_dir):
    """Sizes change mid-run (and grow past the pipeline's max, which rebuilds it)."""
    train = unique_labels(list_imagenet(toy_dir)[0])
    dali = DaliTrainLoader(train, 16, shard_id=1, num_shards=2, seed=1)
    pil = PilTrainLoader(train, 16, shard_id=1, num_shards=2, seed=1)
    taken = []
    for size in (10, 10, 30, 7, 30, 33):           # 120 = one epoch of this shard
        yd = dali.next_batch(size)[1]
        np.testing.assert_array_equal(yd, pil.next_batch(size)[1])
        taken.append(yd.ravel())
        assert dali.state() == pil.state()
    assert dali.state() == {"epoch": 1, "offset": 0}
    other = DaliTrainLoader(train, 16, shard_id=0, num_shards=2, seed=1)
    both = np.concatenate(taken + [other.next_batch(120)[1].ravel()])
    assert sorted(both.tolist()) == list(range(len(train)))
    for loader in (dali, pil, other):
        loader.close()


def test_deterministic_across_runs_threads_and_resume(toy_dir):
    train, _ = list_imagenet(toy_dir)
    a = DaliTrainLoader(train, 20, seed=9, num_threads=2)
    b = DaliTrainLoader(train, 20, seed=9, num_threads=1)
    for size in (8, 8, 5):
        xa, ya = a.next_batch(size)
        xb, yb = b.next_batch(size)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    resumed = DaliTrainLoader(train, 20, seed=9, state=a.state())
    for size in (6, 250):                           # the second crosses the epoch boundary
        xa, ya = a.next_batch(size)
        xr, yr = resumed.next_batch(size)
        np.testing.assert_array_equal(xa, xr)      # bitwise: no DALI RNG in the pipeline
        np.testing.assert_array_equal(ya, yr)
    other_seed = DaliTrainLoader(train, 20, seed=10)
    assert not np.array_equal(other_seed.next_batch(8)[1], DaliTrainLoader(
        train, 20, seed=9).next_batch(8)[1])
    for loader in (a, b, resumed, other_seed):
        loader.close()


def test_validation_counts_each_image_once_across_ranks(toy_dir):
    val = unique_labels(list_imagenet(toy_dir)[1])
    real = []
    for rank in range(3):
        loader = DaliValLoader(val, 16, batch_size=7, shard_id=rank, num_shards=3)
        batches = list(loader)
        assert len(batches) == len(loader)
        for x, y, valid in batches:
            assert x.shape == (7, 3, 16, 16) and y.shape == (7, 1) and 1 <= valid <= 7
            real.extend(y[:valid].ravel().tolist())
        assert sum(v for _, _, v in list(loader)) == len(range(rank, len(val), 3))  # re-iterable
    assert sorted(real) == list(range(len(val)))


def test_next_batch_into_fills_nnabla_arrays_in_place(toy_dir):
    from nnabla.ext_utils import get_extension_context
    train, _ = list_imagenet(toy_dir)
    ctx = get_extension_context("cpu")
    image, label = nn.Variable((8, 3, 16, 16)), nn.Variable((8, 1))
    a = DaliTrainLoader(train, 16, seed=4)
    b = DaliTrainLoader(train, 16, seed=4)
    for _ in range(2):
        a.next_batch_into(image.data, label.data, 8, ctx)
        x, y = b.next_batch(8)
        np.testing.assert_array_equal(image.d, x)
        np.testing.assert_array_equal(label.d.astype(np.int32), y)
    with pytest.raises(ValueError, match="does not match"):
        a.next_batch_into(image.data, label.data, 4, ctx)
    a.close(), b.close()


def test_a_broken_file_is_named_with_the_fix(tmp_path):
    names = write_broken(tmp_path / "train" / "a")
    for name in names:
        folder = tmp_path / name.split(".")[0]
        (folder / "train" / "a").mkdir(parents=True)
        for good in range(3):
            os.link(tmp_path / "train" / "a" / "ok.JPEG", folder / "train" / "a" / f"{good}.JPEG")
        os.link(tmp_path / "train" / "a" / name, folder / "train" / "a" / name)
        listing = list_split(str(folder), "train")
        loader = DaliTrainLoader(listing, 16, seed=0)
        with pytest.raises(DataError) as e:
            loader.next_batch(4)
        message = str(e.value)
        assert name in message and "\n" not in message, message
        assert f"tools.check_dataset {folder} --write-exclude" in message
        assert "data.on_bad_image=skip" in message
        val = DaliValLoader(listing, 16, batch_size=2)
        with pytest.raises(DataError, match=name):
            list(val)


def test_the_training_thread_makes_no_dali_pipeline_call(toy_dir, monkeypatch):
    """Every pipeline call (build, feed_input, schedule_run, outputs, ...) happens on the
    loader's own thread, also across batch-size changes, a rebuild and close()."""
    from data import dali_loader
    calls = []
    real = dali_loader.train_pipeline

    def recorded(*args, **kwargs):
        calls.append(("create", threading.get_ident()))
        pipe = real(*args, **kwargs)
        for name in ("build", "feed_input", "schedule_run", "outputs", "share_outputs",
                     "release_outputs", "run"):
            def call(*a, _method=getattr(pipe, name), _name=name, **kw):
                calls.append((_name, threading.get_ident()))
                return _method(*a, **kw)
            setattr(pipe, name, call)
        return pipe

    monkeypatch.setattr(dali_loader, "train_pipeline", recorded)
    train, _ = list_imagenet(toy_dir)
    from nnabla.ext_utils import get_extension_context
    ctx = get_extension_context("cpu")
    image, label = nn.NdArray((9, 3, 16, 16)), nn.NdArray((9, 1))
    loader = DaliTrainLoader(train, 16, seed=3)
    for size in (6, 6, 4, 9):                      # a rewind, then a rebuild
        loader.next_batch(size)
    loader.next_batch_into(image, label, 9, ctx)
    loader.close()
    names = {name for name, _ in calls}
    assert {"create", "build", "feed_input", "schedule_run", "outputs"} <= names, names
    assert [name for name, _ in calls].count("create") == 2        # the rebuild happened
    threads = {thread for _, thread in calls}
    assert threading.get_ident() not in threads and len(threads) == 1, calls


@pytest.mark.parametrize("broken", ["empty.JPEG", "truncated.JPEG"])   # read / decode error
def test_a_broken_file_fails_at_the_batch_it_belongs_to(tmp_path, broken):
    """Batches before the broken file's are delivered; its own batch raises the one-line
    error naming it; state() stays at the last delivered batch."""
    write_broken(tmp_path / "src")
    folder = tmp_path / "set" / "train" / "a"
    folder.mkdir(parents=True)
    for good in range(11):
        os.link(tmp_path / "src" / "ok.JPEG", folder / f"{good:02}.JPEG")
    os.link(tmp_path / "src" / broken, folder / broken)
    listing = list_split(str(tmp_path / "set"), "train")
    bad = listing.files.index(str(folder / broken))
    for seed in range(50):                          # a seed that puts it in batch 3 or later
        stream = stream_for(listing, 0, 1, seed)
        batches = [stream.take(2)[0] for _ in range(6)]
        at = next(k for k, b in enumerate(batches) if bad in b)
        if at >= 3:
            break
    loader = DaliTrainLoader(listing, 16, seed=seed)
    for k in range(at):
        loader.next_batch(2)
    delivered = loader.state()
    with pytest.raises(DataError, match=broken):
        loader.next_batch(2)
    assert loader.state() == delivered == {"epoch": 0, "offset": 2 * at}
    loader.close()
