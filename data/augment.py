"""Augmentation parameters as a pure function of ``(seed, epoch, sample index)``.

Both training loaders (DALI and Pillow) take their crop boxes and flips from here, so for the
same seed they crop the same window of the same image and flip the same samples; only the
decoder and the resampling kernel differ. Nothing depends on thread timing, on the batch size
or on how many batches ran before, so a run resumed from a stream state sees the very same
crops as an uninterrupted run.

The random numbers come from a counter-based hash (splitmix64 finaliser) of
``(seed, epoch, index, draw)``, vectorised over a batch: one numpy call per batch instead of
one generator object per sample (which cost ~60 us each and was the DALI feeder's hot spot).
"""
import io
import math
import struct

import numpy as np
from PIL import Image

ATTEMPTS = 10                   # Inception-style random-resized-crop tries before falling back
DRAWS = 2 * ATTEMPTS + 3        # area and aspect per try, then left, top, flip

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_K = [np.uint64(k) for k in (0x9E3779B97F4A7C15, 0xD1B54A32D192ED03, 0x8CB92BA72F3D8DD7,
                             0xF1357AEA2E62A9C5)]


def _mix(x):
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def uniforms(seed, epochs, indices, draws=DRAWS):
    """``(len(indices), draws)`` floats in [0, 1), a pure function of each (seed, epoch, index)."""
    epochs = np.broadcast_to(np.asarray(epochs, np.uint64), np.shape(indices))
    indices = np.asarray(indices, np.uint64)
    with np.errstate(over="ignore"):
        key = _mix(np.uint64(seed % 2**64) * _K[0] + epochs * _K[1] + indices * _K[2])
        x = _mix(key[:, None] + np.arange(draws, dtype=np.uint64)[None, :] * _K[3])
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / 2**53)


def crop_boxes(widths, heights, u, min_area, ratio=(3 / 4, 4 / 3)):
    """Random-resized-crop boxes and flips from ``uniforms`` rows.

    Returns int arrays ``left, top, w, h`` and a bool array ``flip``: the crop covers a
    fraction in [min_area, 1] of the image with aspect ratio in ``ratio`` (log-uniform), the
    first of ``ATTEMPTS`` tries that fits; otherwise the largest centred square.
    """
    widths = np.asarray(widths, np.int64)
    heights = np.asarray(heights, np.int64)
    area = (widths * heights).astype(np.float64)[:, None]
    target = area * (min_area + (1.0 - min_area) * u[:, :ATTEMPTS])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(lo + (hi - lo) * u[:, ATTEMPTS:2 * ATTEMPTS])
    w = np.rint(np.sqrt(target * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    fits = (w > 0) & (h > 0) & (w <= widths[:, None]) & (h <= heights[:, None])
    first = fits.argmax(axis=1)
    rows = np.arange(len(widths))
    w, h = w[rows, first], h[rows, first]
    found = fits[rows, first]
    side = np.minimum(widths, heights)
    w, h = np.where(found, w, side), np.where(found, h, side)
    left = np.where(found, np.floor(u[:, -3] * (widths - w + 1)), (widths - side) // 2)
    top = np.where(found, np.floor(u[:, -2] * (heights - h + 1)), (heights - side) // 2)
    return left.astype(np.int64), top.astype(np.int64), w, h, u[:, -1] < 0.5


def val_geometry(widths, heights, size, resize_ratio):
    """Validation resize target ``(w, h)`` (shorter side ``size * ratio``) and centre-crop corner."""
    widths = np.asarray(widths, np.float64)
    heights = np.asarray(heights, np.float64)
    short = int(round(size * resize_ratio))
    scale = short / np.minimum(widths, heights)
    w = np.maximum(size, np.rint(widths * scale)).astype(np.int64)
    h = np.maximum(size, np.rint(heights * scale)).astype(np.int64)
    return w, h, (w - size) // 2, (h - size) // 2


# --- image size from the encoded bytes, without decoding -----------------------------------
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def jpeg_frame(data):
    """(width, height, components) from a JPEG's frame header, or None (not a JPEG, or the
    header is unreadable). 4 components: a CMYK (or YCCK) JPEG."""
    data = memoryview(data).cast("B")
    if data[:2] != b"\xff\xd8":
        return None
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:            # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        length = struct.unpack_from(">H", data, pos + 2)[0]
        if marker in _SOF and pos + 10 <= len(data):
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return (width, height, data[pos + 9]) if width and height else None
        pos += 2 + length
    return None


def image_size(data):
    """(width, height) of an encoded image: JPEG and PNG headers parsed directly, else Pillow.

    Raises ``ValueError`` when the header is unreadable. EXIF orientation is not applied
    (neither loader applies it, so both see the stored pixel grid).
    """
    data = memoryview(data).cast("B")
    frame = jpeg_frame(data)
    if frame is not None:
        return frame[:2]
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        return struct.unpack_from(">II", data, 16)
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        raise ValueError("empty file" if len(data) == 0 else "no readable image header") from None
