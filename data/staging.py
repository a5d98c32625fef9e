"""Copying a packed data set to every node's local disk, reading the source once in all.

The logic of ``python -m data.stage`` (data/stage.py binds it to MPI), written against a
small exchange object: ``rank``, ``size``, ``gather_all(obj)`` (every rank gets every rank's
object) and ``all_gather_bytes(buffer, counts)`` (every rank gets the concatenation).

1. Rank 0 reads the set's small files (index.json, the .npy indexes, classes.txt) and hands
   them to all; the shards to deliver and their sizes and sha256 come from index.json.
2. Each node looks at its DST: a file is there when its size matches and its stamp
   (DST/.stage/NAME.json: size, mtime, inode, sha256 of the last check) matches, else it is
   hashed again (``verify_all`` hashes every file). All nodes learn who needs what; if a node
   lacks the space for its missing files, every rank stops with one line before copying.
3. Each needed shard gets one reader, a node that needs it, balanced by bytes. A shard only
   its reader needs is copied locally. The others travel in rounds: each node reads up to
   ``chunk`` bytes of its queue from the source and one all-gather gives every node every
   node's chunk (Open MPI's ring: every link busy, so a round costs the bandwidth bound).
4. A file is written to DST/.stage/NAME.part, hashed as it arrives, compared with the index
   and renamed into place; index.json is written last, so a complete DST is a packed set.
"""
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass

from .imagefolder import DataError
from .packed import INDEX, read_manifest

SMALL = ("classes.txt", "index-train.npy", "index-val.npy")
WORK = ".stage"


class Everywhere(DataError):
    """A problem every rank found alike (so every rank can stop by itself, with one line)."""


@dataclass
class Item:
    name: str
    size: int
    sha256: str


def shard_items(manifest, shuffle="global", node=0, nodes=1):
    """(every shard, the shards node ``node`` needs)."""
    items, mine = [], []
    for split in ("train", "val"):
        for k, s in enumerate(manifest["splits"][split]["shards"]):
            item = Item(s["name"], s["size"], s["sha256"])
            items.append(item)
            if shuffle == "global" or split == "val" or k % nodes == node:
                mine.append(item.name)
    return items, set(mine)


def node_shards(count, node, nodes):
    """Training shards of node ``node`` when data.shuffle=node."""
    return [k for k in range(count) if k % nodes == node]


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _stamp_path(dst, name):
    return os.path.join(dst, WORK, name + ".json")


def is_in_place(dst, item, verify_all=False):
    path = os.path.join(dst, item.name)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    if st.st_size != item.size:
        return False
    stamp = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino,
             "sha256": item.sha256}
    if not verify_all:
        try:
            with open(_stamp_path(dst, item.name)) as f:
                if json.load(f) == stamp:
                    return True
        except (OSError, ValueError):
            pass
    if file_sha256(path) != item.sha256:
        return False
    _write_stamp(dst, item.name, stamp)
    return True


def _write_stamp(dst, name, stamp):
    path = _stamp_path(dst, name)
    with open(path + ".tmp", "w") as f:
        json.dump(stamp, f)
    os.replace(path + ".tmp", path)


