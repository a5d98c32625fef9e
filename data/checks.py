"""Is an image file usable? One definition shared by the checker tool and the loaders.

A file is usable when Pillow decodes it completely (``load()`` reads every scanline, so a
truncated JPEG fails here as it does in DALI) and its format is one both decoders read.
DALI's CPU decoder rejects some formats Pillow opens (GIF, for one), so a GIF renamed to
``.JPEG`` counts as broken even though Pillow alone would accept it.
"""
import io
import os

from PIL import Image

# Formats that both Pillow and DALI's decoders read (ImageNet holds JPEGs, a few CMYK ones and
# one PNG named .JPEG; all three decode in both).
SUPPORTED_FORMATS = ("JPEG", "PNG", "BMP")


def checker_hint(data_dir):
    """The fix for a broken file, as one sentence for error messages."""
    return (f"find every broken file with `python -m tools.check_dataset {data_dir or 'DATA_DIR'}"
            " --write-exclude bad.txt`, then run with --set data.on_bad_image=skip "
            "--set data.exclude_list=bad.txt")


def check_image(path):
    """``None`` if ``path`` (or an open binary file) is a usable image, else a short reason."""
    try:
        if isinstance(path, (str, os.PathLike)) and os.path.getsize(path) == 0:
            return "empty file"
        with Image.open(path) as img:
            if img.format not in SUPPORTED_FORMATS:
                return f"{img.format} data (DALI decodes {', '.join(SUPPORTED_FORMATS)} only)"
            img.load()
            if img.width < 1 or img.height < 1:
                return f"zero-sized image {img.width}x{img.height}"
    except Exception as e:   # Pillow raises many types for broken files
        return str(e) or type(e).__name__
    return None


def check_bytes(data):
    """``check_image`` for encoded bytes in memory (a tar member, a packed shard's slice)."""
    return "empty file" if not data else check_image(io.BytesIO(data))
