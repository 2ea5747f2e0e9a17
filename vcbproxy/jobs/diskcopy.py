"""Copying one disk, as it was at the snapshot, into a staged VMDK.

The source is a :class:`vcbproxy.vmdk.chain.DiskChain` read through a transport: the
chain's run map says, for every byte of the virtual disk, which layer file holds it (or
that it is zero), so a disk that already had user snapshots comes out as one
consolidated image and unallocated regions are never fetched from the host.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

ZERO_CHUNK = bytes(1 << 20)


@dataclass
class DiskCopyResult:
    capacity: int
    bytes_read: int = 0          # bytes fetched from the host
    bytes_zero: int = 0          # bytes known to be zero (never fetched)
    content_sha256: str = ""     # of the whole virtual disk, zeros included
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)
    # {file name: sha256} of written files whose hash is known without reading them back
    # (a raw flat extent holds the disk byte for byte); the manifest uses them.
    file_sha256: dict[str, str] = field(default_factory=dict)


def _hash_zeros(hasher, length: int) -> None:
    while length > 0:
        n = min(length, len(ZERO_CHUNK))
        hasher.update(memoryview(ZERO_CHUNK)[:n])
        length -= n


def _known_file_hashes(writer, result: DiskCopyResult) -> dict[str, str]:
    """A writer's raw flat extent (``flat_name``) is the disk's content as is: same hash."""
    flat_name = getattr(writer, "flat_name", None)
    return {flat_name: result.content_sha256} if flat_name else {}


def copy_runs(
    runs: Iterable,
    stream_of: Callable[[str, int, int], Iterable[bytes]],
    writer,
    *,
    capacity: int,
    advance: Callable[[int], None] = lambda n: None,
) -> DiskCopyResult:
    """Copy ``runs`` (offset, length, source, source_offset) into ``writer``.

    ``stream_of(source, offset, length)`` yields the bytes of a layer file range. The
    content hash covers zeros too, so it equals ``sha256`` of the raw disk — the value
    tests and ``verify`` compare with the source.
    """
    result = DiskCopyResult(capacity=capacity)
    hasher = hashlib.sha256()
    started = time.monotonic()
    position = 0
    for run in runs:
        if run.offset != position:
            raise ValueError(f"disk map has a gap at {position} (next run at {run.offset})")
        if run.source is None:
            _hash_zeros(hasher, run.length)
            result.bytes_zero += run.length
            advance(run.length)
        else:
            offset = run.offset
            for chunk in stream_of(run.source, run.source_offset, run.length):
                writer.write(offset, chunk)
                hasher.update(chunk)
                offset += len(chunk)
                advance(len(chunk))
            if offset != run.offset + run.length:
                raise ValueError(
                    f"short read from {run.source}: got {offset - run.offset} of {run.length} bytes"
                )
            result.bytes_read += run.length
        position = run.offset + run.length
    if position != capacity:
        raise ValueError(f"disk map covers {position} of {capacity} bytes")
    result.content_sha256 = hasher.hexdigest()
    result.file_sha256 = _known_file_hashes(writer, result)
    result.seconds = time.monotonic() - started
    return result


def copy_grains(
    grains: Iterable[tuple[int, bytes]],
    writer,
    *,
    capacity: int,
    advance: Callable[[int], None] = lambda n: None,
) -> DiskCopyResult:
    """Copy a stream of (offset, data) grains in ascending order — an NFC download —
    into ``writer``; gaps between grains are zeros (hashed, never written)."""
    result = DiskCopyResult(capacity=capacity)
    hasher = hashlib.sha256()
    started = time.monotonic()
    position = 0
    for offset, data in grains:
        if offset < position:
            raise ValueError(f"stream went backwards: grain at {offset} after {position}")
        if offset > position:
            _hash_zeros(hasher, offset - position)
            result.bytes_zero += offset - position
            advance(offset - position)
        data = data[: max(0, capacity - offset)]
        writer.write(offset, data)
        hasher.update(data)
        result.bytes_read += len(data)
        advance(len(data))
        position = offset + len(data)
    if position < capacity:
        _hash_zeros(hasher, capacity - position)
        result.bytes_zero += capacity - position
        advance(capacity - position)
    result.content_sha256 = hasher.hexdigest()
    result.file_sha256 = _known_file_hashes(writer, result)
    result.seconds = time.monotonic() - started
    return result