class _Incoming:
    """A file being written to DST: hashed as it arrives, renamed into place when whole."""

    def __init__(self, dst, item):
        self.dst, self.item = dst, item
        self.part = os.path.join(dst, WORK, item.name + ".part")
        self.f = open(self.part, "wb")
        self.hash = hashlib.sha256()
        self.written = 0

    def write(self, offset, data):
        if offset != self.written:
            raise RuntimeError(f"{self.item.name}: bytes {offset} arrived at {self.written}")
        self.f.write(data)
        self.hash.update(data)
        self.written += len(data)
        if self.written == self.item.size:
            self._finish()
            return True
        return False

    def _finish(self):
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        if self.hash.hexdigest() != self.item.sha256:
            os.unlink(self.part)
            raise DataError(f"{self.item.name}: the copy's sha256 differs from the index: the "
                            "source shard changed or is damaged; check it with python -m "
                            "data.stage SRC SRC-COPY, or prepare the set again")
        final = os.path.join(self.dst, self.item.name)
        os.replace(self.part, final)
        st = os.stat(final)
        _write_stamp(self.dst, self.item.name, {"size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                "ino": st.st_ino, "sha256": self.item.sha256})


def assign_readers(items, needers, nodes):
    """Reader node of each needed item: the least-loaded node among those that need it,
    largest items first (greedy LPT); returns {name: node}."""
    load, reader = [0] * nodes, {}
    for item in sorted(items, key=lambda i: -i.size):
        candidates = needers.get(item.name)
        if candidates:
            node = min(candidates, key=lambda n: (load[n], n))
            reader[item.name] = node
            load[node] += item.size
    return reader


class Stager:
    def __init__(self, exchange, src, dst, shuffle="global", chunk=8 << 20, verify_all=False):
        self.x, self.src, self.dst = exchange, src, dst
        self.shuffle, self.chunk, self.verify_all = shuffle, chunk, verify_all
        self.read_bytes = self.written_bytes = self.copied = 0

    # --- what is where ---------------------------------------------------------------------
    def small_files(self):
        """Rank 0 reads index.json and the small files once; every rank gets them."""
        payload = None
        if self.x.rank == 0:
            try:
                read_manifest(self.src)
                payload = {}
                for name in (INDEX,) + SMALL:
                    with open(os.path.join(self.src, name), "rb") as f:
                        payload[name] = f.read()
                self.read_bytes += sum(len(v) for v in payload.values())
            except (DataError, OSError) as e:
                payload = str(e) if isinstance(e, DataError) else \
                    f"{self.src} is not a packed data set ({e}): make one with prepare_imagenet"
        payload = self.x.bcast(payload)
        if isinstance(payload, str):
            raise Everywhere(payload)
        return payload

    def needs(self, items, mine, small):
        """Names this node needs copied, after checking DST; also checks the free space."""
        os.makedirs(os.path.join(self.dst, WORK), exist_ok=True)
        missing = [i for i in items if i.name in mine and not is_in_place(self.dst, i,
                                                                           self.verify_all)]
        need_bytes = sum(i.size for i in missing) + sum(len(v) for v in small.values())
        free = shutil.disk_usage(self.dst).free
        short = need_bytes > free
        everyone = self.x.gather_all(({i.name for i in missing}, short, need_bytes, free))
        lacking = [(n, e[2], e[3]) for n, e in enumerate(everyone) if e[1]]
        if lacking:
            n, need, have = lacking[0]
            raise Everywhere(f"{self.dst} on node {n} has {have / 1e9:.2f} GB free but the copy "
                            f"needs {need / 1e9:.2f} GB ({len(lacking)} node(s) short): choose "
                            "a larger local disk, or data.shuffle=node (a share per node)")
        needers = {}
        for node, e in enumerate(everyone):
            for name in e[0]:
                needers.setdefault(name, []).append(node)
        return needers

    # --- copying -----------------------------------------------------------------------------
    def copy_local(self, item):
        incoming = _Incoming(self.dst, item)
        with open(os.path.join(self.src, item.name), "rb") as f:
            offset = 0
            for block in iter(lambda: f.read(self.chunk), b""):
                self.read_bytes += len(block)
                incoming.write(offset, block)
                offset += len(block)
        if offset != item.size:
            raise DataError(f"{self.src}/{item.name} has {offset:,} bytes, the index says "
                            f"{item.size:,}: the source is truncated; prepare the set again")
        self.written_bytes += item.size
        self.copied += 1

    def _next_pieces(self, queue, state):
        """Up to ``chunk`` bytes of this node's queue: ([(item, offset, length)], bytes)."""
        pieces, data, room = [], [], self.chunk
        while queue and room > 0:
            item = queue[0]
            if state.get("file") is None:
                state["file"], state["offset"] = open(os.path.join(self.src, item.name), "rb"), 0
            block = state["file"].read(min(room, item.size - state["offset"]))
            if not block and state["offset"] < item.size:
                raise DataError(f"{self.src}/{item.name} ends at {state['offset']:,} bytes, the "
                                f"index says {item.size:,}: the source is truncated; prepare "
                                "the set again")
            pieces.append((item.name, state["offset"], len(block)))
            data.append(block)
            state["offset"] += len(block)
            room -= len(block)
            if state["offset"] == item.size:
                state["file"].close()
                state["file"] = None
                queue.pop(0)
        payload = b"".join(data)
        self.read_bytes += len(payload)
        return pieces, payload

    def broadcast_rounds(self, queue, wanted, by_name):
        """Rounds of all-gathered chunks. The next chunk is read from the source and the last
        round's chunks are hashed and written on two threads while the network carries the
        current round (hashlib, file I/O and mpi4py's blocking calls release the GIL)."""
        from concurrent.futures import ThreadPoolExecutor
        incoming, state = {}, {}
        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
            ahead = reader.submit(self._next_pieces, queue, state)
            written = None
            while True:
                pieces, payload = ahead.result()
                ahead = reader.submit(self._next_pieces, queue, state)
                metas = self.x.gather_all(pieces)
                counts = [sum(p[2] for p in m) for m in metas]
                if not any(counts):
                    break
                received = memoryview(self.x.all_gather_bytes(payload, counts))
                if written is not None:
                    written.result()              # a bad copy surfaces here
                written = writer.submit(self._write_round, metas, received, wanted, by_name,
                                        incoming)
            if written is not None:
                written.result()
            ahead.result()

    def _write_round(self, metas, received, wanted, by_name, incoming):
        start = 0
        for meta in metas:
            for name, offset, length in meta:
                if name in wanted:
                    if name not in incoming:
                        incoming[name] = _Incoming(self.dst, by_name[name])
                    if incoming[name].write(offset, received[start:start + length]):
                        self.written_bytes += by_name[name].size
                        self.copied += 1
                start += length

    def run(self, node=None, nodes=None):
        start = time.perf_counter()
        node = self.x.rank if node is None else node
        nodes = self.x.size if nodes is None else nodes
        small = self.small_files()
        manifest = json.loads(small[INDEX])
        items, mine = shard_items(manifest, self.shuffle, node, nodes)
        if self.shuffle == "node" and len(manifest["splits"]["train"]["shards"]) < nodes:
            raise Everywhere(f"data.shuffle=node on {nodes} nodes needs at least {nodes} "
                            f"training shards; the set has "
                            f"{len(manifest['splits']['train']['shards'])}: prepare it with a "
                            "smaller --shard-size")
        needers = self.needs(items, mine, small)
        reader = assign_readers(items, needers, nodes)
        by_name = {i.name: i for i in items}
        wanted = set(needers) & mine
        mine_to_read = [by_name[n] for n, r in reader.items() if r == node]
        for item in [i for i in mine_to_read if needers[i.name] == [node]]:
            self.copy_local(item)                  # nobody else needs it: no network
        shared = sorted((i for i in mine_to_read if needers[i.name] != [node]),
                        key=lambda i: i.name)
        self.broadcast_rounds(shared, wanted, by_name)
        self.write_small(small)
        totals = self.x.gather_all((self.read_bytes, self.written_bytes, self.copied))
        return {"bytes_read_from_source": sum(t[0] for t in totals),
                "bytes_written_per_node": [t[1] for t in totals],
                "copied_files": sum(t[2] for t in totals),
                "seconds": round(time.perf_counter() - start, 3),
                "nodes": nodes, "shuffle": self.shuffle,
                "shard_bytes": sum(i.size for i in items)}

    def write_small(self, small):
        """The index files, index.json last: its presence marks a complete copy."""
        for name in SMALL + (INDEX,):
            path = os.path.join(self.dst, name)
            try:
                with open(path, "rb") as f:
                    if f.read() == small[name]:
                        continue
            except OSError:
                pass
            with open(path + ".tmp", "wb") as f:
                f.write(small[name])
                f.flush()
                os.fsync(f.fileno())
            os.replace(path + ".tmp", path)
