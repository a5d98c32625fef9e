"""DALI loaders: decoding and augmentation in DALI, sample order from our ``ShardedStream``.

Why ``fn.external_source`` and not ``fn.readers.file``: DALI's file reader fixes the batch
size when the pipeline is built, shuffles through a buffer (not an exact permutation per
epoch) and cannot resume at a saved position. The trainer needs all three: batch-size control
changes the batch between steps, every epoch must use each image exactly once across ranks,
and a resume (possibly on another world size) continues mid-epoch. So Python decides *which*
samples and *which crop* (``data/sampler.py``, ``data/augment.py``: cheap, vectorised per
batch) and feeds the encoded bytes; DALI does the expensive part on its own threads: ROI
JPEG decoding of the crop window, resize, flip, normalisation and layout.

The pipelines contain no random operators: the crop window and the flip arrive as inputs
computed from ``(seed, epoch, sample index)``. Hence output is a pure function of the
stream position: deterministic for a seed, bitwise the same after a resume from ``state()``,
independent of DALI's thread count, and the same crop boxes as the Pillow loader.

Batches are fed to DALI ``prefetch`` steps ahead (one more is being read on a background
thread), assuming the batch size stays the same. When it changes, the queued batches are
drained and the stream is rewound (as in the Pillow loader),
so ``state()`` always counts delivered samples only. A batch larger than the pipeline's
``max_batch_size`` rebuilds the pipeline (rare: batch-size control grows the batch a few
times per run). The training loader makes every call on its pipeline (build, feed_input,
schedule_run, outputs) on one thread of its own, never on the caller's: the caller only waits
for a ready batch, and DALI's Python pipeline keeps per-call state, so it is driven from one
thread only (DALI's maintainers advise against feeding and taking outputs on two).

``device="gpu"`` decodes on the rank's GPU (``mixed`` decoder, nvJPEG) and can copy the
batch straight into nnabla arrays (``next_batch_into``, as nnabla-ext-cuda's DALI iterator
does). That path is written against the documented APIs and NOT verified: no GPU here.
"""
import contextlib
import ctypes
import functools
import os
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from .augment import crop_boxes, image_size, uniforms, val_geometry
from .checks import check_bytes, checker_hint, encoded_problem
from .imagefolder import DataError
from .pil_loader import MEAN, STD
from .sampler import DeliveredPosition, stream_for


@contextlib.contextmanager
def _without_python_support_notice():
    """Drop DALI's "DALI 1.53 is the last release to support Python 3.9" warning (the pin is
    deliberate) so it never lands amid the trainer's lines; other warnings pass. A warnings
    filter cannot do it: DALI emits it under its own ``simplefilter("default")``."""
    with warnings.catch_warnings():
        show = warnings.showwarning

        def showwarning(message, *args, **kwargs):
            if "is the last release to support Python" not in str(message):
                show(message, *args, **kwargs)
        warnings.showwarning = showwarning
        yield


def _dali():
    try:
        with _without_python_support_notice():
            from nvidia import dali
            from nvidia.dali import fn, types
    except ImportError:
        raise DataError("data.backend=dali needs NVIDIA DALI (nvidia-dali-cuda120 in "
                        "requirements.txt): run `make setup`, or --set data.backend=pil") from None
    return dali, fn, types


@functools.lru_cache(maxsize=None)
def _decoder_args(operator):
    """Keyword arguments for a DALI decoder (schema name, e.g. ``decoders__ImageSlice``) so
    every pinned DALI decodes the stored pixel grid, as Pillow does: DALI 2.x decoders apply
    EXIF orientation unless told ``adjust_orientation=False``; the 1.x decoders of the
    3.9/3.8 pins (1.53.0, 1.35.0) lack the argument and never rotate. Read once from the
    installed DALI's operator schema; tests/test_dali_loader.py checks the result on each."""
    _dali()
    from nvidia.dali import backend
    if backend.GetSchema(operator).HasArgument("adjust_orientation"):
        return {"adjust_orientation": False}
    return {}


