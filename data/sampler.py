"""Which samples a rank trains on, step by step: an endless, exactly accounted sample stream.

Epoch ``e`` is a permutation of all ``n`` samples seeded by ``(seed, e)``, padded by repeating
its first elements to a multiple of ``num_shards``, and dealt round-robin: shard ``r`` gets
positions ``r, r + W, r + 2W, ...``. Steps take consecutive chunks of the stream and may cross
an epoch boundary, so the batch size can change at any step (batch-size control) and every
epoch still uses each sample exactly once (plus at most ``W - 1`` padding repeats).

Because the deal is round-robin, after every rank has taken ``k`` samples of an epoch the
union of what they took is exactly the first ``k * W`` entries of the padded permutation.
The state is therefore global: ``(epoch, offset)`` with ``offset`` counted in samples of the
whole job, which lets a run resume on a different number of ranks.
"""
import numpy as np


def padded_epoch_length(num_samples, num_shards):
    """Samples in one epoch of the whole job, including padding repeats."""
    return -(-num_samples // num_shards) * num_shards


def epoch_permutation(num_samples, num_shards, seed, epoch, length=None):
    order = np.random.default_rng([seed, epoch]).permutation(num_samples)
    # np.resize repeats the permutation cyclically, even when padding exceeds one copy.
    return np.resize(order, length or padded_epoch_length(num_samples, num_shards))


class ShardedStream:
    """Sample indices for shard ``shard_id`` of ``num_shards``; ``take(k)`` advances it."""

    def __init__(self, num_samples, shard_id=0, num_shards=1, seed=0, epoch=0, offset=0,
                 epoch_length=None, streams=1):
        """``epoch_length`` and ``streams`` are for data.shuffle=node (data/node_shuffle.py):
        this stream is one of ``streams`` equally long ones (one per node), each over its own
        samples padded to ``epoch_length``; the state still counts samples of the whole job."""
        if num_samples <= 0:
            raise ValueError("cannot stream an empty data set")
        if not 0 <= shard_id < num_shards:
            raise ValueError(f"shard_id={shard_id} is outside 0..{num_shards - 1}")
        self.num_samples = num_samples
        self.shard_id = shard_id
        self.num_shards = num_shards
        self.seed = seed
        self.streams = streams
        self._length = epoch_length or padded_epoch_length(num_samples, num_shards)
        self.epoch_length = self._length * streams     # samples of the whole job per epoch
        self._perm_epoch = None
        self._perm = None
        self.load_state({"epoch": epoch, "offset": offset})

    # --- state ----------------------------------------------------------------------------
    def state(self):
        """Global position: the next epoch to read from and the job-wide offset inside it."""
        return {"epoch": self.epoch, "offset": self.offset * self.streams}

    def load_state(self, state):
        epoch, offset = int(state["epoch"]), int(state["offset"])
        if offset % (self.num_shards * self.streams):
            raise ValueError(f"stream offset {offset} is not a multiple of "
                             f"{self.num_shards * self.streams} ranks: resume with a world size "
                             "that divides the global batch")
        if not 0 <= offset <= self.epoch_length:
            raise ValueError(f"stream offset {offset} is outside epoch length {self.epoch_length}")
        self.epoch, self.offset = epoch, offset // self.streams

    @property
    def epochs_done(self):
        """Fractional epochs consumed by the whole job."""
        return self.epoch + self.offset / self._length

    # --- reading --------------------------------------------------------------------------
    def _permutation(self, epoch):
        if self._perm_epoch != epoch:
            self._perm = epoch_permutation(self.num_samples, self.num_shards, self.seed, epoch,
                                           self._length)
            self._perm_epoch = epoch
        return self._perm

    def take(self, count):
        """The next ``count`` indices of this shard, as (indices, epochs) int arrays."""
        indices, epochs = [], []
        while count > 0:
            if self.offset == self._length:
                self.epoch, self.offset = self.epoch + 1, 0
            perm = self._permutation(self.epoch)
            available = (self._length - self.offset) // self.num_shards
            n = min(count, available)
            start = self.offset + self.shard_id
            indices.append(perm[start:start + n * self.num_shards:self.num_shards])
            epochs.append(np.full(n, self.epoch))
            self.offset += n * self.num_shards
            count -= n
        if self.offset == self._length:
            self.epoch, self.offset = self.epoch + 1, 0
        return (np.concatenate(indices) if indices else np.zeros(0, np.int64),
                np.concatenate(epochs) if epochs else np.zeros(0, np.int64))


def stream_for(listing, shard_id, num_shards, seed):
    """The training stream of ``listing``: data.shuffle=node listings carry their own epoch
    length and stream count (``stream_args``)."""
    return ShardedStream(len(listing), shard_id, num_shards, seed,
                         **getattr(listing, "stream_args", {}))


class DeliveredPosition:
    """``state()`` and ``epochs_done`` of a loader that reads its ``stream`` ahead: both
    describe the stream after the last batch *delivered* (``_delivered_state``), so a
    checkpoint never counts prepared-but-unused samples."""

    def state(self):
        return dict(self._delivered_state)

    @property
    def epochs_done(self):
        s = self._delivered_state
        return s["epoch"] + s["offset"] / self.stream.epoch_length
