"""Pillow + numpy loaders: the reference input pipeline (and the fallback when DALI is absent).

Training: random-resized-crop (Inception-style: area in [min_area, 1], aspect ratio in
[3/4, 4/3], 10 attempts then a centre crop), random horizontal flip, per-channel
normalisation, CHW float32. Validation: resize the shorter side to ``image_size *
resize_ratio`` (256/224 as in the ImageNet recipes), centre-crop ``image_size``.

Augmentation randomness is a function of ``(seed, epoch, sample index)`` (data/augment.py,
shared with the DALI loader), not of thread timing, so a run is reproducible and a resumed
run sees the same crops.
"""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from .augment import crop_boxes, uniforms, val_geometry
from .checks import checker_hint
from .imagefolder import DataError
from .sampler import DeliveredPosition, stream_for

MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


def open_rgb(path):
    """``path``: a file name or a named binary file (a packed sample, ``listing.source(i)``)."""
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except Exception as e:  # PIL raises many types for broken files
        raise DataError(f"cannot decode {getattr(path, 'name', path)}: {e}") from None


def _with_fix(error, listing):
    """The decode error plus the checker command for this data set (one line)."""
    return DataError(f"{error}; {checker_hint(os.path.dirname(listing.root))}")


def to_array(img, channel_last=False):
    """Normalised float32 pixels, CHW (or HWC for channel-last models)."""
    x = (np.asarray(img, dtype=np.float32) - MEAN) / STD
    return x if channel_last else x.transpose(2, 0, 1)


def train_transform(path, size, u, min_area, channel_last=False):
    """Decode, crop the box that ``augment.crop_boxes`` draws from ``u``, resize, flip."""
    img = open_rgb(path)
    left, top, w, h, flip = (int(v[0]) for v in crop_boxes([img.width], [img.height], u[None],
                                                            min_area))
    img = img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + w, top + h))
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return to_array(img, channel_last)


def val_transform(path, size, resize_ratio, channel_last=False):
    img = open_rgb(path)
    w, h, left, top = (int(v[0]) for v in val_geometry([img.width], [img.height], size,
                                                        resize_ratio))
    img = img.resize((w, h), Image.Resampling.BILINEAR)
    return to_array(img.crop((left, top, left + size, top + size)), channel_last)


class PilTrainLoader(DeliveredPosition):
    """Training batches for one shard, read from a ``ShardedStream``.

    ``next_batch(b)`` returns ``(images, labels)``; the batch size may change between calls.
    The next batch is prepared in the background assuming the same size; if a different size
    is asked for, that work is dropped and the stream rewound, so accounting stays exact.
    ``state()`` describes the stream after the last *delivered* batch.
    """

    def __init__(self, listing, image_size, shard_id=0, num_shards=1, seed=0,
                 num_threads=2, min_crop_area=0.08, state=None, channel_last=False):
        self.listing = listing
        self.channel_last = channel_last
        self.size = image_size
        self.min_area = min_crop_area
        self.seed = seed
        self.stream = stream_for(listing, shard_id, num_shards, seed)
        if state is not None:
            self.stream.load_state(state)
        self.pool = ThreadPoolExecutor(max(1, num_threads))
        self._pending = None  # (batch_size, stream state before it, futures)
        self._delivered_state = self.stream.state()

    def _submit(self, batch_size):
        before = self.stream.state()
        indices, epochs = self.stream.take(batch_size)
        draws = uniforms(self.seed, epochs, indices)
        futures = [self.pool.submit(lambda i, u: train_transform(
                       self.listing.source(i), self.size, u, self.min_area, self.channel_last),
                       i, u) for i, u in zip(indices, draws)]
        labels = self.listing.labels[indices].reshape(-1, 1)
        return batch_size, before, futures, labels

    def next_batch(self, batch_size):
        if self._pending is not None and self._pending[0] != batch_size:
            for f in self._pending[2]:
                f.cancel()
            self.stream.load_state(self._pending[1])   # rewind: the guess was wrong
            self._pending = None
        job = self._pending or self._submit(batch_size)
        try:
            images = np.stack([f.result() for f in job[2]])
        except DataError as e:
            raise _with_fix(e, self.listing) from None
        self._delivered_state = self.stream.state()
        self._pending = self._submit(batch_size)       # prefetch, assuming the same size
        return images, job[3]

    def close(self):
        if self._pending is not None:   # (shutdown's cancel_futures needs Python 3.9)
            for f in self._pending[2]:
                f.cancel()
        self.pool.shutdown(wait=False)


class PilValLoader:
    """Validation batches of shard ``shard_id``: samples ``shard_id::num_shards``, each once.

    Yields ``(images, labels, valid)``; the last batch is padded to ``batch_size`` (the graph
    has a fixed shape) and ``valid`` says how many leading rows are real.
    """

    def __init__(self, listing, image_size, batch_size, shard_id=0, num_shards=1,
                 resize_ratio=256 / 224, num_threads=2, channel_last=False):
        self.listing = listing
        self.channel_last = channel_last
        self.size = image_size
        self.batch_size = batch_size
        self.ratio = resize_ratio
        self.indices = np.arange(shard_id, len(listing), num_shards)
        self.num_threads = num_threads

    def __len__(self):
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self):
        with ThreadPoolExecutor(max(1, self.num_threads)) as pool:
            for start in range(0, len(self.indices), self.batch_size):
                chunk = self.indices[start:start + self.batch_size]
                try:
                    images = list(pool.map(lambda i: val_transform(
                        self.listing.source(i), self.size, self.ratio, self.channel_last), chunk))
                except DataError as e:
                    raise _with_fix(e, self.listing) from None
                labels = self.listing.labels[chunk]
                valid = len(chunk)
                if valid < self.batch_size:
                    pad = self.batch_size - valid
                    images.extend([images[-1]] * pad)
                    labels = np.concatenate([labels, np.repeat(labels[-1:], pad)])
                yield np.stack(images), labels.reshape(-1, 1), valid