def _normalize(fn, types, images, size, channel_last, half, mirror=None):
    dtype = types.FLOAT16 if half else types.FLOAT
    kw = {} if mirror is None else {"mirror": mirror}
    return fn.crop_mirror_normalize(images, mean=MEAN.tolist(), std=STD.tolist(), dtype=dtype,
                                    output_layout="HWC" if channel_last else "CHW", **kw)


def _pipeline_args(max_batch_size, num_threads, device, device_id, seed):
    """Keyword arguments of both pipelines. The loaders feed and queue their own batches
    (``pending``), so DALI's own prefetch queue stays at one; CPU-only DALI takes
    device_id=None."""
    return dict(batch_size=max_batch_size, num_threads=num_threads,
                device_id=device_id if device == "gpu" else None, prefetch_queue_depth=1,
                seed=seed)


def train_pipeline(max_batch_size, size, num_threads, device="cpu", device_id=None,
                   channel_last=False, half=False, seed=0):
    """encoded bytes + crop window (x, y) / (w, h) + mirror flag -> normalised crops."""
    dali, fn, types = _dali()
    decode_device = "mixed" if device == "gpu" else "cpu"

    @dali.pipeline_def(**_pipeline_args(max_batch_size, num_threads, device, device_id, seed))
    def pipe():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        anchor = fn.external_source(name="anchor", dtype=types.INT32, ndim=1)
        shape = fn.external_source(name="shape", dtype=types.INT32, ndim=1)
        mirror = fn.external_source(name="mirror", dtype=types.INT32, ndim=0)
        images = fn.decoders.image_slice(encoded, anchor, shape, device=decode_device,
                                         axis_names="WH", output_type=types.RGB,
                                         **_decoder_args("decoders__ImageSlice"))
        images = fn.resize(images, size=[size, size], interp_type=types.INTERP_LINEAR,
                           antialias=True)
        return _normalize(fn, types, images, size, channel_last, half, mirror)

    return pipe()


def val_pipeline(max_batch_size, size, num_threads, device="cpu", device_id=None,
                 channel_last=False, half=False, seed=0):
    """encoded bytes + resized (w, h) + crop corner -> normalised centre crops."""
    dali, fn, types = _dali()
    decode_device = "mixed" if device == "gpu" else "cpu"

    @dali.pipeline_def(**_pipeline_args(max_batch_size, num_threads, device, device_id, seed))
    def pipe():
        encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
        resize_w = fn.external_source(name="resize_w", dtype=types.FLOAT, ndim=0)
        resize_h = fn.external_source(name="resize_h", dtype=types.FLOAT, ndim=0)
        corner = fn.external_source(name="corner", dtype=types.INT32, ndim=1)
        images = fn.decoders.image(encoded, device=decode_device, output_type=types.RGB,
                                   **_decoder_args("decoders__Image"))
        images = fn.resize(images, resize_x=resize_w, resize_y=resize_h,
                           interp_type=types.INTERP_LINEAR, antialias=True)
        images = fn.slice(images, corner, np.array([size, size], np.int32), axis_names="WH",
                          normalized_anchor=False, normalized_shape=False)
        return _normalize(fn, types, images, size, channel_last, half)

    return pipe()


class _Feeder:
    """Reads the encoded samples of a batch (``listing.read``: a file, or a slice of a packed
    shard) and turns DALI failures into one-line errors naming the sample."""

    def __init__(self, listing):
        self.listing = listing
        self.hint = checker_hint(os.path.dirname(listing.root))

    def read(self, indices):
        """(encoded arrays, (n, 2) width/height, indices) for ``indices``."""
        encoded, dims = [], np.empty((len(indices), 2), np.int64)
        for k, i in enumerate(indices):
            try:
                data = self.listing.read(i)
            except OSError as e:
                raise DataError(f"cannot read {self.listing.name(i)}: {e.strerror}; "
                                f"{self.hint}") from None
            problem = encoded_problem(data)    # a broken JPEG must never reach DALI
            if problem is not None:
                raise DataError(f"cannot decode {self.listing.name(i)}: {problem}; {self.hint}")
            try:
                dims[k] = image_size(data)
            except ValueError as e:
                raise DataError(f"cannot decode {self.listing.name(i)}: {e}; "
                                f"{self.hint}") from None
            encoded.append(np.frombuffer(data, np.uint8))
        return encoded, dims, indices

    def first_bad(self, indices):
        for i in indices:
            reason = check_bytes(self.listing.read(i))
            if reason is not None:
                return self.listing.name(i), reason
        return None

    def outputs(self, pipe, indices):
        """The pipeline's next output; a decode failure names the broken sample of the batch."""
        try:
            return pipe.outputs()[0]
        except RuntimeError as e:
            bad = self.first_bad(indices)
            if bad is not None:
                raise DataError(f"cannot decode {bad[0]}: {bad[1]}; {self.hint}") from None
            first = str(e).strip().splitlines()[-1][:200]
            raise DataError(f"DALI failed on a batch of {len(indices)} files starting with "
                            f"{self.listing.name(indices[0])} ({first}); {self.hint}") from None


