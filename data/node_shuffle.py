"""data.shuffle=node: each node trains on its own share of the training shards.

The default (``global``) draws one permutation of the whole training set every epoch and deals
it to all ranks, so every node needs every shard. With ``node``, as DALI's readers and NVIDIA's
and Fujitsu's MLPerf runs do, node ``k`` of ``N`` owns the training shards ``k, k + N, ...``
(prepare_imagenet deals samples to shards at random, so every share mixes all classes);
``python -m data.stage --shuffle node`` copies only those, and the node's ranks shuffle only
among them. The trade-off: staging and local disk shrink N-fold, but a node sees the same
~1/N of the images every epoch, reshuffled among its own ranks, not a fresh global draw.

The sampler stays exact and resumable: each node's stream is a ``ShardedStream`` over its own
samples, dealt to its local ranks, padded to the longest node's share (shares differ by at
most a shard), so every node's stream has the same length and the saved state (epoch, samples
of the whole job) means the same position on every node. Resume needs the same node count.
"""
import os

import numpy as np

from .imagefolder import DataError
from .packed import PackedListing, read_manifest

TRADE_OFF = ("each node reads only its 1/{nodes} of the training shards (staging copies "
             "1/{nodes}); every epoch a node reshuffles the same images among its ranks "
             "instead of one global permutation (DALI/MLPerf style)")


def node_share(listing, node, nodes, ranks_per_node):
    """The part of a training ``PackedListing`` that node ``node`` of ``nodes`` reads."""
    if not isinstance(listing, PackedListing):
        raise DataError("data.shuffle=node needs a packed data set (python -m "
                        "data.prepare_imagenet): an image folder has no shards to share out")
    shards = len(listing.shards)
    if shards < nodes:
        raise DataError(f"data.shuffle=node on {nodes} nodes needs at least {nodes} training "
                        f"shards; {listing.root} has {shards}: prepare it with a smaller "
                        "--shard-size")
    owner = listing.index["shard"] % nodes
    counts = np.bincount(owner, minlength=nodes)
    missing = [listing.shards[k] for k in range(node, shards, nodes)
               if not os.path.isfile(os.path.join(listing.root, listing.shards[k]))]
    if missing:
        raise DataError(f"node {node} lacks {len(missing)} of its training shards in "
                        f"{listing.root} (first {missing[0]}): stage with python -m data.stage "
                        "SRC DST --shuffle node on the same nodes")
    rows = np.asarray(listing.index[owner == node])
    share = PackedListing(listing.root, "train", read_manifest(listing.root), listing.classes,
                          rows=rows)
    longest = int(counts.max())
    share.stream_args = {"epoch_length": -(-longest // ranks_per_node) * ranks_per_node,
                         "streams": nodes}
    return share
