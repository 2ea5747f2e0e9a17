"""What the lab's ESXi delta writers (:mod:`vcblab.cowd`, :mod:`vcblab.sesparse`) share.

Both formats map the virtual disk in grains through a grain directory and grain tables; a
grain is either the layer's own data, reads as zeros (SEsparse only), or falls through to
the parent layer. The writers are the lab's own, written from the format definitions (see
each module), and deliberately share no code with vcbproxy's readers in ``vcbproxy.vmdk``:
qemu-img and dissect.hypervisor judge that both sides agree.
"""

from __future__ import annotations

import os
import sys
from array import array
from collections.abc import Iterator

SECTOR = 512

# What a grain of a delta holds.
PARENT = 0  # not allocated here: read the layer below
ZERO = 1  # reads as zeros whatever the layers below hold
DATA = 2  # the layer's own bytes


def le_array(kind: str, raw: bytes) -> array:
    """Little-endian unsigned integers ("I": 32 bit, "Q": 64 bit) as an array."""
    values = array(kind, raw)
    if sys.byteorder != "little":
        values.byteswap()
    return values


def le_bytes(values: array) -> bytes:
    if sys.byteorder == "little":
        return values.tobytes()
    swapped = array(values.typecode, values)
    swapped.byteswap()
    return swapped.tobytes()


def pread(fd: int, offset: int, length: int) -> bytes:
    """``length`` bytes, or fewer at the end of the file."""
    parts = []
    while length > 0:
        data = os.pread(fd, length, offset)
        if not data:
            break
        parts.append(data)
        offset += len(data)
        length -= len(data)
    return b"".join(parts)


def pwrite(fd: int, offset: int, data) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def merge_spans(spans: Iterator[tuple[int, int, int]]) -> Iterator[tuple[int, int, int]]:
    """``(offset, length, state)`` spans with neighbours of the same state joined."""
    pending = None
    for off, n, state in spans:
        if pending and pending[2] == state and pending[0] + pending[1] == off:
            pending = (pending[0], pending[1] + n, state)
            continue
        if pending:
            yield pending
        pending = (off, n, state)
    if pending:
        yield pending


class GrainExtent:
    """The operations the lab's disk engine needs from a delta extent file.

    Subclasses give their grain tables (:meth:`table`) and how an entry reads
    (:meth:`decode`); the read, span and merge logic on top is the same for both formats.
    """

    grain_bytes: int
    capacity: int
    gtes_per_gt: int
    fd: int

    def table(self, index: int):  # pragma: no cover - abstract
        """Grain table ``index`` as an array of raw entries, or None when not allocated."""
        raise NotImplementedError

    def decode(self, entry: int) -> tuple[int, int]:  # pragma: no cover - abstract
        """``(state, byte offset of the grain in the file)`` of a raw grain table entry."""
        raise NotImplementedError

    @property
    def num_grains(self) -> int:
        return -(-self.capacity // self.grain_bytes)

    def grain(self, g: int) -> tuple[int, int]:
        gt = self.table(g // self.gtes_per_gt)
        return (PARENT, 0) if gt is None else self.decode(gt[g % self.gtes_per_gt])

    def spans(self, offset: int, length: int) -> Iterator[tuple[int, int, int]]:
        """``(offset, length, state)`` covering ``[offset, offset+length)``, merged by state.

        Walks table by table: a table never allocated, or all zero, costs one check."""
        return merge_spans(self._spans(offset, offset + length))

    def _spans(self, pos: int, end: int) -> Iterator[tuple[int, int, int]]:
        gb, per = self.grain_bytes, self.gtes_per_gt
        while pos < end:
            g = pos // gb
            t, first = divmod(g, per)
            table_end = min(end, (t + 1) * per * gb)
            gt = self.table(t)
            if gt is None or not any(gt[first : -(-(table_end) // gb) - t * per]):
                yield pos, table_end - pos, PARENT
                pos = table_end
                continue
            while pos < table_end:
                g, within = divmod(pos, gb)
                n = min(gb - within, table_end - pos)
                yield pos, n, self.decode(gt[g - t * per])[0]
                pos += n

    def read_own(self, offset: int, length: int) -> bytes:
        """The layer's own bytes; zeros where a grain is ZERO or PARENT (callers that care
        ask :meth:`spans`)."""
        gb = self.grain_bytes
        out = bytearray(length)
        pos, end = offset, offset + length
        while pos < end:
            g, within = divmod(pos, gb)
            n = min(gb - within, end - pos)
            state, where = self.grain(g)
            if state == DATA:
                # the grains that follow in the disk and in the file: one read
                total = n
                while pos + total < end:
                    s2, w2 = self.grain((pos + total) // gb)
                    if s2 != DATA or w2 != where + within + total:
                        break
                    total += min(gb, end - pos - total)
                data = pread(self.fd, where + within, total)
                out[pos - offset : pos - offset + len(data)] = data
                n = total
            pos += n
        return bytes(out)

    def allocated(self) -> list[tuple[int, int, int]]:
        """Merged ``(offset, length, state)`` of every grain that is not PARENT."""
        return [s for s in self.spans(0, self.capacity) if s[2] != PARENT]
