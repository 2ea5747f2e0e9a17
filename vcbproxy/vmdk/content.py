"""The content of a staged disk in any output format, front to back.

:class:`~vcbproxy.vmdk.chain.DiskChain` maps a disk to byte ranges of its files, which a
streamOptimized file cannot offer (its grains are compressed). Verifying or uploading an export
only needs the bytes in order, so :func:`disk_pieces` serves every format, including stream.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from vcbproxy.vmdk import VmdkError
from vcbproxy.vmdk.chain import DiskChain, read_areas, skip_holes
from vcbproxy.vmdk.io import RandomAccess
from vcbproxy.vmdk.sparse import FLAG_COMPRESSED, MAGIC
from vcbproxy.vmdk.stream import iter_stream_optimized

CHUNK = 1 << 20


def is_stream_optimized(ra) -> bool:
    """True if the file is a compressed (streamOptimized) sparse extent."""
    head = ra.pread(0, 12)
    return (
        len(head) == 12
        and int.from_bytes(head[:4], "little") == MAGIC
        and bool(int.from_bytes(head[8:12], "little") & FLAG_COMPRESSED)
    )


def disk_pieces(
    descriptor_name: str, opener: Callable[[str], RandomAccess]
) -> tuple[int, Iterator[tuple[int, bytes | int]]]:
    """``(capacity, pieces)``: ``(offset, bytes)`` for data and ``(offset, n)`` for ``n`` zero
    bytes, in order, covering ``[0, capacity)`` exactly. A file shorter than the data it maps
    raises :class:`VmdkError` while iterating."""
    ra = opener(descriptor_name)
    if is_stream_optimized(ra):
        capacity, grains = iter_stream_optimized(_Sequential(ra))
        return capacity, _fill_gaps(capacity, grains, descriptor_name)
    chain = DiskChain.open(descriptor_name, opener)
    return chain.capacity, _from_runs(chain, opener)


def _from_runs(chain: DiskChain, opener) -> Iterator[tuple[int, bytes | int]]:
    # Holes of local flat extents are never read: a mostly empty disk verifies at CPU speed.
    return read_areas(
        skip_holes(chain.runs(), opener),
        lambda name, offset, length: opener(name).stream(offset, length, CHUNK),
        [(0, chain.capacity)],
    )


def _fill_gaps(capacity: int, grains, name: str) -> Iterator[tuple[int, bytes | int]]:
    pos = 0
    for offset, data in grains:
        if offset < pos:
            raise VmdkError(f"{name}: grains out of order at {offset}")
        if offset > pos:
            yield pos, offset - pos
        yield offset, data
        pos = offset + len(data)
    if pos < capacity:
        yield pos, capacity - pos


class _Sequential:
    """``.read(n)`` over a RandomAccess, front to back (what the stream parser wants)."""

    def __init__(self, ra):
        self._ra = ra
        self._pos = 0

    def read(self, n: int) -> bytes:
        n = min(n, self._ra.size - self._pos)
        if n <= 0:
            return b""
        data = self._ra.pread(self._pos, n)
        self._pos += len(data)
        return data


__all__ = ["disk_pieces", "is_stream_optimized"]