def to_numpy(tensor_list):
    """A dense DALI batch as a numpy array (copied to the host first if it lives on a GPU)."""
    if type(tensor_list).__name__ == "TensorListGPU":
        tensor_list = tensor_list.as_cpu()
    return tensor_list.as_array()


def copy_into(tensor_list, ndarray, ctx, rows=None):
    """Copy a DALI batch into an nnabla ``NdArray`` on ``ctx`` (CPU or GPU) with no extra
    host copy: nnabla hands out its buffer (``data_ptr``, write-only: old contents are not
    synchronised) and DALI writes into it, as nnabla-ext-cuda's ``DaliIterator`` does.
    ``rows``: a batch of that many samples fills the array's first rows (then the array is
    made current without write_only, so the other rows keep their contents)."""
    host = isinstance(tensor_list, np.ndarray)    # already copied out of DALI (CPU DALI)
    shape = tensor_list.shape if host else tensor_list.as_tensor().shape()
    want = (rows or ndarray.shape[0],) + tuple(ndarray.shape[1:])
    if want != tuple(shape):
        raise ValueError(f"batch shape {shape} does not match the input array {want}")
    dtype = np.float16 if "16" in str(tensor_list.dtype) else np.float32
    partial = rows is not None and rows < ndarray.shape[0]
    pointer = ndarray.data_ptr(dtype, ctx, write_only=not partial)
    if host:
        source = np.ascontiguousarray(tensor_list)      # (kept alive through the copy)
        ctypes.memmove(pointer, source.ctypes.data, source.nbytes)
    elif type(tensor_list).__name__ == "TensorListGPU":
        # on nnabla's stream (the legacy default stream, 0): after the kernels still reading
        # the previous batch, not on DALI's own stream with only a host wait (dali
        # tensors.pyi copy_to_external(ptr, cuda_stream, non_blocking))
        tensor_list.copy_to_external(ctypes.c_void_p(pointer), cuda_stream=0)
    else:
        tensor_list.copy_to_external(ctypes.c_void_p(pointer))


