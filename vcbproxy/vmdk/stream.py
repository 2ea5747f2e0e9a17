"""streamOptimized VMDKs: the format NFC export leases send and OVF packages carry.

A streamOptimized file is written and read strictly front to back (spec "Stream-Optimized
Compressed Sparse Extents"): header (grain directory "at end"), embedded descriptor, then
markers, each sector-aligned -- a grain marker ``(lba u64, size u32, deflate data)`` or a
metadata marker ``(sectors u64, 0 u32, type u32)`` followed by that many sectors of grain
table, grain directory or footer -- and an end-of-stream marker. Grain tables are emitted as
soon as the writer moves past them, so memory does not grow with the disk.
"""

from __future__ import annotations

import struct
import zlib
from array import array
from collections.abc import Iterator

from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.descriptor import Extent, new_descriptor, render
from vcbproxy.vmdk.sparse import (
    FLAG_COMPRESSED,
    FLAG_MARKERS,
    FLAG_VALID_NEWLINE,
    GD_AT_END,
    GTE_SIZE,
    GTES_PER_GT,
    SECTOR,
    SparseHeader,
    _ceil_div,
    _le,
    is_zero,
)

MARKER_EOS, MARKER_GT, MARKER_GD, MARKER_FOOTER = 0, 1, 2, 3
COMPRESSION_DEFLATE = 1
_GRAIN_MARKER = struct.Struct("<QI")
_META_MARKER = struct.Struct("<QII")
DESCRIPTOR_SECTORS = 20


def _pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % SECTOR)


