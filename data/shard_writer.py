"""Writing one webdataset-layout shard: checked images as ``KEY.jpg``/``KEY.png`` + ``KEY.cls``.

The tar is written by hand (ustar headers from ``tarfile.TarInfo.tobuf``) so that the byte
offset of every image's data is known as it is written, and hashed (sha256) on the way, for
the index and for data/stage.py's checks. The file appears under its name only when complete
(written to ``NAME.tmp``, flushed to disk, renamed).
"""
import hashlib
import os
import tarfile

from .augment import jpeg_frame
from .checks import check_bytes

BLOCK, RECORD = 512, 10240
MTIME = 1_340_000_000      # fixed: the same inputs give the same bytes


class _Sources:
    """Positioned reads from the plan's sources, a few file descriptors kept open."""

    def __init__(self, paths, keep=4):
        self.paths, self.keep, self.fds = paths, keep, {}

    def read(self, source, offset, size):
        fd = self.fds.get(source)
        if fd is None:
            if len(self.fds) >= self.keep:
                os.close(self.fds.pop(next(iter(self.fds))))
            fd = self.fds[source] = os.open(self.paths[source], os.O_RDONLY)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise OSError(f"{self.paths[source]} ended early: the tar is truncated")
        return data

    def close(self):
        for fd in self.fds.values():
            os.close(fd)


class _Out:
    def __init__(self, f):
        self.f, self.pos, self.hash = f, 0, hashlib.sha256()

    def write(self, data):
        self.f.write(data)
        self.hash.update(data)
        self.pos += len(data)

    def member(self, name, data):
        """Write one member; returns the offset of its data."""
        self.write(ustar_header(name, len(data)))
        start = self.pos
        self.write(data)
        self.write(b"\0" * (-len(data) % BLOCK))
        return start


def kind_of(data):
    """(extension, note) of encoded bytes: note is 'png' for a PNG, 'cmyk' for a CMYK JPEG."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png", "png"
    frame = jpeg_frame(data)
    return "jpg", "cmyk" if frame is not None and frame[2] == 4 else None


def ustar_header(name, size):
    """A ustar header block for a regular file (tarfile.TarInfo.tobuf for long names)."""
    raw = name.encode()
    if len(raw) >= 100:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, MTIME, 0o644
        return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")
    block = bytearray(BLOCK)
    block[0:len(raw)] = raw
    block[100:108] = b"0000644\0"
    block[108:116] = block[116:124] = b"0000000\0"
    block[124:136] = b"%011o\0" % size
    block[136:148] = b"%011o\0" % MTIME
    block[148:156] = b" " * 8
    block[156:157] = b"0"
    block[257:265] = b"ustar\x0000"
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def write_shard(path, plan, members):
    """Write samples ``members`` (indices into ``plan``) to the shard at ``path``; returns its
    record: size, sha256, the samples with their data offsets and sizes, and the odd files."""
    record = {"samples": [], "offsets": [], "sizes": [], "cmyk": [], "png": [], "bad": [],
              "image_bytes": 0}
    sources = _Sources(plan.sources)
    tmp = path + ".tmp"
    try:
        with open(tmp, "wb") as f:
            out = _Out(f)
            for i in members:
                i = int(i)
                name = plan.names[i]
                where = f"{plan.sources[plan.source[i]]}:{name}" if len(plan.sources) == 1 \
                    else plan.sources[plan.source[i]]
                data = sources.read(int(plan.source[i]), int(plan.offset[i]), int(plan.size[i]))
                reason = check_bytes(data)
                if reason is not None:
                    record["bad"].append(f"{where} ({reason})")
                    continue
                ext, note = kind_of(data)
                if note:
                    record[note].append(where)
                key = os.path.splitext(name)[0]
                record["offsets"].append(out.member(f"{key}.{ext}", data))
                out.member(f"{key}.cls", str(int(plan.labels[i])).encode())
                record["samples"].append(i)
                record["sizes"].append(len(data))
                record["image_bytes"] += len(data)
            out.write(b"\0" * (2 * BLOCK))                     # end of archive
            out.write(b"\0" * (-out.pos % RECORD))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        sources.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    record.update(size=out.pos, sha256=out.hash.hexdigest())
    return record
