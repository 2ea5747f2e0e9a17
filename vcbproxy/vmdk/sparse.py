"""Hosted sparse extents (``KDMV``): monolithicSparse files, twoGbMaxExtentSparse pieces, deltas.

Layout we write (spec "Hosted Sparse Extent Header"): sector 0 header; optional embedded
descriptor from sector 1; redundant grain directory + tables; grain directory + tables; padding
to a grain boundary (``overHead``); then grains appended in the order they are first written.
Grain directory (GD) and grain table (GT) entries are 32-bit sector offsets, 0 = unallocated.

Reading works on a local file or on any :class:`RandomAccess` (a delta disk read over HTTP):
the GD is read once and each GT on first use, so a remote read costs a few ranged requests.
"""

from __future__ import annotations

import os
import struct
import sys
from array import array
from pathlib import Path

from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.io import pread_full

SECTOR = 512
MAGIC = 0x564D444B  # "KDMV" little-endian
GTES_PER_GT = 512
GTE_SIZE = 4

FLAG_VALID_NEWLINE = 1 << 0
FLAG_REDUNDANT_GT = 1 << 1
FLAG_ZERO_GRAIN = 1 << 2
FLAG_COMPRESSED = 1 << 16
FLAG_MARKERS = 1 << 17

GD_AT_END = 0xFFFFFFFFFFFFFFFF
ZERO_GRAIN_ENTRY = 1  # with FLAG_ZERO_GRAIN: the grain reads as zeros even over a parent

# magic, version, flags, capacity, grainSize, descriptorOffset, descriptorSize, numGTEsPerGT,
# rgdOffset, gdOffset, overHead, uncleanShutdown, 4 newline-detection chars, compressAlgorithm
HEADER = struct.Struct("<IIIQQQQIQQQB4sH")
NEWLINE_CHARS = b"\n \r\n"
EMBEDDED_DESCRIPTOR_SECTORS = 20
GT_BATCH = 64  # grain tables fetched per request (64 x 2 KiB: 2 GiB of disk)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


class SparseHeader:
    """The 512-byte header (also the footer of streamOptimized files)."""

    def __init__(
        self,
        *,
        version=1,
        flags=FLAG_VALID_NEWLINE | FLAG_REDUNDANT_GT,
        capacity=0,
        grain_size=128,
        descriptor_offset=0,
        descriptor_size=0,
        gtes_per_gt=GTES_PER_GT,
        rgd_offset=0,
        gd_offset=0,
        overhead=0,
        unclean=0,
        compress=0,
    ):
        self.version = version
        self.flags = flags
        self.capacity = capacity  # sectors
        self.grain_size = grain_size  # sectors
        self.descriptor_offset = descriptor_offset
        self.descriptor_size = descriptor_size
        self.gtes_per_gt = gtes_per_gt
        self.rgd_offset = rgd_offset
        self.gd_offset = gd_offset
        self.overhead = overhead
        self.unclean = unclean
        self.compress = compress

    @classmethod
    def unpack(cls, data: bytes) -> SparseHeader:
        if len(data) < SECTOR:
            raise VmdkError("sparse extent: file too short for a header")
        (
            magic,
            version,
            flags,
            capacity,
            grain,
            doff,
            dsize,
            gtes,
            rgd,
            gd,
            overhead,
            unclean,
            _nl,
            compress,
        ) = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise VmdkError("not a hosted sparse extent (no KDMV magic)")
        if version not in (1, 2, 3):
            raise VmdkError(f"sparse extent: unsupported version {version}")
        if grain < 1 or grain & (grain - 1):
            raise VmdkError(f"sparse extent: grain size {grain} sectors is not a power of two")
        if gtes < 1:
            raise VmdkError("sparse extent: numGTEsPerGT is 0")
        return cls(
            version=version,
            flags=flags,
            capacity=capacity,
            grain_size=grain,
            descriptor_offset=doff,
            descriptor_size=dsize,
            gtes_per_gt=gtes,
            rgd_offset=rgd,
            gd_offset=gd,
            overhead=overhead,
            unclean=unclean,
            compress=compress,
        )

    def pack(self) -> bytes:
        body = HEADER.pack(
            MAGIC,
            self.version,
            self.flags,
            self.capacity,
            self.grain_size,
            self.descriptor_offset,
            self.descriptor_size,
            self.gtes_per_gt,
            self.rgd_offset,
            self.gd_offset,
            self.overhead,
            self.unclean,
            NEWLINE_CHARS,
            self.compress,
        )
        return body.ljust(SECTOR, b"\0")

    @property
    def num_gts(self) -> int:
        return _ceil_div(_ceil_div(self.capacity, self.grain_size), self.gtes_per_gt)