class DaliTrainLoader(DeliveredPosition):
    """Training batches for one shard; same contract as ``PilTrainLoader``.

    ``next_batch(b)`` -> ``(images, labels)`` (float32 NCHW, or NHWC / float16 if asked;
    labels int32 ``(b, 1)``), ``state()``, ``epochs_done``, ``close()``.
    """

    def __init__(self, listing, image_size, shard_id=0, num_shards=1, seed=0, num_threads=2,
                 min_crop_area=0.08, state=None, channel_last=False, half=False, device="cpu",
                 device_id=None, prefetch=2, max_batch_size=None):
        self.listing = listing
        self.size = image_size
        self.seed = seed
        self.min_area = min_crop_area
        self.prefetch = max(1, prefetch)
        self.build_args = dict(size=image_size, num_threads=max(1, num_threads), device=device,
                               device_id=device_id, channel_last=channel_last, half=half,
                               seed=seed * 1000003 + shard_id)
        self.stream = stream_for(listing, shard_id, num_shards, seed)
        if state is not None:
            self.stream.load_state(state)
        _dali()   # import now (~2 s, part of setup), and fail before training if it is missing
        self.feeder = _Feeder(listing)
        # File reads and crop arithmetic run on `reader`, every pipeline call on `owner`; both
        # overlap the training step (nnabla releases the GIL in forward/backward).
        self.reader = ThreadPoolExecutor(1)
        self.owner = ThreadPoolExecutor(1)
        self.host = device != "gpu"     # batches leave the owner thread as numpy arrays
        self.max_batch_size = max_batch_size
        self.built = False
        self.pipe = None            # touched on the owner thread only
        self.pending = deque()      # batches read (and the first `prefetch` fed), oldest first
        self._delivered_state = self.stream.state()

    def _prepare(self, indices, epochs):
        """Encoded bytes and DALI inputs of one batch (runs on the reader thread)."""
        encoded, dims, paths = self.feeder.read(indices)
        left, top, w, h, flip = crop_boxes(dims[:, 0], dims[:, 1],
                                           uniforms(self.seed, epochs, indices), self.min_area)
        return paths, {"encoded": encoded,
                       "anchor": np.stack([left, top], 1).astype(np.int32),
                       "shape": np.stack([w, h], 1).astype(np.int32),
                       "mirror": flip.astype(np.int32)}

    def _submit(self, batch_size):
        before = self.stream.state()
        indices, epochs = self.stream.take(batch_size)
        self.pending.append(SimpleNamespace(
            size=batch_size, before=before, after=self.stream.state(), fed=None, out=None,
            labels=self.listing.labels[indices].reshape(-1, 1),
            read=self.reader.submit(self._prepare, indices, epochs)))

    def _build(self, max_batch_size):
        """(owner thread) A pipeline for batches up to ``max_batch_size``; the old one is
        freed first, with its threads and buffers."""
        self.pipe = None
        self.pipe = train_pipeline(max_batch_size, **self.build_args)
        self.pipe.build()

    def _feed(self, job):
        """(owner thread) Hand a batch's inputs to DALI, which starts decoding it."""
        paths, inputs = job.read.result()
        for name, value in inputs.items():
            self.pipe.feed_input(name, value)
        self.pipe.schedule_run()
        return paths

    def _take(self, job):
        """(owner thread) The batch DALI made for ``job``; a read error of its files (left in
        ``job.fed``) or a decode error surfaces here, so at the batch it belongs to."""
        out = self.feeder.outputs(self.pipe, job.fed.result())
        return to_numpy(out) if self.host else out

    def _ahead(self, batch_size):
        """Queue work for the next batches: reads, feeds, and the next batch's outputs. On
        the GPU path the caller calls this only after copying the previous batch out, since
        DALI may reuse an output's buffers at the next ``outputs()``."""
        while len(self.pending) < self.prefetch + 1:   # one more batch being read
            self._submit(batch_size)
        for job in list(self.pending)[:self.prefetch]:
            if job.fed is None:     # DALI decodes these while the caller trains
                job.fed = self.owner.submit(self._feed, job)
        if self.pending[0].out is None:
            self.pending[0].out = self.owner.submit(self._take, self.pending[0])

    def _rewind(self):
        """Drop the queued batches (their work is wasted) and rewind the stream to the first."""
        if not self.pending:
            return
        for job in self.pending:
            if job.fed is None:
                job.read.cancel() or job.read.exception()   # wait; a broken file recurs later
            elif job.fed.exception() is None:       # fed: DALI's output must be drained
                if job.out is None:
                    job.out = self.owner.submit(self._take, job)
                job.out.result()
        self.stream.load_state(self.pending[0].before)
        self.pending.clear()

    def _next(self, batch_size):
        if self.pending and self.pending[0].size != batch_size:
            self._rewind()
        if not self.built or batch_size > self.max_batch_size:
            self._rewind()
            self.max_batch_size = max(batch_size, self.max_batch_size or 0)
            self.owner.submit(self._build, self.max_batch_size).result()
            self.built = True
        self._ahead(batch_size)
        job = self.pending.popleft()
        out = job.out.result()
        self._delivered_state = job.after
        return out, job.labels

    def next_batch(self, batch_size):
        out, labels = self._next(batch_size)
        if not self.host:
            out = to_numpy(out)
        self._ahead(batch_size)
        return out, labels

    def next_batch_into(self, image, label, batch_size, ctx):
        """Fill nnabla arrays ``image``/``label`` (``Variable.data``) on ``ctx`` in place."""
        out, labels = self._next(batch_size)
        copy_into(out, image, ctx)      # synchronous: DALI may reuse `out` from now on
        label.cast(np.int32)[...] = labels
        self._ahead(batch_size)

    def close(self):
        if self.owner is None:
            return
        for job in self.pending:    # (shutdown's cancel_futures needs Python 3.9)
            job.read.cancel()
        self.owner.submit(setattr, self, "pipe", None)   # DALI frees its threads and buffers
        self.owner.shutdown(wait=True)
        self.reader.shutdown(wait=True)
        self.owner = None
        self.pending.clear()


