"""Synthetic data: fixed random images with labels, for timing the rest of the training step.

No files are read or decoded, so a run with ``data.backend=synthetic`` measures the model,
the all-reduce and the optimizer alone. The loaders keep the real contract: the sample order
and epoch accounting come from the same ``ShardedStream`` (labels are a fixed function of
the sample index), batch sizes may change between calls, and ``state()`` resumes exactly.
The images are generated once per loader (one batch, reused): they carry no signal.
"""
from dataclasses import dataclass

import numpy as np

from .sampler import ShardedStream


@dataclass
class SyntheticListing:
    """Stands in for ``imagefolder.Listing``: a size, labels and class names, no files."""
    size: int
    num_classes: int
    root: str = "<synthetic>"
    excluded: int = 0

    def __post_init__(self):
        self.labels = (np.arange(self.size, dtype=np.int64) * 7919 % self.num_classes
                       ).astype(np.int32)
        self.classes = [f"class{c}" for c in range(self.num_classes)]

    def __len__(self):
        return self.size


def synthetic_listings(train_size, val_size, num_classes):
    return SyntheticListing(train_size, num_classes), SyntheticListing(val_size, num_classes)


class _Images:
    """One fixed batch of normalised random images, grown when a larger batch is asked for."""

    def __init__(self, image_size, channel_last, dtype, seed):
        self.shape = (image_size, image_size, 3) if channel_last else (3, image_size, image_size)
        self.dtype, self.seed = dtype, seed
        self.batch = np.zeros((0,) + self.shape, dtype)

    def take(self, n):
        if n > len(self.batch):
            rng = np.random.default_rng([self.seed, n])
            self.batch = rng.standard_normal((n,) + self.shape, np.float32).astype(self.dtype)
        return self.batch[:n]


class SyntheticTrainLoader:
    def __init__(self, listing, image_size, shard_id=0, num_shards=1, seed=0, state=None,
                 channel_last=False, half=False, **_unused):
        self.listing = listing
        self.stream = ShardedStream(len(listing), shard_id, num_shards, seed)
        if state is not None:
            self.stream.load_state(state)
        self.images = _Images(image_size, channel_last, np.float16 if half else np.float32, seed)

    def next_batch(self, batch_size):
        indices, _ = self.stream.take(batch_size)
        return self.images.take(batch_size), self.listing.labels[indices].reshape(-1, 1)

    def state(self):
        return self.stream.state()

    @property
    def epochs_done(self):
        return self.stream.epochs_done

    def close(self):
        pass


class SyntheticValLoader:
    def __init__(self, listing, image_size, batch_size, shard_id=0, num_shards=1,
                 channel_last=False, half=False, **_unused):
        self.listing = listing
        self.batch_size = batch_size
        self.indices = np.arange(shard_id, len(listing), num_shards)
        self.images = _Images(image_size, channel_last, np.float16 if half else np.float32, 1)

    def __len__(self):
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.indices), self.batch_size):
            chunk = self.indices[start:start + self.batch_size]
            labels = self.listing.labels[chunk]
            labels = np.concatenate([labels, np.repeat(labels[-1:],
                                                       self.batch_size - len(chunk))])
            yield self.images.take(self.batch_size), labels.reshape(-1, 1), len(chunk)