class _FdBackend:
    """Read/write access to a local file by descriptor (the RandomAccess shape plus pwrite)."""

    def __init__(self, fd: int):
        self.fd = fd

    @property
    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def pread(self, offset: int, length: int) -> bytes:
        return pread_full(self.fd, offset, length)

    def pwrite(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self.fd, view, offset)
            view = view[n:]
            offset += n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SparseExtent:
    """One hosted sparse extent file; see the module docstring for the layout."""

    def __init__(self, backend, header: SparseHeader, *, writable: bool, path: Path | None = None):
        self._io = backend
        self.header = header
        self.writable = writable
        self.path = path
        if header.flags & FLAG_COMPRESSED and writable:
            raise VmdkError("compressed (streamOptimized) extents are read-only here")
        self._gd: array | None = None
        self._rgd: array | None = None
        self._gts: dict[int, array] = {}
        self._dirty: set[int] = set()
        self._end = 0  # where the next grain goes (writable only)
        if writable:
            size = backend.size
            grain_bytes = self.grain_bytes
            self._end = max(_ceil_div(size, grain_bytes) * grain_bytes, header.overhead * SECTOR)

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def create(
        cls, path, capacity: int, *, descriptor: str | None = None, grain_size: int = 128
    ) -> SparseExtent:
        """A new, empty extent of ``capacity`` bytes at ``path`` (overwritten if present)."""
        if capacity <= 0 or capacity % SECTOR:
            raise VmdkError(f"sparse extent capacity {capacity} is not a positive multiple of 512")
        if grain_size < 8 or grain_size & (grain_size - 1):
            raise VmdkError(f"grain size {grain_size} sectors must be a power of two >= 8")
        header = SparseHeader(capacity=capacity // SECTOR, grain_size=grain_size)
        desc_bytes = b""
        next_sector = 1
        if descriptor is not None:
            desc_bytes = descriptor.encode("utf-8")
            dsize = max(EMBEDDED_DESCRIPTOR_SECTORS, _ceil_div(len(desc_bytes) + 1, SECTOR))
            header.descriptor_offset, header.descriptor_size = 1, dsize
            next_sector += dsize
        num_gts = header.num_gts
        gd_sectors = _ceil_div(num_gts * GTE_SIZE, SECTOR)
        gt_sectors = _ceil_div(GTES_PER_GT * GTE_SIZE, SECTOR)
        header.rgd_offset = next_sector
        rgt_start = next_sector + gd_sectors
        header.gd_offset = rgt_start + num_gts * gt_sectors
        gt_start = header.gd_offset + gd_sectors
        meta_end = gt_start + num_gts * gt_sectors
        header.overhead = _ceil_div(meta_end, grain_size) * grain_size

        path = Path(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o640)
        backend = _FdBackend(fd)
        try:
            backend.pwrite(0, header.pack())
            if desc_bytes:
                backend.pwrite(SECTOR, desc_bytes.ljust(header.descriptor_size * SECTOR, b"\0"))
            # Every GT is preallocated (as VMware and qemu do), so GD entries never change.
            rgd = array("I", (rgt_start + i * gt_sectors for i in range(num_gts)))
            gd = array("I", (gt_start + i * gt_sectors for i in range(num_gts)))
            backend.pwrite(header.rgd_offset * SECTOR, _le(rgd))
            backend.pwrite(header.gd_offset * SECTOR, _le(gd))
            os.ftruncate(fd, header.overhead * SECTOR)  # GTs: zeros, as a hole
        except BaseException:
            backend.close()
            raise
        extent = cls(backend, header, writable=True, path=path)
        extent._gd, extent._rgd = gd, rgd
        return extent

    @classmethod
    def open(cls, path, writable: bool = False) -> SparseExtent:
        path = Path(path)
        fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        backend = _FdBackend(fd)
        try:
            header = SparseHeader.unpack(backend.pread(0, SECTOR))
            return cls(backend, header, writable=writable, path=path)
        except BaseException:
            backend.close()
            raise

    @classmethod
    def from_reader(cls, ra) -> SparseExtent:
        """Read-only over a :class:`RandomAccess` (closing the extent does not close ``ra``)."""
        header = SparseHeader.unpack(ra.pread(0, SECTOR))
        return cls(_Borrowed(ra), header, writable=False)

    # -- properties ------------------------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self.header.capacity * SECTOR

    @property
    def grain_bytes(self) -> int:
        return self.header.grain_size * SECTOR

    @property
    def num_grains(self) -> int:
        return _ceil_div(self.header.capacity, self.header.grain_size)

    @property
    def compressed(self) -> bool:
        return bool(self.header.flags & FLAG_COMPRESSED)

    def embedded_descriptor(self) -> str | None:
        h = self.header
        if not h.descriptor_offset or not h.descriptor_size:
            return None
        raw = self._io.pread(h.descriptor_offset * SECTOR, h.descriptor_size * SECTOR)
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")

    # -- grain directory / tables ----------------------------------------------------------

    def _load_gd(self) -> array:
        if self._gd is None:
            h = self.header
            if h.gd_offset == GD_AT_END:
                raise VmdkError(
                    "streamOptimized extent with the grain directory in a footer: "
                    "read it sequentially (vcbproxy.vmdk.stream)"
                )
            raw = self._io.pread(h.gd_offset * SECTOR, h.num_gts * GTE_SIZE)
            if len(raw) != h.num_gts * GTE_SIZE:
                raise VmdkError("sparse extent: grain directory is truncated")
            self._gd = _from_le(raw)
        return self._gd

    def _gt(self, gt_index: int) -> array:
        gt = self._gts.get(gt_index)
        if gt is None:
            gd = self._load_gd()
            if gt_index >= len(gd):
                raise VmdkError(f"sparse extent: grain table {gt_index} beyond the directory")
            sector = gd[gt_index]
            n = self.header.gtes_per_gt
            if sector == 0:
                gt = array("I", bytes(n * GTE_SIZE))
                self._gts[gt_index] = gt
                return gt
            # GTs usually sit back to back: fetch a run of them in one ranged read, since
            # remote extents pay a round trip per request.
            gt_bytes = n * GTE_SIZE
            gt_sectors = _ceil_div(gt_bytes, SECTOR)
            count = 1
            while (
                count < GT_BATCH
                and gt_index + count < len(gd)
                and gt_index + count not in self._gts
                and gd[gt_index + count] == sector + count * gt_sectors
            ):
                count += 1
            stride = gt_sectors * SECTOR
            raw = self._io.pread(sector * SECTOR, (count - 1) * stride + gt_bytes)
            if len(raw) < gt_bytes:
                raise VmdkError(f"sparse extent: grain table {gt_index} is truncated")
            for i in range(count):
                piece = raw[i * stride : i * stride + gt_bytes]
                if len(piece) == gt_bytes:
                    self._gts[gt_index + i] = _from_le(piece)
            gt = self._gts[gt_index]
        return gt

    def grain_entry(self, grain_index: int) -> int:
        """Raw GT entry: 0 unallocated, 1 zero grain (with the zero-grain flag), else a sector."""
        if not 0 <= grain_index < self.num_grains:
            raise VmdkError(f"grain {grain_index} outside the extent")
        n = self.header.gtes_per_gt
        return self._gt(grain_index // n)[grain_index % n]

    def grain_offset(self, grain_index: int) -> int | None:
        """Byte offset of the grain's data in the file, 0 for an explicit zero grain,
        None if the grain is not allocated (read through to the parent)."""
        entry = self.grain_entry(grain_index)
        if entry == 0:
            return None
        if entry == ZERO_GRAIN_ENTRY and self.header.flags & FLAG_ZERO_GRAIN:
            return 0
        return entry * SECTOR

    def next_allocated(self, grain_index: int, limit: int) -> int:
        """The first grain in ``[grain_index, limit)`` with a GT entry, else ``limit``.

        Skips whole empty grain tables at C speed: chains scan mostly-empty deltas."""
        n = self.header.gtes_per_gt
        g = grain_index
        limit = min(limit, self.num_grains)
        while g < limit:
            gt_index, i = divmod(g, n)
            gt = self._gt(gt_index)
            stop = min(n, i + limit - g)
            if any(gt[i:stop]):
                for j in range(i, stop):
                    if gt[j]:
                        return g + j - i
            g += stop - i
        return limit

    def is_allocated(self, grain_index: int) -> bool:
        return self.grain_entry(grain_index) != 0

    def allocated_ranges(self) -> list[tuple[int, int]]:
        """Merged ``(offset, length)`` byte ranges of the allocated grains (clipped to capacity)."""
        ranges: list[tuple[int, int]] = []
        gb = self.grain_bytes
        g = -1
        while True:
            g = self.next_allocated(g + 1, self.num_grains)
            if g >= self.num_grains:
                break
            start = g * gb
            length = min(gb, self.capacity - start)
            if ranges and ranges[-1][0] + ranges[-1][1] == start:
                ranges[-1] = (ranges[-1][0], ranges[-1][1] + length)
            else:
                ranges.append((start, length))
        return ranges

    # -- data ------------------------------------------------------------------------------

    def read(self, offset: int, length: int) -> bytes:
        """Bytes of the virtual extent; unallocated grains read as zeros."""
        if offset < 0 or offset + length > self.capacity:
            raise VmdkError(f"read {offset}+{length} outside the extent ({self.capacity} bytes)")
        if self.compressed:
            raise VmdkError("reading compressed grains at random is not supported")
        gb = self.grain_bytes
        out = bytearray()
        pos, end = offset, offset + length
        while pos < end:
            g, within = divmod(pos, gb)
            n = min(gb - within, end - pos)
            where = self.grain_offset(g)
            if not where:
                out += bytes(n)
            else:
                # coalesce physically contiguous grains into one ranged read
                file_start = where + within
                total = n
                while pos + total < end:
                    g2 = (pos + total) // gb
                    w2 = self.grain_offset(g2)
                    if not w2 or w2 != file_start + total:
                        break
                    total += min(gb, end - pos - total)
                data = self._io.pread(file_start, total)
                if len(data) != total:
                    raise VmdkError(f"sparse extent: grain {g} lies beyond the end of the file")
                out += data
                n = total
            pos += n
        return bytes(out)

    def write(
        self,
        offset: int,
        data: bytes | bytearray | memoryview,
        *,
        force: bool = False,
        flush: bool = True,
    ) -> None:
        """Write ``data`` at ``offset``; allocates grains as needed and flushes the tables.

        All-zero data for an unallocated grain is skipped (it already reads as zeros) unless
        ``force``: in a delta disk an explicit zero must hide the parent's data. ``flush=False``
        leaves the changed grain tables to :meth:`flush`/:meth:`sync` (a writer filling a new
        extent front to back flushes once at the end, not after every chunk).
        """
        if not self.writable:
            raise VmdkError("extent opened read-only")
        if offset < 0 or offset + len(data) > self.capacity:
            raise VmdkError(
                f"write {offset}+{len(data)} outside the extent ({self.capacity} bytes)"
            )
        gb = self.grain_bytes
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            g, within = divmod(offset + pos, gb)
            n = min(gb - within, len(view) - pos)
            piece = view[pos : pos + n]
            where = self.grain_offset(g)
            if where:
                self._io.pwrite(where + within, piece)
            elif n == gb:  # a whole grain: written as it is, no copy
                if force or not is_zero(piece):
                    self._append_grain(g, piece)
            elif force or not is_zero(piece):
                grain = bytearray(gb)  # an unallocated (or zero) grain reads as zeros
                grain[within : within + n] = piece
                self._append_grain(g, grain)
            pos += n
        if flush:
            self.flush()

    def _append_grain(self, grain_index: int, grain: bytes | bytearray | memoryview) -> None:
        where = self._end
        self._io.pwrite(where, grain)
        self._end = where + len(grain)
        n = self.header.gtes_per_gt
        gt_index = grain_index // n
        self._gt(gt_index)[grain_index % n] = where // SECTOR
        self._dirty.add(gt_index)

    def flush(self) -> None:
        """Write changed grain tables to both the primary and the redundant copy."""
        if not self._dirty:
            return
        gd = self._load_gd()
        rgd = self._load_rgd()
        for gt_index in sorted(self._dirty):
            raw = _le(self._gts[gt_index])
            if gd[gt_index] == 0:
                raise VmdkError("sparse extent: grain table not preallocated")
            self._io.pwrite(gd[gt_index] * SECTOR, raw)
            if rgd is not None and rgd[gt_index]:
                self._io.pwrite(rgd[gt_index] * SECTOR, raw)
        self._dirty.clear()

    def _load_rgd(self) -> array | None:
        h = self.header
        if not h.flags & FLAG_REDUNDANT_GT or not h.rgd_offset:
            return None
        if self._rgd is None:
            self._rgd = _from_le(self._io.pread(h.rgd_offset * SECTOR, h.num_gts * GTE_SIZE))
        return self._rgd

    def fileno(self) -> int | None:
        """The local file's descriptor (None for a remote extent)."""
        return self._io.fd if isinstance(self._io, _FdBackend) else None

    def sync(self) -> None:
        """flush + fsync (local files only)."""
        self.flush()
        if isinstance(self._io, _FdBackend):
            os.fsync(self._io.fd)

    def close(self) -> None:
        if self._io is None:
            return
        try:
            if self.writable:
                self.flush()
        finally:
            self._io.close()
            self._io = None

    def __enter__(self) -> SparseExtent:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _Borrowed:
    """A RandomAccess the extent reads through but does not own."""

    def __init__(self, ra):
        self._ra = ra

    @property
    def size(self) -> int:
        return self._ra.size

    def pread(self, offset: int, length: int) -> bytes:
        return self._ra.pread(offset, length)

    def close(self) -> None:
        self._ra = None


def is_zero(data) -> bool:
    """True if every byte of ``data`` is zero (fast: compares against a shared zero buffer)."""
    view = memoryview(data).cast("B")
    for start in range(0, len(view), len(_ZEROS)):
        if not _ZEROS.startswith(view[start : start + len(_ZEROS)]):
            return False
    return True


_ZEROS = bytes(1 << 20)


def _le(values: array) -> bytes:
    """uint32 array → little-endian bytes (the on-disk byte order)."""
    if array("I").itemsize != 4:
        return struct.pack(f"<{len(values)}I", *values)
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array("I", values)
    swapped.byteswap()
    return swapped.tobytes()


def _from_le(raw: bytes) -> array:
    if array("I").itemsize != 4:
        return array("L", struct.unpack(f"<{len(raw) // 4}I", raw))
    values = array("I", raw)
    if sys.byteorder != "little":
        values.byteswap()
    return values