class StreamOptimizedWriter:
    """Writes a streamOptimized VMDK to ``out`` (anything with ``.write(bytes)``), in order.

    ``write(offset, data)``: offsets must not go backwards (gaps read as zeros; all-zero
    grains are not stored). ``finish()`` (alias ``close()``) writes the last grain, the
    tables, the footer and the end-of-stream marker; it never closes ``out``.
    """

    def __init__(
        self,
        out,
        capacity: int,
        *,
        descriptor: str | None = None,
        grain_size: int = 128,
        level: int = 1,
        name: str = "disk.vmdk",
    ):
        if capacity <= 0 or capacity % SECTOR:
            raise VmdkError(f"capacity {capacity} is not a positive multiple of 512")
        if descriptor is None:  # e.g. an NFC download, which has no file name of its own
            extent = Extent("RW", capacity // SECTOR, "SPARSE", name)
            descriptor = render(new_descriptor("streamOptimized", [extent], capacity=capacity))
        self._out = out
        self._pos = 0  # bytes written to out
        self.capacity = capacity
        self._level = level
        self._grain_bytes = grain_size * SECTOR
        desc = descriptor.encode("utf-8")
        dsize = max(DESCRIPTOR_SECTORS, _ceil_div(len(desc) + 1, SECTOR))
        overhead = _ceil_div(1 + dsize, grain_size) * grain_size
        self._header = SparseHeader(
            version=3,
            flags=FLAG_VALID_NEWLINE | FLAG_COMPRESSED | FLAG_MARKERS,
            capacity=capacity // SECTOR,
            grain_size=grain_size,
            descriptor_offset=1,
            descriptor_size=dsize,
            gd_offset=GD_AT_END,
            overhead=overhead,
            compress=COMPRESSION_DEFLATE,
        )
        self._gd = array("I", bytes(self._header.num_gts * GTE_SIZE))
        self._gt = array("I", bytes(GTES_PER_GT * GTE_SIZE))
        self._gt_index = 0
        self._gt_used = False
        self._grain = -1  # index of the grain being assembled, -1 none
        self._buf = bytearray()
        self._next = 0  # lowest offset the next write may start at
        self._emit(self._header.pack())
        self._emit(desc.ljust(dsize * SECTOR, b"\0"))
        self._emit(bytes((overhead - 1 - dsize) * SECTOR))
        self.finished = False

    def _emit(self, data: bytes) -> None:
        self._out.write(data)
        self._pos += len(data)

    def write(self, offset: int, data: bytes) -> None:
        if offset < self._next:
            raise VmdkError(f"streamOptimized writes must go forward ({offset} < {self._next})")
        if offset + len(data) > self.capacity:
            raise VmdkError(f"write {offset}+{len(data)} beyond the capacity {self.capacity}")
        gb = self._grain_bytes
        view = memoryview(data)
        pos = 0
        while pos < len(view):
            g, within = divmod(offset + pos, gb)
            n = min(gb - within, len(view) - pos)
            piece = view[pos : pos + n]
            if g != self._grain:
                self._flush_grain()
                if is_zero(piece):  # nothing to store yet for this grain
                    pos += n
                    continue
                self._grain = g
                self._buf = bytearray(gb)
            self._buf[within : within + n] = piece
            pos += n
        self._next = offset + len(data)

    def _flush_grain(self) -> None:
        g = self._grain
        if g < 0:
            return
        self._grain = -1
        if is_zero(self._buf):
            return
        gt_index, entry = divmod(g, GTES_PER_GT)
        self._advance_gt(gt_index)
        lba = g * self._header.grain_size
        packed = zlib.compress(bytes(self._buf), self._level)
        self._gt[entry] = self._pos // SECTOR
        self._gt_used = True
        self._emit(_pad(_GRAIN_MARKER.pack(lba, len(packed)) + packed))

    def _advance_gt(self, gt_index: int) -> None:
        """Emit the grain table being filled once grains move past it."""
        if gt_index != self._gt_index:
            self._emit_gt()
            self._gt_index = gt_index

    def _emit_gt(self) -> None:
        if not self._gt_used:
            return
        sectors = _ceil_div(GTES_PER_GT * GTE_SIZE, SECTOR)
        self._emit(_pad(_META_MARKER.pack(sectors, 0, MARKER_GT)))
        self._gd[self._gt_index] = self._pos // SECTOR
        self._emit(_pad(_le(self._gt)))
        self._gt = array("I", bytes(GTES_PER_GT * GTE_SIZE))
        self._gt_used = False

    def finish(self) -> None:
        if self.finished:
            return
        self._flush_grain()
        self._emit_gt()
        gd_bytes = _pad(_le(self._gd))
        self._emit(_pad(_META_MARKER.pack(len(gd_bytes) // SECTOR, 0, MARKER_GD)))
        gd_sector = self._pos // SECTOR
        self._emit(gd_bytes)
        self._emit(_pad(_META_MARKER.pack(1, 0, MARKER_FOOTER)))
        footer = SparseHeader(**{**vars(self._header), "gd_offset": gd_sector})
        self._emit(footer.pack())
        self._emit(bytes(SECTOR))  # end-of-stream marker
        self.finished = True

    close = finish  # does not close ``out``: the caller owns it


def _read_exact(reader, n: int) -> bytes:
    parts = []
    while n > 0:
        data = reader.read(n)
        if not data:
            break
        parts.append(data)
        n -= len(data)
    return b"".join(parts)


def _skip(reader, n: int) -> None:
    while n > 0:
        data = reader.read(min(n, 1 << 20))
        if not data:
            raise VmdkError("streamOptimized stream ends inside metadata")
        n -= len(data)


def iter_stream_optimized(
    reader, *, require_end: bool = False
) -> tuple[int, Iterator[tuple[int, bytes]]]:
    """``(capacity, grains)`` from a sequential reader (``.read(n)``; never seeks).

    The header is read before returning, so a bad stream fails early; ``grains`` yields
    ``(offset, decompressed bytes)`` in stream order, clipped to the capacity.
    ``require_end``: a stream that stops without its end-of-stream marker is an error
    (a file that will be stored as it came must be complete); by default it is tolerated.
    """
    head = _read_exact(reader, SECTOR)
    header = SparseHeader.unpack(head)
    if not header.flags & FLAG_MARKERS or not header.flags & FLAG_COMPRESSED:
        raise VmdkError("not a streamOptimized VMDK (no compressed grains with markers)")
    if header.compress != COMPRESSION_DEFLATE:
        raise VmdkError(f"streamOptimized: unknown compression algorithm {header.compress}")
    capacity = header.capacity * SECTOR
    grain_bytes = header.grain_size * SECTOR
    if header.overhead < 1:
        raise VmdkError("streamOptimized: overHead is 0")

    def grains() -> Iterator[tuple[int, bytes]]:
        _skip(reader, (header.overhead - 1) * SECTOR)
        while True:
            sector = _read_exact(reader, SECTOR)
            if not sector:
                if require_end:
                    raise VmdkError("streamOptimized stream ends without its end-of-stream marker")
                return  # tolerated: some writers stop after the last grain
            if len(sector) != SECTOR:
                raise VmdkError("streamOptimized stream ends inside a marker")
            lba, size = _GRAIN_MARKER.unpack_from(sector)
            if size:
                total = _ceil_div(_GRAIN_MARKER.size + size, SECTOR) * SECTOR
                body = sector + _read_exact(reader, total - SECTOR) if total > SECTOR else sector
                if len(body) != total:
                    raise VmdkError("streamOptimized stream ends inside a grain")
                packed = body[_GRAIN_MARKER.size : _GRAIN_MARKER.size + size]
                try:
                    data = zlib.decompress(packed)
                except zlib.error as exc:
                    raise VmdkError(
                        f"streamOptimized: grain at sector {lba} is corrupt ({exc})"
                    ) from None
                offset = lba * SECTOR
                if offset % grain_bytes or offset >= capacity or len(data) > grain_bytes:
                    raise VmdkError(f"streamOptimized: bad grain at sector {lba}")
                yield offset, data[: capacity - offset]
                continue
            (mtype,) = struct.unpack_from("<I", sector, 12)
            if mtype == MARKER_EOS:
                return
            if mtype not in (MARKER_GT, MARKER_GD, MARKER_FOOTER):
                raise VmdkError(f"streamOptimized: unknown marker type {mtype}")
            _skip(reader, lba * SECTOR)

    return capacity, grains()