class DaliValLoader:
    """Validation batches of shard ``shard_id`` (samples ``shard_id::num_shards``, each once);
    same contract as ``PilValLoader``: ``(images, labels, valid)`` with the last batch padded."""

    def __init__(self, listing, image_size, batch_size, shard_id=0, num_shards=1,
                 resize_ratio=256 / 224, num_threads=2, channel_last=False, half=False,
                 device="cpu", device_id=None, prefetch=2):
        self.listing = listing
        self.size = image_size
        self.batch_size = batch_size
        self.ratio = resize_ratio
        self.indices = np.arange(shard_id, len(listing), num_shards)
        self.prefetch = max(1, prefetch)
        self.build_args = dict(size=image_size, num_threads=max(1, num_threads), device=device,
                               device_id=device_id, channel_last=channel_last, half=half)
        _dali()
        self.feeder = _Feeder(listing)
        self.pipe = None

    def __len__(self):
        return -(-len(self.indices) // self.batch_size)

    def _submit(self, chunk):
        encoded, dims, paths = self.feeder.read(chunk)
        w, h, left, top = val_geometry(dims[:, 0], dims[:, 1], self.size, self.ratio)
        self.pipe.feed_input("encoded", encoded)
        self.pipe.feed_input("resize_w", w.astype(np.float32))
        self.pipe.feed_input("resize_h", h.astype(np.float32))
        self.pipe.feed_input("corner", np.stack([left, top], 1).astype(np.int32))
        self.pipe.schedule_run()
        return chunk, paths

    def _batches(self):
        """(DALI batch, its sample indices), in order; DALI decodes ``prefetch`` ahead."""
        if self.pipe is None:
            self.pipe = val_pipeline(self.batch_size, **self.build_args)
            self.pipe.build()
        chunks = deque(self.indices[s:s + self.batch_size]
                       for s in range(0, len(self.indices), self.batch_size))
        pending = deque()
        try:
            while chunks or pending:
                while chunks and len(pending) < self.prefetch:
                    pending.append(self._submit(chunks.popleft()))
                chunk, paths = pending.popleft()
                yield self.feeder.outputs(self.pipe, paths), chunk
        finally:
            for _, paths in pending:      # an abandoned pass must not leave stale outputs
                self.feeder.outputs(self.pipe, paths)

    def __iter__(self):
        for out, chunk in self._batches():
            images = to_numpy(out)
            labels, valid = self.listing.labels[chunk], len(chunk)
            if valid < self.batch_size:      # fixed graph shape: pad with the last row
                pad = self.batch_size - valid
                images = np.concatenate([images, np.repeat(images[-1:], pad, 0)])
                labels = np.concatenate([labels, np.repeat(labels[-1:], pad)])
            yield images, labels.reshape(-1, 1), valid

    def batches_into(self, image, ctx):
        """As iterating, but each batch is written into the nnabla array ``image`` (the
        graph's input, on ``ctx``) where DALI made it, never through the host; yields
        (labels, valid). A short last batch fills the first rows; the rest keep the
        previous batch's images, which never count (rows are independent in evaluation)."""
        for out, chunk in self._batches():
            copy_into(out, image, ctx, rows=len(chunk))
            labels = self.listing.labels[chunk]
            pad = self.batch_size - len(chunk)
            yield np.concatenate([labels, np.repeat(labels[-1:], pad)]).reshape(-1, 1), len(chunk)
