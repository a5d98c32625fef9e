"""Is an image file usable? One definition shared by the checker tool and the loaders.

A file is usable when Pillow decodes it completely (``load()`` reads every scanline, so a
truncated JPEG fails here as it does in DALI) and its format is one both decoders read.
DALI's CPU decoder rejects some formats Pillow opens (GIF, for one), so a GIF renamed to
``.JPEG`` counts as broken even though Pillow alone would accept it.
"""
import io
import os
import re

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
        if isinstance(path, (str, os.PathLike)):
            with open(path, "rb") as f:
                data = f.read()
        else:
            data = path.read()
        problem = encoded_problem(data)     # what the DALI loaders refuse before decoding
        if problem is not None:
            return problem
        with Image.open(io.BytesIO(data)) as img:
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


# Inside a JPEG's entropy-coded data a 0xFF byte is followed by 0x00 (a stuffed byte), 0xFF
# (fill) or a restart marker 0xD0-0xD7; anything else is the next marker.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_STANDALONE = {0x01, *range(0xD0, 0xD8)}     # markers without a length field


def encoded_problem(data):
    """``None`` if the encoded bytes of an image are whole, else a short reason: a cheap
    structural walk (no decoding) run on every file before DALI sees it. A JPEG must be
    a chain of well-formed segments that reaches its end-of-image marker, so a file cut at
    any length fails here; a PNG must end with its IEND chunk. DALI 2.4's CPU decoder,
    given a broken JPEG, raises and may then crash the process from its worker threads
    (a segfault, no file named), so a broken file must not reach it."""
    data = memoryview(data).cast("B")
    if len(data) == 0:
        return "empty file"
    if len(data) < 8:
        return f"truncated file ({len(data)} bytes)"
    if data[:2] == b"\xff\xd8":
        return _jpeg_problem(bytes(data))
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return None if bytes(data[-12:-8]) == b"\x00\x00\x00\x00" and \
            bytes(data[-8:-4]) == b"IEND" else "truncated PNG (no IEND chunk at the end)"
    return None     # other formats: the decoders' own checks (data/checks.check_image)


def _next_marker(data, pos):
    """Where the marker after entropy-coded data starting at ``pos`` begins, or None (a
    regular expression with a literal first byte: searched in C, measured the fastest of
    bytes.find loops, numpy and bytes.replace)."""
    found = _NEXT_MARKER.search(data, pos)
    return None if found is None else found.start()


def _jpeg_problem(data):
    pos, n, tables = 2, len(data), _JpegTables()
    while True:
        if pos + 2 > n:
            return f"truncated JPEG (ends at byte {n} before its end-of-image marker)"
        if data[pos] != 0xFF:
            return f"corrupt JPEG (no marker at byte {pos})"
        while pos + 1 < n and data[pos + 1] == 0xFF:     # fill bytes before a marker
            pos += 1
        if pos + 2 > n:
            return f"truncated JPEG (ends at byte {n} before its end-of-image marker)"
        marker = data[pos + 1]
        if marker == 0xD9:
            return None if tables.scans else "corrupt JPEG (no image data before its end)"
        if marker in _STANDALONE:
            pos += 2
            continue
        if marker < 0xC0 or marker == 0xD8:     # markers are 0xC0-0xFE (and TEM, 0x01)
            return f"corrupt JPEG (invalid marker 0x{marker:02X} at byte {pos})"
        if pos + 4 > n:
            return f"truncated JPEG (ends at byte {n} inside a header)"
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            return f"corrupt JPEG (segment length {length} at byte {pos})"
        if pos + 2 + length > n:
            return (f"truncated JPEG (a segment of {length} bytes at byte {pos} runs past the "
                    f"end, {n} bytes)")
        problem = tables.read(marker, data[pos + 4:pos + 2 + length])
        if problem:
            return f"corrupt JPEG ({problem}, segment at byte {pos})"
        pos += 2 + length
        if marker == 0xDA:      # start of scan: entropy-coded data up to the next marker
            pos = _next_marker(data, pos)
            if pos is None:
                return f"truncated JPEG (ends at byte {n} inside the image data)"


class _JpegTables:
    """The header facts a decoder relies on: quantisation and Huffman tables defined before
    a frame or scan uses them, a frame of sane size, scans naming the frame's components."""
    _SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}

    def __init__(self):
        self.quant, self.huff, self.components, self.scans = set(), set(), None, 0

    def read(self, marker, body):
        if marker == 0xDB:
            return self._dqt(body)
        if marker == 0xC4:
            return self._dht(body)
        if marker in self._SOF:
            return self._sof(body)
        if marker == 0xDA:
            return self._sos(body)
        return None

    def _dqt(self, body):
        pos = 0
        while pos < len(body):
            precision, table = body[pos] >> 4, body[pos] & 15
            size = 1 + 64 * (2 if precision else 1)
            if precision > 1 or table > 3 or pos + size > len(body):
                return "bad quantisation table"
            self.quant.add(table)
            pos += size
        return None

    def _dht(self, body):
        pos = 0
        while pos < len(body):
            kind, table = body[pos] >> 4, body[pos] & 15
            if kind > 1 or table > 3 or pos + 17 > len(body):
                return "bad Huffman table"
            counts = body[pos + 1:pos + 17]
            count = sum(counts)
            codes = 0       # codes of lengths up to L fit in L bits, one pattern left over
            for length, k in enumerate(counts, 1):
                codes = codes * 2 + k
                if codes >= 1 << length:
                    return "bad Huffman table"
            if count > 256 or pos + 17 + count > len(body):
                return "bad Huffman table"
            if kind == 0 and max(body[pos + 17:pos + 17 + count], default=0) > 15:
                return "bad Huffman table (a DC symbol above 15)"
            self.huff.add((kind, table))
            pos += 17 + count
        return None

    def _sof(self, body):
        if len(body) < 6:
            return "short frame header"
        precision, height, width, count = body[0], body[1] << 8 | body[2], \
            body[3] << 8 | body[4], body[5]
        if precision not in (8, 12) or not width or not height or count not in (1, 3, 4) \
                or len(body) != 6 + 3 * count:
            return f"bad frame header ({width}x{height}, {count} components)"
        self.components = {}
        for k in range(count):
            ident, sampling, quant = body[6 + 3 * k:9 + 3 * k]
            if not (1 <= sampling >> 4 <= 4 and 1 <= sampling & 15 <= 4) or quant > 3 \
                    or quant not in self.quant:
                return f"frame component {ident} refers to an undefined table"
            self.components[ident] = quant
        return None

    def _sos(self, body):
        if self.components is None:
            return "image data before the frame header"
        count = body[0] if body else 0
        if not 1 <= count <= 4 or len(body) != 4 + 2 * count:
            return "bad scan header"
        for k in range(count):
            ident, tables = body[1 + 2 * k], body[2 + 2 * k]
            if ident not in self.components:
                return f"scan names component {ident}, which the frame lacks"
            dc, ac = tables >> 4, tables & 15
            if (0, dc) not in self.huff and (1, ac) not in self.huff and self.huff:
                return f"scan of component {ident} uses an undefined Huffman table"
        self.scans += 1
        return None
