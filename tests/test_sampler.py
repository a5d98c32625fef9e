import numpy as np
import pytest

from data.sampler import ShardedStream, padded_epoch_length


def take_epoch(n, shards, seed=0, epoch=0):
    streams = [ShardedStream(n, r, shards, seed, epoch=epoch) for r in range(shards)]
    per = padded_epoch_length(n, shards) // shards
    return [s.take(per)[0] for s in streams], streams


@pytest.mark.parametrize("n,shards", [(10, 1), (10, 3), (7, 4), (100, 8), (3, 5), (3, 8)])
def test_one_epoch_covers_every_sample_with_padding_only_at_the_end(n, shards):
    parts, streams = take_epoch(n, shards)
    allidx = np.concatenate(parts)
    assert set(allidx.tolist()) == set(range(n))
    assert len(allidx) == padded_epoch_length(n, shards)
    assert len(allidx) - n < shards                      # at most W-1 repeats
    assert len({len(p) for p in parts}) == 1             # same steps on every rank
    assert all(s.state() == {"epoch": 1, "offset": 0} for s in streams)


def test_epochs_are_different_permutations_and_seeded():
    a = ShardedStream(50, seed=1).take(100)[0]
    b = ShardedStream(50, seed=1).take(100)[0]
    c = ShardedStream(50, seed=2).take(100)[0]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(a[:50]) == list(range(50)) == sorted(a[50:])
    assert not np.array_equal(a[:50], a[50:])


def test_changing_batch_size_mid_epoch_keeps_each_epoch_exact():
    n, shards = 37, 3
    streams = [ShardedStream(n, r, shards, seed=5) for r in range(shards)]
    seen = {}
    for size in [4, 4, 7, 1, 9, 13, 2, 20]:              # 60 per rank: crosses 4 epochs
        for s in streams:
            idx, ep = s.take(size)
            for i, e in zip(idx, ep):
                seen.setdefault(int(e), []).append(int(i))
    epoch_len = padded_epoch_length(n, shards)
    assert sorted(seen) == [0, 1, 2, 3, 4]
    for e in (0, 1, 2, 3):
        assert len(seen[e]) == epoch_len
        assert set(seen[e]) == set(range(n))


def test_resume_from_state_continues_the_same_sequence():
    ref = ShardedStream(23, 1, 2, seed=9)
    full = np.concatenate([ref.take(k)[0] for k in (3, 5, 8, 2, 6)])
    s = ShardedStream(23, 1, 2, seed=9)
    first = np.concatenate([s.take(k)[0] for k in (3, 5)])
    resumed = ShardedStream(23, 1, 2, seed=9)
    resumed.load_state(s.state())
    rest = np.concatenate([resumed.take(k)[0] for k in (8, 2, 6)])
    np.testing.assert_array_equal(full, np.concatenate([first, rest]))


def test_state_is_global_so_another_world_size_can_continue():
    # 2 ranks take 6 each of an epoch; 3 ranks continue from the same global offset.
    n = 30
    two = [ShardedStream(n, r, 2, seed=4) for r in range(2)]
    used = np.concatenate([s.take(6)[0] for s in two])
    state = two[0].state()
    assert state == {"epoch": 0, "offset": 12}
    three = [ShardedStream(n, r, 3, seed=4) for r in range(3)]
    for s in three:
        s.load_state(state)
    rest = np.concatenate([s.take(6)[0] for s in three])
    assert sorted(np.concatenate([used, rest]).tolist()) == list(range(n))


def test_bad_arguments():
    with pytest.raises(ValueError, match="empty"):
        ShardedStream(0)
    with pytest.raises(ValueError, match="shard_id"):
        ShardedStream(10, 2, 2)
    with pytest.raises(ValueError, match="not a multiple of 4"):
        ShardedStream(10, 0, 4).load_state({"epoch": 0, "offset": 2})
